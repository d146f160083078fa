-- The sweeper: expires up to max_rows holds past their expiry, earliest first, each with an
-- expire row of its own, and returns those rows. It runs as its caller (SECURITY INVOKER):
-- it can do no more than the caller's own INSERT of those expire rows could, so a role
-- without SELECT and UPDATE on the ledger's tables and INSERT on the trail cannot run it,
-- lock users through it, or read trail rows with it; the app role's grants (the README's)
-- are what it needs. The expire rows it inserts are checked by the triggers like any other.
-- Each user's lock is taken first, as every ledger write takes it; users another session is
-- writing are skipped (that write expires their due holds itself) unless one user is asked
-- for, which waits (as long as lock_timeout allows). After the lock, a hold closed meanwhile
-- is no longer listed, so concurrent sweepers, settlements and voids never close one twice
-- (and credit_tx_hold_close_idx would refuse it). A hold that cannot be expired (a write of
-- its user refused) is reported with a WARNING and skipped: one user's refusal must not stop
-- the sweep for everyone else. Without row_security = off: a policy that hides a hold from
-- the caller leaves it for the user's next write, which expires it as the owner.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_holds_expire"(max_rows integer, only_user uuid DEFAULT NULL)
RETURNS SETOF "public"."CreditTransaction"
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
  h record;
  r "public"."CreditTransaction"%ROWTYPE;
  done integer := 0;
  now_ts timestamptz := clock_timestamp();
  failed_state text;
  failed_message text;
BEGIN
  IF max_rows < 0 THEN
    RAISE EXCEPTION 'max_rows must be 0 or more, not %', max_rows USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- max_rows counts holds expired, not holds looked at: the earliest ones may belong to users
  -- that are busy (skipped), and must not starve the rest.
  FOR h IN SELECT id, user_id FROM "public"."CreditHold"
            WHERE expires_at <= now_ts AND (only_user IS NULL OR user_id = only_user)
            ORDER BY expires_at, id LOOP
    EXIT WHEN done >= max_rows;
    IF only_user IS NULL THEN
      PERFORM 1 FROM "public"."User" WHERE id = h.user_id FOR NO KEY UPDATE SKIP LOCKED;
    ELSE
      PERFORM 1 FROM "public"."User" WHERE id = h.user_id FOR NO KEY UPDATE;
    END IF;
    CONTINUE WHEN NOT FOUND;
    BEGIN
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        SELECT user_id, amount, 'expire', feature_type, id FROM "public"."CreditHold" WHERE id = h.id
        RETURNING * INTO r;
    EXCEPTION WHEN OTHERS THEN
      -- Missing privileges are the caller's to fix, for every hold alike; a serialization
      -- failure or deadlock (class 40) dooms the transaction. Those still stop the sweep.
      IF SQLSTATE = '42501' OR SQLSTATE LIKE '40%' THEN
        RAISE;
      END IF;
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
      RAISE WARNING 'hold % of user % was not expired: % (%)', h.id, h.user_id, failed_message, failed_state;
      r := NULL;
    END;
    CONTINUE WHEN r.id IS NULL;
    RETURN NEXT r;
    done := done + 1;
    r := NULL;
  END LOOP;
END;
$$;
