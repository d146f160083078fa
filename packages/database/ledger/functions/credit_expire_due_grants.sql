-- Takes off the balance what remains of the user's grants that are due by `at`, each with an
-- `expire_grant` row of its own (a statement of its own, applied before the row being
-- written is numbered), and returns the time that row is to be dated with; NULL when nothing
-- was due. So no write or read of a user ever spends or counts credits past their expiry,
-- and none needs a background job to. With the user's lock held (the caller took it), a
-- grant expires exactly once. Due means due at the row's time, as for holds
-- (credit_expire_due_holds): the row is dated again after the expiries, until none is due.
-- Also called by credit_tx_apply after a row gave credits back to a grant already past its
-- expiry: those come off again at once.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_expire_due_grants"(user_id uuid, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
  g record;
  expired boolean := false;
BEGIN
  LOOP
    PERFORM 1 FROM "credit_ledger"."credit_grant" c
      WHERE c.user_id = credit_expire_due_grants.user_id AND c.remaining > 0 AND c.expires_at <= at;
    EXIT WHEN NOT FOUND;
    FOR g IN SELECT c.id, c.remaining, c.chat FROM "credit_ledger"."credit_grant" c
              WHERE c.user_id = credit_expire_due_grants.user_id AND c.remaining > 0 AND c.expires_at <= at
              ORDER BY c.expires_at, c.id LOOP
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, allocations)
        VALUES (credit_expire_due_grants.user_id, g.remaining, 'expire_grant',
                CASE WHEN g.chat THEN 'chat_message'::"public"."feature_type" ELSE 'none' END, jsonb_build_object(g.id, g.remaining));
    END LOOP;
    expired := true;
    at := date_trunc('milliseconds', clock_timestamp());
  END LOOP;
  RETURN CASE WHEN expired THEN at END;
END;
$$;
