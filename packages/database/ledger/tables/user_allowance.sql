-- The last period each user was granted its plan's allowance in: credit_allowance_grant grants
-- a period's allowance only to a user whose row says an earlier period (or has none), and
-- moves the row in the same statement, under the user's lock, so each period's allowance is
-- granted exactly once. Only the ledger writes it (no grant to any other role): no role can
-- mark a period granted and so skip its allowance.
CREATE TABLE IF NOT EXISTS "credit_ledger"."user_allowance" (
  user_id uuid PRIMARY KEY REFERENCES "public"."User" (id) ON DELETE CASCADE,
  period_start timestamptz(3) NOT NULL,
  plan text NOT NULL
);
