-- Rule (BC016): a hold expires after it is taken and within 24 hours of it. Its expiry was
-- computed when the INSERT started, so one that waited for the user's lock longer than the
-- hold was to last is refused rather than taken already due. 24 hours, not '1 day': a
-- timestamptz plus a day is a calendar day in the session's TimeZone (25 hours across a DST
-- change), which the inserter chooses.
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_expiry"(hold_expires_at timestamptz, at timestamptz) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN hold_expires_at OPERATOR(pg_catalog.<=) at
    THEN "credit_ledger"."credit_refuse"('BC016',
      pg_catalog.format('the hold would have expired at %s before it was taken at %s', hold_expires_at, at),
      pg_catalog.json_build_object('field', 'expiresInMs',
        'reason', 'had passed before the hold was taken (the write waited longer than that for the user''s lock); use a longer one')::pg_catalog.text,
      NULL)
    WHEN hold_expires_at OPERATOR(pg_catalog.>) (at OPERATOR(pg_catalog.+) '24 hours 1 minute'::pg_catalog.interval)
    THEN "credit_ledger"."credit_refuse"('BC016',
      pg_catalog.format('a hold expires within 24 hours of being taken, not at %s', hold_expires_at),
      pg_catalog.json_build_object('field', 'expiresInMs', 'reason', 'must be within 24 hours')::pg_catalog.text,
      NULL)
    ELSE true END
$$;
