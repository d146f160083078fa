-- What a row of each operation does to its balance, declared once: a deduction, a hold or a
-- grant's expiry takes its amount; a grant or a refund adds it; a settlement charges its amount of the hold
-- and gives the rest back (held − amount); a void or an expiry gives the whole hold back.
-- credits:verify keeps its own copy (src/credits/operations.ts), and a test runs every
-- operation through both. NULL for an operation this does not know: a new one must be added
-- here, and the NULL fails the write (balance_after is NOT NULL) until it is.
-- SQL, STABLE (an enum's text is) and without SET, so that PostgreSQL inlines it where it is
-- called. The operations are compared as text arrays: a SQL function's body is parsed when it
-- is created, and an enum literal there would make db:migrate commit the migration that added
-- that value on its own first (a run that fails later would then leave part of it applied).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_balance_effect"(
  operation "public"."operation_type", amount integer, held integer
) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{deduct,hold,expire_grant}'::pg_catalog.text[])
              THEN 0::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{grant,refund,void,expire}'::pg_catalog.text[])
              THEN amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle}'::pg_catalog.text[])
              THEN held::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
         END
$$;
