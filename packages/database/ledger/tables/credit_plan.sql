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
--> statement-breakpoint
-- Allowances (migration 0017): each period of `allowance_period` (a UTC month, week, day,
-- hour, minute or second, from its start), a user on the plan is granted `allowance_credits`
-- credits and `allowance_chat_messages` chat messages, source 'allowance', expiring at the
-- period's end (unused allowance does not roll over), at its first write or balance read in
-- the period (credit_allowance_grant). NULL: no allowance. Example, in a migration:
-- UPDATE credit_ledger.credit_plan SET allowance_credits = 10, allowance_period = 'month' WHERE plan = 'free';
ALTER TABLE "credit_ledger"."credit_plan" ADD COLUMN IF NOT EXISTS allowance_credits integer;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_plan" ADD COLUMN IF NOT EXISTS allowance_chat_messages integer;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_plan" ADD COLUMN IF NOT EXISTS allowance_period text;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_plan" DROP CONSTRAINT IF EXISTS credit_plan_allowance;
--> statement-breakpoint
ALTER TABLE "credit_ledger"."credit_plan" ADD CONSTRAINT credit_plan_allowance CHECK (
  coalesce(allowance_credits, 1) > 0 AND coalesce(allowance_chat_messages, 1) > 0
  AND (allowance_period IN ('month', 'week', 'day', 'hour', 'minute', 'second')
       OR (allowance_period IS NULL AND allowance_credits IS NULL AND allowance_chat_messages IS NULL)));
