-- Gives back the user's holds that are due by `at`, each with an expire row of its own (a
-- statement of its own, applied before the row being written is numbered), and returns the
-- time that row is to be dated with. So no write or read of a user ever sees a hold past its
-- expiry, and none needs a background job to. An expire row expires nothing itself. With the
-- user's lock held (the caller took it), a hold is expired exactly once. `keep` (the hold a
-- settlement or void closes) is left alone: that write is refused as HOLD_EXPIRED, with the
-- whole statement, so an expire row written here would vanish.
-- Due means due at the row's time, which every check of an expiry compares with: the row is
-- dated first and the holds due by then are expired. Writing their expire rows takes time (a
-- user with hundreds of due holds: tens of ms), and the row is dated after them, so it is
-- dated again and the holds due by the new time are expired too, until none is (with the
-- user's lock held, no hold is added meanwhile). The time is a value, not clock_timestamp()
-- in the condition: a volatile call there cannot bound the index scan, which would read
-- every open hold of the user. Returns NULL when there was nothing to expire.
-- Bounded: each expire row costs a full ledger write (about 2 ms), so a user with thousands
-- of due holds would make its next write take seconds, or never finish under a short
-- statement_timeout. Past `max_holds` due at once, the write refuses at once (BC021,
-- HOLDS_EXPIRY_BACKLOG, retryable) before expiring any: it never spends or counts credits
-- that are due back. The package then gives them back in batches, each its own statement
-- (credit_holds_expire), and writes again; the sweeper (credits:expire-holds) does the same.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_expire_due_holds"(user_id uuid, keep uuid, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
  max_holds constant integer := 100;
  h record;
  due integer;
  expired boolean := false;
BEGIN
  LOOP
    SELECT count(*) INTO due FROM (
      SELECT 1 FROM "public"."CreditHold" c
       WHERE c.user_id = credit_expire_due_holds.user_id AND c.expires_at <= at
         AND c.id IS DISTINCT FROM keep
       LIMIT max_holds + 1) d;
    EXIT WHEN due = 0;
    IF due > max_holds THEN
      RAISE EXCEPTION 'user % has more than % holds past their expiry to give back before this write', user_id, max_holds
        USING ERRCODE = 'BC021', DETAIL = json_build_object('userId', user_id, 'limit', max_holds)::text,
              HINT = 'Give them back in batches (expireCreditHolds, pnpm credits:expire-holds), then write again.';
    END IF;
    FOR h IN SELECT c.id, c.amount, c.feature_type FROM "public"."CreditHold" c
              WHERE c.user_id = credit_expire_due_holds.user_id AND c.expires_at <= at
                AND c.id IS DISTINCT FROM keep
              ORDER BY c.expires_at, c.id LOOP
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        VALUES (credit_expire_due_holds.user_id, h.amount, 'expire', h.feature_type, h.id);
    END LOOP;
    expired := true;
    at := date_trunc('milliseconds', clock_timestamp());
  END LOOP;
  RETURN CASE WHEN expired THEN at END;
END;
$$;
