-- Rule (BC009): a row is only written when the rest of the ledger will apply and guard it:
-- every ledger trigger present, enabled, on its own table, with its own function and events,
-- and plain (no WHEN clause, column list or deferral that could make it skip a row). With
-- credit_tx_apply disabled, say, a row would be recorded but never applied; with
-- credit_hold_guard disabled, an open hold could be deleted and never expire.
-- credit_tx_prepare counts the ones that are not so (`missing`, in the statement that locks
-- the user); every rule returns true or raises, so that it is called as an expression (a
-- fraction of a PERFORM's cost).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_ledger_triggers"(missing bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF missing > 0 THEN
    RAISE EXCEPTION 'the credits ledger is not installed: a ledger trigger is missing, disabled or changed'
      USING ERRCODE = 'BC009', HINT = 'Run the migrations (pnpm db:migrate) and re-enable the triggers; pnpm credits:verify lists what is wrong.';
  END IF;
  RETURN true;
END;
$$;
