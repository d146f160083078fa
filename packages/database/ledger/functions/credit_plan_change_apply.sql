-- AFTER INSERT on "CreditPlanChange": the row exists, so it becomes the user's current plan
-- (credit_ledger.user_plan), exactly as the next step of its chain: the first change creates
-- the user's row, every later one moves it from seq − 1. Anything else (two changes of one
-- user in one statement) is refused, and the statement with it. The user's row is touched
-- (updated_at): a credit operation whose snapshot is older than the change then sees its
-- user's row moved, so it reads the plan again under the lock (credit_tx_prepare), or, under
-- REPEATABLE READ, fails to lock it with a serialization error rather than use the old plan.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_change_apply"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."CreditPlanChange"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_change_apply() runs only as the AFTER INSERT trigger of "CreditPlanChange"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.seq = 1 THEN
    INSERT INTO "credit_ledger"."user_plan" (user_id, plan, until, seq, hash)
      VALUES (NEW.user_id, NEW.plan, NEW.until, NEW.seq, NEW.hash)
      ON CONFLICT (user_id) DO NOTHING;
  ELSE
    UPDATE "credit_ledger"."user_plan" SET plan = NEW.plan, until = NEW.until, seq = NEW.seq, hash = NEW.hash
     WHERE user_id = NEW.user_id AND seq = NEW.seq - 1;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'plan change % of user % cannot be applied: another change of this statement took seq %', NEW.id, NEW.user_id, NEW.seq
      USING ERRCODE = 'BC008', HINT = 'Change one user''s plan once per statement.';
  END IF;
  UPDATE "public"."User" SET updated_at = now() WHERE id = NEW.user_id;
  RETURN NULL;
END;
$$;
