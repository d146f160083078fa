-- AFTER INSERT, UPDATE or DELETE on credit_ledger.credit_plan: records the change in
-- credit_plan_audit, with the roles that made it. A plan's worth (unlimited, and the
-- allowances and caps later columns give it) is money: its every change is kept.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_audit"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"credit_ledger"."credit_plan"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_audit() runs only as the AFTER trigger of credit_ledger.credit_plan'
      USING ERRCODE = 'BC010';
  END IF;
  INSERT INTO "credit_ledger"."credit_plan_audit" (changed_at, session_role, effective_role, operation, old_row, new_row)
    VALUES (clock_timestamp(), session_user, current_user, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
  RETURN NULL;
END;
$$;
