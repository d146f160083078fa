-- A user is deleted with its trail (ON DELETE CASCADE), but never while a row of it is
-- written and not yet applied: the statement would then apply a deleted row, to a user
-- created again under the same id. Only deletions read the trail here. The cascades delete as
-- the tables' owner, so a trigger of another role on the trail, "CreditHold" or the plan
-- changes would run as the owner: refused first (BC017).
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_delete"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'DELETE' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_delete() runs only as the BEFORE DELETE trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditPlanChange"'::regclass, 1);
  IF EXISTS (SELECT 1 FROM "public"."CreditTransaction"
              WHERE user_id = OLD.id AND seq > greatest(OLD.ledger_seq, 0)) THEN
    RAISE EXCEPTION 'user % has a credit change written and not yet applied: it cannot be deleted by this statement', OLD.id
      USING ERRCODE = 'BC008', HINT = 'Delete the user in a statement of its own.';
  END IF;
  RETURN OLD;
END;
$$;
