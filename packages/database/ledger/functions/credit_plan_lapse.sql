-- Ends a user's time-bound plan that is past its `until`: writes the plan change back to the
-- default plan, with reason 'lapsed' and no actor (credit_plan_change_prepare recognises that
-- row as the lapse itself), and returns the default plan. Called under the user's lock, by
-- the first write that needs the plan after it lapsed (credit_tx_prepare for a deduction or
-- a hold, credit_plan_change_prepare for the next change), so the lapse is written once, in
-- the user's order, and a plan is never used past its end; reads compute it without writing.
-- The row is inserted as the owner: a trigger of another role on "CreditPlanChange", named to
-- fire before the ledger's, would run as the owner and could skip the lapse (RETURN NULL), so
-- none may exist (BC017).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_lapse"(user_id uuid) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  lapsed_to text;
BEGIN
  ok := "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditPlanChange"'::regclass, 1);
  INSERT INTO "public"."CreditPlanChange" (user_id, plan, reason)
    SELECT credit_plan_lapse.user_id, d.plan, 'lapsed'
      FROM "credit_ledger"."credit_plan" d WHERE d.is_default
  RETURNING plan INTO lapsed_to;
  RETURN lapsed_to;
END;
$$;
