-- Plans: a user's plan is ledger data, changed only through "CreditPlanChange" (append-only,
-- hash-chained per user, written by setUserPlan or by the ledger when a time-bound plan
-- lapses), and a deduction or hold on an unlimited plan is still recorded: covered_by_plan
-- names the plan that covered it, and the row moves no balance. `actor` says who made a
-- change. The plans, the users' current plans and the triggers are the ledger's sources,
-- installed by the next migration (ledger/tables/credit_plan.sql, user_plan.sql,
-- ledger/triggers/CreditPlanChange.sql).
--
-- drizzle-kit generated this from src/schema.ts. The new columns are nullable, without a
-- default: adding them rewrites no row and takes its lock only for a moment.

CREATE TABLE "CreditPlanChange" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" uuid NOT NULL,
	"seq" bigint NOT NULL,
	"from_plan" text NOT NULL,
	"plan" text NOT NULL,
	"until" timestamp (3) with time zone,
	"reason" text,
	"actor" text,
	"idempotency_key" text,
	"trail_seq" bigint NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"hash" text NOT NULL,
	CONSTRAINT "credit_plan_change_until_after_change" CHECK ("CreditPlanChange"."until" is null or "CreditPlanChange"."until" > "CreditPlanChange"."created_at")
);
--> statement-breakpoint
ALTER TABLE "CreditHold" ADD COLUMN "covered_by_plan" text;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "covered_by_plan" text;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "actor" text;--> statement-breakpoint
ALTER TABLE "CreditPlanChange" ADD CONSTRAINT "CreditPlanChange_user_id_User_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."User"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "credit_plan_change_user_seq_idx" ON "CreditPlanChange" USING btree ("user_id","seq");--> statement-breakpoint
CREATE UNIQUE INDEX "credit_plan_change_user_idempotency_key_idx" ON "CreditPlanChange" USING btree ("user_id","idempotency_key") WHERE "CreditPlanChange"."idempotency_key" is not null;