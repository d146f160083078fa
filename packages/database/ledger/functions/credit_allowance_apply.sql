-- For a balance read (getCreditBalance): grants the user's allowance of the current period if
-- it is due, as the user's next write would, so that a read in a new period shows it. Any
-- role may call it, for any user: it can only grant what is due, once (credit_allowance_grant),
-- through trail rows the ledger checks like any other. It runs as the owner, since only the
-- ledger records which period was granted. Takes the user's lock, as every write does.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_allowance_apply"(user_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
AS $$
BEGIN
  PERFORM 1 FROM "public"."User" u WHERE u.id = credit_allowance_apply.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  RETURN "credit_ledger"."credit_allowance_grant"(user_id, date_trunc('milliseconds', clock_timestamp()));
END;
$$;
