-- AFTER INSERT on the trail: the row exists, so apply it to "User", unless the user's trail
-- moved on since the row was numbered, or the user is not the one it was numbered against (a
-- user deleted and created again under the same id, still waiting for its opening rows,
-- takes only those); then list a hold in "CreditHold", or remove the hold a row closes.
-- user_ledger_guard recognises the UPDATE on line 3 of this body on the call stack (one line,
-- so that the guard can compare it whole) and lets nothing else move a balance: change it
-- and its copy in user_ledger_guard together.
-- No lock_timeout of its own (a SET clause costs every write a few µs): the rows it writes
-- are locked already, the user's and (for a row that closes a hold) the hold's, by
-- credit_tx_prepare, whose waits are bounded.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_apply"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = 'chat_message' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = 'chat_message' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = CASE WHEN ledger_seq = -2 THEN -1 ELSE NEW.seq END, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id AND (ledger_seq = NEW.seq - 1 OR (ledger_seq < 0 AND NEW.seq = (CASE WHEN ledger_seq = -1 AND free_credits > 0 AND free_chat_messages > 0 THEN 2 ELSE 1 END) AND NEW.balance_after = (CASE WHEN NEW.feature_type = 'chat_message' THEN free_chat_messages ELSE free_credits END)));
  IF NOT FOUND THEN
    -- Two rows of one user in one statement were both numbered before either was applied
    -- (credit_tx_user_seq_idx refuses the second first, where it exists), or the user is gone.
    RAISE EXCEPTION 'row % of user % cannot be applied: the user is gone, or another row of this statement took seq %', NEW.id, NEW.user_id, NEW.seq
      USING ERRCODE = 'BC008', HINT = 'Write one row per user per statement.';
  END IF;
  -- Checked after the UPDATE, so that the frames the guard compares stay as they are; an
  -- error here undoes the UPDATE with the statement.
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger"."credit_tx_is_trail"(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_apply() runs only as the AFTER INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.operation = 'hold' THEN
    INSERT INTO "public"."CreditHold" (id, user_id, amount, feature_type, expires_at, created_at, covered_by_plan)
      VALUES (NEW.id, NEW.user_id, NEW.amount, NEW.feature_type, NEW.hold_expires_at, NEW.created_at, NEW.covered_by_plan);
  ELSIF NEW.hold_id IS NOT NULL THEN
    DELETE FROM "public"."CreditHold" WHERE id = NEW.hold_id;
  END IF;
  -- The grants: a row with a source creates one (what it adds: a grant's or refund's amount,
  -- a closed hold's give-back); a row with allocations takes from or gives back to the ones
  -- it names. Credits given back to a grant already past its expiry come off again at once,
  -- with the expire_grant rows of credit_expire_due_grants.
  IF NEW.source IS NOT NULL THEN
    INSERT INTO "credit_ledger"."credit_grant" (id, user_id, chat, source, amount, remaining, expires_at, created_at, created_seq)
      SELECT NEW.id, NEW.user_id, NEW.feature_type = 'chat_message', NEW.source, a.amount, a.amount,
             NEW.grant_expires_at, NEW.created_at, NEW.seq
        FROM (SELECT CASE WHEN NEW.operation = 'settle'
                          THEN (SELECT h.amount FROM "public"."CreditTransaction" h WHERE h.id = NEW.hold_id) - NEW.amount
                          ELSE NEW.amount END AS amount) a;
  ELSIF NEW.allocations IS NOT NULL THEN
    UPDATE "credit_ledger"."credit_grant" c
       SET remaining = c.remaining + CASE WHEN NEW.operation IN ('deduct', 'hold', 'expire_grant')
                                          THEN -(a.value::integer) ELSE a.value::integer END
      FROM jsonb_each_text(NEW.allocations) a
     WHERE c.id = a.key::uuid AND c.user_id = NEW.user_id;
    IF NEW.operation NOT IN ('deduct', 'hold', 'expire_grant')
       AND EXISTS (SELECT 1 FROM "credit_ledger"."credit_grant" c
                    WHERE c.user_id = NEW.user_id AND c.id::text IN (SELECT jsonb_object_keys(NEW.allocations))
                      AND c.remaining > 0 AND c.expires_at <= NEW.created_at) THEN
      PERFORM "credit_ledger"."credit_expire_due_grants"(NEW.user_id, NEW.created_at);
    END IF;
  END IF;
  RETURN NULL;
END;
$$;
