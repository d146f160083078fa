-- db:adopt (src/migrate/adopt.ts) marks the log rows an adopted app writes between its
-- adoption and the ledger's installation, with a trigger that stops marking once 0003 has
-- numbered the trail. The ledger is installed by now: the trigger and its function go, so
-- that no trigger but the ledger's runs inside a write. db:adopt also rewrote the log a
-- third full (fillfactor 30), so that 0003's two updates of each row stay on its page (HOT,
-- no index entries); the trail's new pages are filled again. A database that was never adopted
-- has none of these, and nothing here changes it.
DROP TRIGGER IF EXISTS "credit_tx_adoption_mark" ON "public"."CreditTransaction";--> statement-breakpoint
DROP FUNCTION IF EXISTS "drizzle"."adoption_mark"();--> statement-breakpoint
ALTER TABLE "public"."CreditTransaction" RESET (fillfactor);
