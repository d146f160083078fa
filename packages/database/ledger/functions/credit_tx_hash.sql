-- The hash of a trail row: sha256 over the previous row's hash and this row's fields, as
-- jsonb text (deterministic: jsonb normalises key order and number spelling) with the times
-- as epoch milliseconds (their text form would depend on the session's TimeZone and
-- DateStyle). The empty string stands for "no previous row". `credits:verify` recomputes it
-- with its own copy of this formula, so replacing this function cannot hide an edit.
-- No SET clause, so that PostgreSQL inlines it into the trigger (a function with one costs a
-- call per row); instead every name in it is qualified, so that no caller's search_path can
-- change what it computes. `extension` holds the columns added after the hold columns, with
-- the NULL ones left out (jsonb_strip_nulls): a row with none of them set hashes as it did
-- before they existed, so earlier rows verify unchanged, and a later column is one more key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_hash"(
  prev text, id uuid, user_id uuid, seq bigint, operation "public"."operation_type",
  feature_type "public"."feature_type", amount integer, balance_after integer,
  created_at timestamptz, idempotency_key text, refund_of uuid, metadata jsonb,
  hold_id uuid, hold_expires_at timestamptz, extension jsonb
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
    coalesce(prev, '') OPERATOR(pg_catalog.||) ((pg_catalog.jsonb_build_array(
      id, user_id, seq, operation::pg_catalog.text, feature_type::pg_catalog.text, amount,
      balance_after, (extract(epoch FROM created_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,
      idempotency_key, refund_of, metadata
    ) OPERATOR(pg_catalog.||) CASE WHEN hold_id IS NULL AND hold_expires_at IS NULL THEN '[]'::pg_catalog.jsonb
      ELSE pg_catalog.jsonb_build_array(hold_id,
             (extract(epoch FROM hold_expires_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8) END)
    OPERATOR(pg_catalog.||) CASE WHEN extension IS NULL OR extension OPERATOR(pg_catalog.=) '{}'::pg_catalog.jsonb
      THEN '[]'::pg_catalog.jsonb ELSE pg_catalog.jsonb_build_array(extension) END
    )::pg_catalog.text, 'UTF8')), 'hex')
$$;
