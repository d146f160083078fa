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
  RETURN NULL;
END;
$$;
