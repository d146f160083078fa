-- The grants each balance is made of: the trail says when each was created (the row with the
-- same id, which has a `source`), what each row took from it or gave back to it
-- (`allocations`), and when what remained of it expired (an `expire_grant` row); this table
-- keeps what remains of each, so that a deduction finds the grants to take from without
-- reading the trail. At every commit a user's balance is the sum of `remaining` over its
-- grants of that balance (`chat`: free_chat_messages, else free_credits), which credits:verify
-- checks along with each grant's remaining against the trail. Only the ledger writes it (no
-- grant to any other role); every role may read it (a balance read lists the live grants).
-- A balance from before credit sources existed is one grant of source 'carried_over', whose
-- id is its own (no trail row created it) and whose `created_seq` is the trail head it was
-- carried over at.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_grant" (
  id uuid PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES "public"."User" (id) ON DELETE CASCADE,
  chat boolean NOT NULL,
  source "public"."credit_source" NOT NULL,
  amount integer NOT NULL CONSTRAINT credit_grant_amount_positive CHECK (amount > 0),
  -- Never below zero, never above what was granted: a row gives back only what one took.
  remaining integer NOT NULL CONSTRAINT credit_grant_remaining_range CHECK (remaining >= 0 AND remaining <= amount),
  expires_at timestamptz(3),
  created_at timestamptz(3) NOT NULL,
  created_seq bigint NOT NULL
);
--> statement-breakpoint
-- Serves spending: a user's live grants of one balance, soonest-expiring first (never-expiring
-- last, NULLS LAST), then oldest; and the user's next expiry, read by every write.
CREATE INDEX IF NOT EXISTS credit_grant_spend_idx ON "credit_ledger"."credit_grant" (user_id, chat, expires_at, created_at, id) WHERE remaining > 0;
--> statement-breakpoint
-- Serves the sweeper (credits:expire-grants): the earliest due grants of every user.
CREATE INDEX IF NOT EXISTS credit_grant_due_idx ON "credit_ledger"."credit_grant" (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
