-- AFTER INSERT on "User": writes the new user's opening rows, one grant per non-zero balance.
-- First, the row as it was stored must still call for the opening rows user_ledger_open
-- counted. A BEFORE INSERT trigger that runs after user_ledger_open (one of a role with the
-- TRIGGER privilege, named to sort after it) could otherwise set ledger_seq to 0 and create a
-- user whose balances no row explains; no opening row would then be written, so
-- credit_tx_prepare's check of foreign triggers would never run. The check reads the stored
-- row, so it holds whatever trigger did it.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_opening"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_opening() runs only as the AFTER INSERT trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.ledger_seq IS DISTINCT FROM -((NEW.free_credits <> 0)::int + (NEW.free_chat_messages <> 0)::int)
     OR NEW.ledger_hash IS NOT NULL THEN
    SELECT string_agg(format('%I on %s (function %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc), ', ' ORDER BY t.tgname)
      INTO foreign_list
      FROM pg_trigger t
     WHERE t.tgrelid = TG_RELID AND NOT t.tgisinternal AND t.tgtype & 4 <> 0 AND t.tgname <> 'user_ledger_open'
       AND t.tgname <> 'user_ledger_opening';
    RAISE EXCEPTION 'a trigger that is not the ledger''s changed the head of user % after user_ledger_open set it: %', NEW.id, coalesce(foreign_list, '(not found)')
      USING ERRCODE = 'BC017', DETAIL = json_build_object('triggers', coalesce(foreign_list, '(not found)'))::text,
            HINT = 'Its function could create a user whose balances no row explains. Drop the trigger.';
  END IF;
  -- The opening rows are inserted as the owner: a trigger of another role on the trail, named
  -- to fire before the ledger's own, would run as the owner and could skip them (RETURN
  -- NULL) before credit_tx_prepare's census ever ran. So the census comes first (BC017).
  IF NEW.free_credits > 0 OR NEW.free_chat_messages > 0 THEN
    PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
  END IF;
  -- Read the row as it is now: the creator may have written the opening rows already in
  -- this statement (credit_tx_prepare accepts only the exact ones), or deleted the user.
  IF NEW.free_credits > 0 AND (SELECT ledger_seq FROM "public"."User" WHERE id = NEW.id)
       = (CASE WHEN NEW.free_chat_messages > 0 THEN -2 ELSE -1 END) THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
      VALUES (NEW.id, NEW.free_credits, 'grant', 'none', '{"reason": "opening_balance"}');
  END IF;
  IF NEW.free_chat_messages > 0 AND (SELECT ledger_seq FROM "public"."User" WHERE id = NEW.id) = -1 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
      VALUES (NEW.id, NEW.free_chat_messages, 'grant', 'chat_message', '{"reason": "opening_balance"}');
  END IF;
  RETURN NULL;
END;
$$;
