-- A user's balances and trail head change only to exactly what its next trail row says, and
-- that row must already be written: so no UPDATE, from anyone, changes a balance without
-- its row. Its id never changes either, since a moved id could take the trail away from the
-- balances (delete "the old user's" rows, then move the id back).
--
-- The proof is that the update is credit_tx_apply's own, fired as the trail's AFTER INSERT
-- trigger (it checks that itself) for a row that was really inserted: then it is that row's
-- by construction, and must still be exactly the next step of the head. Nothing else may
-- move a balance or the head, whatever rows exist: an UPDATE that merely matched an existing
-- row could run before that row's own apply and let its user be deleted and created again
-- under the same id, for the row to land on the new one. The call stack (PG_CONTEXT) is
-- built by the server: a session can name no function credit_ledger.credit_tx_apply() but ours
-- (only the owner can create in that schema), cannot call ours from a trigger of its
-- own (EXECUTE is revoked from PUBLIC; the owner's attempt fails in credit_tx_apply), and a
-- statement of its own that merely starts with the same text cannot continue with the `"`
-- that ends it here. Reading no row also keeps operations on different users from failing
-- each other under SERIALIZABLE (a read of the trail's index would lock pages their rows
-- share). The one cost: the stack is read in English, so a server with translated messages
-- (lc_messages) refuses ledger writes with BC011 until it is set to English.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_guard"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  expected bigint;
  stack text;
  apply_frames constant text := 'SQL statement "UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = ''chat_message'' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = ''chat_message'' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = CASE WHEN ledger_seq = -2 THEN -1 ELSE NEW.seq END, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id AND (ledger_seq = NEW.seq - 1 OR (ledger_seq < 0 AND NEW.seq = (CASE WHEN ledger_seq = -1 AND free_credits > 0 AND free_chat_messages > 0 THEN 2 ELSE 1 END) AND NEW.balance_after = (CASE WHEN NEW.feature_type = ''chat_message'' THEN free_chat_messages ELSE free_credits END)))"'
    || E'\nPL/pgSQL function credit_ledger.credit_tx_apply() line 3 at SQL statement';
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'UPDATE' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_guard() runs only as the BEFORE UPDATE trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.id IS DISTINCT FROM OLD.id THEN
    RAISE EXCEPTION 'the id of "User" % never changes: its credit trail is keyed by it', OLD.id
      USING ERRCODE = 'BC006';
  END IF;
  IF NEW.free_credits IS NOT DISTINCT FROM OLD.free_credits
     AND NEW.free_chat_messages IS NOT DISTINCT FROM OLD.free_chat_messages
     AND NEW.ledger_seq IS NOT DISTINCT FROM OLD.ledger_seq
     AND NEW.ledger_hash IS NOT DISTINCT FROM OLD.ledger_hash THEN
    RETURN NEW;
  END IF;

  -- The one next step of the head: seq + 1; while the opening rows are due, -2 → -1 → the
  -- last opening row's seq, with the balances as they are (an opening row states them).
  expected := CASE WHEN OLD.ledger_seq >= 0 THEN OLD.ledger_seq + 1
                   WHEN OLD.ledger_seq = -1 AND OLD.free_credits > 0 AND OLD.free_chat_messages > 0 THEN 2
                   ELSE 1 END;
  IF NEW.ledger_seq IS DISTINCT FROM (CASE WHEN OLD.ledger_seq = -2 THEN -1 ELSE expected END)
     OR (OLD.ledger_seq < 0 AND (NEW.free_credits IS DISTINCT FROM OLD.free_credits
                                 OR NEW.free_chat_messages IS DISTINCT FROM OLD.free_chat_messages)) THEN
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;

  GET DIAGNOSTICS stack = PG_CONTEXT;
  -- The frames under this one's: credit_tx_apply's UPDATE, then credit_tx_apply itself, then
  -- the end of the stack or the next frame.
  IF substr(stack, strpos(stack, E'\n') + 1, length(apply_frames) + 1) NOT IN (apply_frames, apply_frames || E'\n') THEN
    -- On a server whose messages are translated the stack cannot be read; say so, rather
    -- than refuse every write as if it were an attack.
    IF stack NOT LIKE 'PL/pgSQL function credit_ledger.user_ledger_guard() line % at GET DIAGNOSTICS%' THEN
      RAISE EXCEPTION 'the credits ledger reads the call stack in English, and this server''s messages are not (lc_messages = %)', current_setting('lc_messages')
        USING ERRCODE = 'BC011', HINT = 'Set lc_messages to C or an English locale for this database (ALTER DATABASE … SET lc_messages = ''C'', as a superuser).';
    END IF;
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;
  RETURN NEW;
END;
$$;
