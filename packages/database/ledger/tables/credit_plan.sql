-- The plans, as data the ledger reads rather than literals in its rules: whether a plan is
-- unlimited (its users' deductions and holds are recorded and move no balance), and which
-- plan a user is on before any change and falls back to when a time-bound plan lapses (the
-- one default). Only the owner writes them (privileges.sql), in a migration or an owner-only
-- command, and every change is recorded in credit_plan_audit by credit_plan_audit(): a
-- change of what a plan is worth is reviewed and kept like a change of a rule. Every role
-- may read them (an app shows its plans); a user's plan is credit_ledger.user_plan.
-- Created once: a later change of its columns is an ALTER TABLE the migration's author
-- writes. The three plans of the app the ledger was built for ship with it; the INSERT adds
-- whichever is missing and changes none that exists.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_plan" (
  plan text PRIMARY KEY CONSTRAINT credit_plan_name CHECK (plan ~ '^[a-z][a-z0-9_]{0,39}$'),
  unlimited boolean NOT NULL DEFAULT false,
  is_default boolean NOT NULL DEFAULT false,
  description text
);
--> statement-breakpoint
-- At most one default plan: the one a user without a plan change is on.
CREATE UNIQUE INDEX IF NOT EXISTS credit_plan_one_default ON "credit_ledger"."credit_plan" (is_default) WHERE is_default;
--> statement-breakpoint
INSERT INTO "credit_ledger"."credit_plan" (plan, unlimited, is_default, description) VALUES
  ('free', false, true, 'Spends its credits and chat messages'),
  ('paid', true, false, 'Unlimited: usage is recorded, no balance moves'),
  ('demo', true, false, 'Unlimited, for demonstrations: usage is recorded, no balance moves')
  ON CONFLICT (plan) DO NOTHING;
--> statement-breakpoint
-- Every change of credit_ledger.credit_plan: who (the session's role and the role in effect),
-- when, and the row before and after.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_plan_audit" (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  changed_at timestamptz(3) NOT NULL,
  session_role text NOT NULL,
  effective_role text NOT NULL,
  operation text NOT NULL,
  old_row jsonb,
  new_row jsonb
);
