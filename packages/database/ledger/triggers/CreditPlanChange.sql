-- "CreditPlanChange"'s triggers: credit_plan_change_prepare numbers, checks and hashes a
-- change under the user's lock, credit_plan_change_apply makes it the user's current plan,
-- and the chain is append-only (rows leave it only with their user), like the trail.
DROP TRIGGER IF EXISTS "credit_plan_change_prepare" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_prepare" BEFORE INSERT ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_change_prepare"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_apply" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_apply" AFTER INSERT ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_change_apply"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_append_only" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_append_only" BEFORE UPDATE OR DELETE ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_no_truncate" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_no_truncate" BEFORE TRUNCATE ON "public"."CreditPlanChange"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
