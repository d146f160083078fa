-- Every change of a plan is recorded (credit_plan_audit).
DROP TRIGGER IF EXISTS "credit_plan_audit" ON "credit_ledger"."credit_plan";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_audit" AFTER INSERT OR UPDATE OR DELETE ON "credit_ledger"."credit_plan"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_audit"();
