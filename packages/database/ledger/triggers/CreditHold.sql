-- "CreditHold" lists exactly the trail's open holds: credit_hold_guard checks every change
-- against the trail, and TRUNCATE is refused.
DROP TRIGGER IF EXISTS "credit_hold_guard" ON "public"."CreditHold";
--> statement-breakpoint
CREATE TRIGGER "credit_hold_guard" BEFORE INSERT OR UPDATE OR DELETE ON "public"."CreditHold"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_hold_guard"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_hold_no_truncate" ON "public"."CreditHold";
--> statement-breakpoint
CREATE TRIGGER "credit_hold_no_truncate" BEFORE TRUNCATE ON "public"."CreditHold"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_hold_guard"();
