-- Limits on spending, as data the rules read rather than literals inside them: one row per
-- feature and period caps what a user may spend on that feature in one period (a UTC day
-- from midnight). Only the owner writes them (no grant to any other role: privileges.sql), in a
-- migration, so a change of a limit is reviewed and recorded like a change of a rule. It ships
-- empty: which feature to cap, and by how much, is a product decision. Example, in a
-- migration: INSERT INTO credit_ledger.credit_limit VALUES ('document_generation', 'day', 5);
-- Created once: a later change of its columns is an ALTER TABLE the migration's author writes.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_limit" (
  feature_type "public"."feature_type" NOT NULL,
  period text NOT NULL CONSTRAINT credit_limit_period CHECK (period = 'day'),
  max_amount integer NOT NULL CONSTRAINT credit_limit_max_amount_positive CHECK (max_amount > 0),
  PRIMARY KEY (feature_type, period)
);
--> statement-breakpoint
-- Caps per plan (migration 0016): a row with a plan caps that plan's users only, one without
-- caps every plan; and a period of a UTC day, an ISO week (from Monday) or a calendar month.
-- Each user's use of a feature must stay within every row that applies to it. Example, in a
-- migration: INSERT INTO credit_ledger.credit_limit (feature_type, period, max_amount, plan)
-- VALUES ('document_generation', 'month', 30, 'free');
-- No foreign key onto the plans: a cap that names no plan there applies to nobody, and a plan
-- can be renamed or removed without first removing its caps.
ALTER TABLE "credit_ledger"."credit_limit" ADD COLUMN IF NOT EXISTS plan text;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_limit" DROP CONSTRAINT IF EXISTS credit_limit_pkey;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_limit" DROP CONSTRAINT IF EXISTS credit_limit_period;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_limit" ADD CONSTRAINT credit_limit_period CHECK (period IN ('day', 'week', 'month'));
--> statement-breakpoint
-- One cap per plan (or every plan), feature and period; it serves the rule's lookup by feature.
CREATE UNIQUE INDEX IF NOT EXISTS credit_limit_feature_plan_period ON "credit_ledger"."credit_limit" (feature_type, coalesce(plan, ''), period);
