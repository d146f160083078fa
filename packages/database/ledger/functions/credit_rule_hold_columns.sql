-- Rule (BC016): the hold columns belong to hold rows (hold_expires_at) and to the rows that
-- close one (hold_id: settle, void, expire), and to no other.
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why); the operation
-- is compared as text, as in credit_balance_effect.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_columns"(
  operation "public"."operation_type", hold_id uuid, hold_expires_at timestamptz
) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN (hold_expires_at IS NOT NULL) OPERATOR(pg_catalog.<>) (operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{hold}'::pg_catalog.text[]))
      OR (hold_id IS NOT NULL) OPERATOR(pg_catalog.<>) (operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle,void,expire}'::pg_catalog.text[]))
    THEN "credit_ledger"."credit_refuse"('BC016',
      'hold_expires_at is set on hold rows only, and hold_id on settle, void and expire rows only',
      pg_catalog.json_build_object('field',
        CASE WHEN hold_id IS NOT NULL OR operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle,void,expire}'::pg_catalog.text[])
             THEN 'holdId' ELSE 'expiresInMs' END,
        'reason', 'is set on hold rows (expiry) or closing rows (hold id) only')::pg_catalog.text,
      NULL)
    ELSE true END
$$;
