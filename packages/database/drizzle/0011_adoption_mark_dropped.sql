-- db:adopt (src/migrate/adopt.ts) marks the log rows an adopted app writes between its
-- adoption and the ledger's installation, with a trigger that stops marking once 0003 has
-- numbered the trail. The ledger is installed by now: the trigger and its function go, so
-- that no trigger but the ledger's runs inside a write. A database that was never adopted
-- has neither.
DROP TRIGGER IF EXISTS "credit_tx_adoption_mark" ON "public"."CreditTransaction";--> statement-breakpoint
DROP FUNCTION IF EXISTS "drizzle"."adoption_mark"();
