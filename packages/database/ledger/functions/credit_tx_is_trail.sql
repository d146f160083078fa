-- Whether a relation is the trail: the table itself, or a partition of it when it is
-- partitioned (docs/scaling). Rows of any other table that inherits from it (an owner's DDL)
-- are never taken for trail rows, nor is a trigger function of the ledger attached to one.
-- Never NULL (pg_partition_root is NULL outside a partition tree): a NULL would make every
-- `IF NOT …` below skip its refusal. Qualified and without SET, like credit_tx_hash, so that
-- it is inlined.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_is_trail"(relation regclass) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT relation OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass
      OR coalesce(pg_catalog.pg_partition_root(relation)
                    OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass, false)
$$;
