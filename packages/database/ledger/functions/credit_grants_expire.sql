-- The grants' sweeper: takes off the balances what remains of up to max_rows grants past
-- their expiry, earliest first, each with an expire_grant row of its own, and returns those
-- rows. Like credit_holds_expire (which says why at length): it runs as its caller (SECURITY
-- INVOKER), so it can do no more than the caller's own INSERT of those rows; each user's lock
-- is taken first, busy users are skipped unless one user is asked for; a grant that cannot be
-- expired is reported with a WARNING and skipped. Correctness does not depend on it: every
-- write and balance read of a user expires its due grants first.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_grants_expire"(max_rows integer, only_user uuid DEFAULT NULL)
RETURNS SETOF "public"."CreditTransaction"
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
  g record;
  r "public"."CreditTransaction"%ROWTYPE;
  done integer := 0;
  now_ts timestamptz := clock_timestamp();
  failed_state text;
  failed_message text;
BEGIN
  IF max_rows < 0 THEN
    RAISE EXCEPTION 'max_rows must be 0 or more, not %', max_rows USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR g IN SELECT id, user_id FROM "credit_ledger"."credit_grant"
            WHERE remaining > 0 AND expires_at <= now_ts AND (only_user IS NULL OR user_id = only_user)
            ORDER BY expires_at, id LOOP
    EXIT WHEN done >= max_rows;
    IF only_user IS NULL THEN
      PERFORM 1 FROM "public"."User" WHERE id = g.user_id FOR NO KEY UPDATE SKIP LOCKED;
    ELSE
      PERFORM 1 FROM "public"."User" WHERE id = g.user_id FOR NO KEY UPDATE;
    END IF;
    CONTINUE WHEN NOT FOUND;
    BEGIN
      -- Read again under the lock: a write of the user may have expired it meanwhile.
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, allocations)
        SELECT c.user_id, c.remaining, 'expire_grant', CASE WHEN c.chat THEN 'chat_message'::"public"."feature_type" ELSE 'none' END,
               jsonb_build_object(c.id, c.remaining)
          FROM "credit_ledger"."credit_grant" c WHERE c.id = g.id AND c.remaining > 0
        RETURNING * INTO r;
    EXCEPTION WHEN OTHERS THEN
      IF SQLSTATE = '42501' OR SQLSTATE LIKE '40%' THEN
        RAISE;
      END IF;
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
      RAISE WARNING 'grant % of user % was not expired: % (%)', g.id, g.user_id, failed_message, failed_state;
      r := NULL;
    END;
    CONTINUE WHEN r.id IS NULL;
    RETURN NEXT r;
    done := done + 1;
    r := NULL;
  END LOOP;
END;
$$;
