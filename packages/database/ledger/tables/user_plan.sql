-- Each user's current plan: the last row of its plan changes ("CreditPlanChange"), kept here
-- by credit_plan_change_apply so that every ledger write reads it under the user's lock with
-- one primary-key lookup, and so that credits:verify can tell a chain cut short (seq and hash
-- are the chain's head, as "User".ledger_seq and ledger_hash are the trail's). A user without
-- a row is on the default plan. Only the ledger writes it (no grant to any other role).
CREATE TABLE IF NOT EXISTS "credit_ledger"."user_plan" (
  user_id uuid PRIMARY KEY REFERENCES "public"."User" (id) ON DELETE CASCADE,
  plan text NOT NULL REFERENCES "credit_ledger"."credit_plan" (plan),
  until timestamptz(3),
  seq bigint NOT NULL,
  hash text NOT NULL
);
