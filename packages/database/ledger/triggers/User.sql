-- "User"'s triggers: its balances and head change only through the trail (user_ledger_guard),
-- a new user's balances are explained by opening rows (user_ledger_open marks them due,
-- user_ledger_opening writes them), and a user is not deleted under a row not yet applied.
DROP TRIGGER IF EXISTS "user_ledger_guard" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_guard" BEFORE UPDATE ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_guard"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_open" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_open" BEFORE INSERT ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_open"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_opening" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_opening" AFTER INSERT ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_opening"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_delete" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_delete" BEFORE DELETE ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_delete"();
