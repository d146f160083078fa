-- The trail's triggers. PostgreSQL fires triggers of one timing in the order of their names:
-- credit_tx_prepare numbers and hashes a row before any other BEFORE INSERT trigger the owner
-- adds with a later name sees it.
DROP TRIGGER IF EXISTS "credit_tx_prepare" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_prepare" BEFORE INSERT ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_prepare"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_apply" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_apply" AFTER INSERT ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_apply"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_append_only" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_append_only" BEFORE UPDATE OR DELETE ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_no_truncate" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_no_truncate" BEFORE TRUNCATE ON "public"."CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
