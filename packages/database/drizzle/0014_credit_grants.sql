-- Credit grants: every credit a balance holds came from a grant with a source (opening,
-- allowance, purchase, promotional, support…) and maybe an expiry. A grant of credits is for
-- no feature ('none'); what remains of a grant past its expiry comes off the balance with an
-- 'expire_grant' row; `allocations` says which grants a row took from or gave back to. The
-- grants themselves (credit_ledger.credit_grant), the rules and the conversion of existing
-- balances are the next migration's, which uses these enum values (PostgreSQL refuses a new
-- enum value in the transaction that adds it).
--
-- drizzle-kit generated this from src/schema.ts. The new columns are nullable, without a
-- default: adding them rewrites no row.

CREATE TYPE "public"."credit_source" AS ENUM('opening', 'allowance', 'purchase', 'promotional', 'support', 'refund', 'carried_over');--> statement-breakpoint
ALTER TYPE "public"."feature_type" ADD VALUE 'none';--> statement-breakpoint
ALTER TYPE "public"."operation_type" ADD VALUE 'expire_grant';--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "source" "credit_source";--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "grant_expires_at" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "allocations" jsonb;