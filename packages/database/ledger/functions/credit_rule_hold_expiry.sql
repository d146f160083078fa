-- Rule (BC016): a hold expires after it is taken and within 24 hours of it. Its expiry was
-- computed when the INSERT started, so one that waited for the user's lock longer than the
-- hold was to last is refused rather than taken already due. 24 hours, not '1 day': a
-- timestamptz plus a day is a calendar day in the session's TimeZone (25 hours across a DST
-- change), which the inserter chooses.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_expiry"(hold_expires_at timestamptz, at timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF hold_expires_at <= at THEN
    RAISE EXCEPTION 'the hold would have expired at % before it was taken at %', hold_expires_at, at
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs',
        'reason', 'had passed before the hold was taken (the write waited longer than that for the user''s lock); use a longer one')::text;
  END IF;
  IF hold_expires_at > at + interval '24 hours 1 minute' THEN
    RAISE EXCEPTION 'a hold expires within 24 hours of being taken, not at %', hold_expires_at
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs', 'reason', 'must be within 24 hours')::text;
  END IF;
  RETURN true;
END;
$$;
