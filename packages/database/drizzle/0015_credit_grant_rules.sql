-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- No ledger write may run while balances become grants: one committed between the carrying
-- over below and the new rules would move a balance that no grant accounts for.
LOCK TABLE "public"."User", "public"."CreditTransaction" IN SHARE ROW EXCLUSIVE MODE;
--> statement-breakpoint
-- ledger:source tables/credit_grant.sql
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
-- ledger:end tables/credit_grant.sql
--> statement-breakpoint
-- ledger:source functions/credit_balance_effect.sql
-- What a row of each operation does to its balance, declared once: a deduction, a hold or a
-- grant's expiry takes its amount; a grant or a refund adds it; a settlement charges its amount of the hold
-- and gives the rest back (held − amount); a void or an expiry gives the whole hold back.
-- credits:verify keeps its own copy (src/credits/operations.ts), and a test runs every
-- operation through both. NULL for an operation this does not know: a new one must be added
-- here, and the NULL fails the write (balance_after is NOT NULL) until it is.
-- SQL, STABLE (an enum's text is) and without SET, so that PostgreSQL inlines it where it is
-- called. The operations are compared as text arrays: a SQL function's body is parsed when it
-- is created, and an enum literal there would make db:migrate commit the migration that added
-- that value on its own first (a run that fails later would then leave part of it applied).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_balance_effect"(
  operation "public"."operation_type", amount integer, held integer
) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{deduct,hold,expire_grant}'::pg_catalog.text[])
              THEN 0::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{grant,refund,void,expire}'::pg_catalog.text[])
              THEN amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle}'::pg_catalog.text[])
              THEN held::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
         END
$$;
-- ledger:end functions/credit_balance_effect.sql
--> statement-breakpoint
-- ledger:source functions/credit_expire_due_grants.sql
-- Takes off the balance what remains of the user's grants that are due by `at`, each with an
-- `expire_grant` row of its own (a statement of its own, applied before the row being
-- written is numbered), and returns the time that row is to be dated with; NULL when nothing
-- was due. So no write or read of a user ever spends or counts credits past their expiry,
-- and none needs a background job to. With the user's lock held (the caller took it), a
-- grant expires exactly once. Due means due at the row's time, as for holds
-- (credit_expire_due_holds): the row is dated again after the expiries, until none is due.
-- Also called by credit_tx_apply after a row gave credits back to a grant already past its
-- expiry: those come off again at once.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_expire_due_grants"(user_id uuid, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
  g record;
  expired boolean := false;
BEGIN
  LOOP
    PERFORM 1 FROM "credit_ledger"."credit_grant" c
      WHERE c.user_id = credit_expire_due_grants.user_id AND c.remaining > 0 AND c.expires_at <= at;
    EXIT WHEN NOT FOUND;
    FOR g IN SELECT c.id, c.remaining, c.chat FROM "credit_ledger"."credit_grant" c
              WHERE c.user_id = credit_expire_due_grants.user_id AND c.remaining > 0 AND c.expires_at <= at
              ORDER BY c.expires_at, c.id LOOP
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, allocations)
        VALUES (credit_expire_due_grants.user_id, g.remaining, 'expire_grant',
                CASE WHEN g.chat THEN 'chat_message'::"public"."feature_type" ELSE 'none' END, jsonb_build_object(g.id, g.remaining));
    END LOOP;
    expired := true;
    at := date_trunc('milliseconds', clock_timestamp());
  END LOOP;
  RETURN CASE WHEN expired THEN at END;
END;
$$;
-- ledger:end functions/credit_expire_due_grants.sql
--> statement-breakpoint
-- ledger:source functions/credit_grant_give_back.sql
-- What giving back `amount` of trail row `taken_by` (a deduction being refunded, or a hold
-- being closed) returns to each grant, as allocations: to the grants that row took from, each
-- at most what it took from it less what the refunds before gave back to it, the
-- latest-expiring grant first (so what stays spent is what would have lapsed soonest). NULL
-- when the row took from no grant: it was written before credit sources existed (the caller
-- then gives the credits back as a grant of their own). Runs inside credit_tx_prepare, under
-- the user's lock, with its search_path.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_grant_give_back"(taken_by uuid, amount integer) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  taken jsonb;
  owed integer := amount;
  given jsonb := '{}';
  g record;
BEGIN
  SELECT t.allocations INTO taken FROM "public"."CreditTransaction" t
   WHERE t.id = taken_by AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF taken IS NULL THEN
    RETURN NULL;
  END IF;
  FOR g IN SELECT c.id,
                  (taken ->> c.id::text)::integer
                    - coalesce((SELECT sum((r.allocations ->> c.id::text)::integer)
                                  FROM "public"."CreditTransaction" r
                                 WHERE r.refund_of = taken_by
                                   AND "credit_ledger"."credit_tx_is_trail"(r.tableoid::pg_catalog.regclass)), 0) AS open
             FROM "credit_ledger"."credit_grant" c
            WHERE c.id IN (SELECT k::uuid FROM jsonb_object_keys(taken) k)
            ORDER BY c.expires_at DESC NULLS FIRST, c.created_at DESC, c.id DESC LOOP
    EXIT WHEN owed = 0;
    IF g.open > 0 THEN
      given := given || jsonb_build_object(g.id, least(g.open, owed));
      owed := owed - least(g.open, owed);
    END IF;
  END LOOP;
  IF owed > 0 THEN
    RAISE EXCEPTION 'the grants row % took from cannot take back % more', taken_by, owed
      USING ERRCODE = 'BC009', HINT = 'A grant it took from is missing: pnpm credits:verify lists what is wrong.';
  END IF;
  RETURN given;
END;
$$;
-- ledger:end functions/credit_grant_give_back.sql
--> statement-breakpoint
-- ledger:source functions/credit_grants_expire.sql
-- The grants' sweeper: takes off the balances what remains of up to max_rows grants past
-- their expiry, earliest first, each with an expire_grant row of its own, and returns those
-- rows. Like credit_holds_expire (which says why at length): it runs as its caller (SECURITY
-- INVOKER), so it can do no more than the caller's own INSERT of those rows; each user's lock
-- is taken first, busy users are skipped unless one user is asked for; a grant that cannot be
-- expired is reported with a WARNING and skipped. Correctness does not depend on it: every
-- write and balance read of a user expires its due grants first.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_grants_expire"(max_rows integer, only_user uuid DEFAULT NULL)
RETURNS SETOF "public"."CreditTransaction"
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
  g record;
  r "public"."CreditTransaction"%ROWTYPE;
  done integer := 0;
  now_ts timestamptz := clock_timestamp();
  failed_state text;
  failed_message text;
BEGIN
  IF max_rows < 0 THEN
    RAISE EXCEPTION 'max_rows must be 0 or more, not %', max_rows USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR g IN SELECT id, user_id FROM "credit_ledger"."credit_grant"
            WHERE remaining > 0 AND expires_at <= now_ts AND (only_user IS NULL OR user_id = only_user)
            ORDER BY expires_at, id LOOP
    EXIT WHEN done >= max_rows;
    IF only_user IS NULL THEN
      PERFORM 1 FROM "public"."User" WHERE id = g.user_id FOR NO KEY UPDATE SKIP LOCKED;
    ELSE
      PERFORM 1 FROM "public"."User" WHERE id = g.user_id FOR NO KEY UPDATE;
    END IF;
    CONTINUE WHEN NOT FOUND;
    BEGIN
      -- Read again under the lock: a write of the user may have expired it meanwhile.
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, allocations)
        SELECT c.user_id, c.remaining, 'expire_grant', CASE WHEN c.chat THEN 'chat_message'::"public"."feature_type" ELSE 'none' END,
               jsonb_build_object(c.id, c.remaining)
          FROM "credit_ledger"."credit_grant" c WHERE c.id = g.id AND c.remaining > 0
        RETURNING * INTO r;
    EXCEPTION WHEN OTHERS THEN
      IF SQLSTATE = '42501' OR SQLSTATE LIKE '40%' THEN
        RAISE;
      END IF;
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
      RAISE WARNING 'grant % of user % was not expired: % (%)', g.id, g.user_id, failed_message, failed_state;
      r := NULL;
    END;
    CONTINUE WHEN r.id IS NULL;
    RETURN NEXT r;
    done := done + 1;
    r := NULL;
  END LOOP;
END;
$$;
-- ledger:end functions/credit_grants_expire.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_opening_row.sql
-- Rule (BC008): opening rows are the ones user_ledger_opening writes, and only they. A user
-- inserted by the statement still writing (its head negative: -2 or -1 opening rows due)
-- takes only those, free_credits first, each stating exactly the balance the user was
-- created with, with the opening rows' own feature type and label; and the label support
-- reads as "the balance the user was created with" is theirs alone. Returns the row's seq.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_opening_row"(
  user_id uuid, operation "public"."operation_type", feature_type "public"."feature_type",
  amount integer, metadata jsonb, idempotency_key text, refund_of uuid,
  head bigint, credits integer, chats integer
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  chat boolean := feature_type = 'chat_message';
BEGIN
  IF head >= 0 THEN
    IF metadata @> '{"reason": "opening_balance"}' THEN
      RAISE EXCEPTION 'only the rows written when user % was created are opening rows', user_id
        USING ERRCODE = 'BC008', HINT = 'Give a grant another reason.';
    END IF;
    RETURN head + 1;
  END IF;
  IF operation <> 'grant' OR chat <> (head = -1 AND chats > 0)
     OR feature_type NOT IN ('none', 'chat_message')
     OR metadata IS DISTINCT FROM '{"reason": "opening_balance"}'::jsonb
     OR amount <> (CASE WHEN chat THEN chats ELSE credits END)
     OR idempotency_key IS NOT NULL OR refund_of IS NOT NULL THEN
    RAISE EXCEPTION 'user % was created by this statement and its opening balance is not recorded yet', user_id
      USING ERRCODE = 'BC008', HINT = 'Change the credits of a new user in a later statement.';
  END IF;
  RETURN CASE WHEN head = -1 AND credits > 0 AND chats > 0 THEN 2 ELSE 1 END;
END;
$$;
-- ledger:end functions/credit_rule_opening_row.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_apply.sql
-- AFTER INSERT on the trail: the row exists, so apply it to "User", unless the user's trail
-- moved on since the row was numbered, or the user is not the one it was numbered against (a
-- user deleted and created again under the same id, still waiting for its opening rows,
-- takes only those); then list a hold in "CreditHold", or remove the hold a row closes.
-- user_ledger_guard recognises the UPDATE on line 3 of this body on the call stack (one line,
-- so that the guard can compare it whole) and lets nothing else move a balance: change it
-- and its copy in user_ledger_guard together.
-- No lock_timeout of its own (a SET clause costs every write a few µs): the rows it writes
-- are locked already, the user's and (for a row that closes a hold) the hold's, by
-- credit_tx_prepare, whose waits are bounded.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_apply"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = 'chat_message' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = 'chat_message' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = CASE WHEN ledger_seq = -2 THEN -1 ELSE NEW.seq END, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id AND (ledger_seq = NEW.seq - 1 OR (ledger_seq < 0 AND NEW.seq = (CASE WHEN ledger_seq = -1 AND free_credits > 0 AND free_chat_messages > 0 THEN 2 ELSE 1 END) AND NEW.balance_after = (CASE WHEN NEW.feature_type = 'chat_message' THEN free_chat_messages ELSE free_credits END)));
  IF NOT FOUND THEN
    -- Two rows of one user in one statement were both numbered before either was applied
    -- (credit_tx_user_seq_idx refuses the second first, where it exists), or the user is gone.
    RAISE EXCEPTION 'row % of user % cannot be applied: the user is gone, or another row of this statement took seq %', NEW.id, NEW.user_id, NEW.seq
      USING ERRCODE = 'BC008', HINT = 'Write one row per user per statement.';
  END IF;
  -- Checked after the UPDATE, so that the frames the guard compares stay as they are; an
  -- error here undoes the UPDATE with the statement.
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger"."credit_tx_is_trail"(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_apply() runs only as the AFTER INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.operation = 'hold' THEN
    INSERT INTO "public"."CreditHold" (id, user_id, amount, feature_type, expires_at, created_at, covered_by_plan)
      VALUES (NEW.id, NEW.user_id, NEW.amount, NEW.feature_type, NEW.hold_expires_at, NEW.created_at, NEW.covered_by_plan);
  ELSIF NEW.hold_id IS NOT NULL THEN
    DELETE FROM "public"."CreditHold" WHERE id = NEW.hold_id;
  END IF;
  -- The grants: a row with a source creates one (what it adds: a grant's or refund's amount,
  -- a closed hold's give-back); a row with allocations takes from or gives back to the ones
  -- it names. Credits given back to a grant already past its expiry come off again at once,
  -- with the expire_grant rows of credit_expire_due_grants.
  IF NEW.source IS NOT NULL THEN
    INSERT INTO "credit_ledger"."credit_grant" (id, user_id, chat, source, amount, remaining, expires_at, created_at, created_seq)
      SELECT NEW.id, NEW.user_id, NEW.feature_type = 'chat_message', NEW.source, a.amount, a.amount,
             NEW.grant_expires_at, NEW.created_at, NEW.seq
        FROM (SELECT CASE WHEN NEW.operation = 'settle'
                          THEN (SELECT h.amount FROM "public"."CreditTransaction" h WHERE h.id = NEW.hold_id) - NEW.amount
                          ELSE NEW.amount END AS amount) a;
  ELSIF NEW.allocations IS NOT NULL THEN
    UPDATE "credit_ledger"."credit_grant" c
       SET remaining = c.remaining + CASE WHEN NEW.operation IN ('deduct', 'hold', 'expire_grant')
                                          THEN -(a.value::integer) ELSE a.value::integer END
      FROM jsonb_each_text(NEW.allocations) a
     WHERE c.id = a.key::uuid AND c.user_id = NEW.user_id;
    IF NEW.operation NOT IN ('deduct', 'hold', 'expire_grant')
       AND EXISTS (SELECT 1 FROM "credit_ledger"."credit_grant" c
                    WHERE c.user_id = NEW.user_id AND c.id::text IN (SELECT jsonb_object_keys(NEW.allocations))
                      AND c.remaining > 0 AND c.expires_at <= NEW.created_at) THEN
      PERFORM "credit_ledger"."credit_expire_due_grants"(NEW.user_id, NEW.created_at);
    END IF;
  END IF;
  RETURN NULL;
END;
$$;
-- ledger:end functions/credit_tx_apply.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_prepare.sql
-- BEFORE INSERT on the trail: lock the user, check, number, date and hash the row. No side
-- effect here may survive the row being skipped (ON CONFLICT) or refused, so this only reads,
-- locks and writes the expire rows of the user's due holds (statements of their own, undone
-- with this one). Each rule is a function of its own (credit_rule_*), with its error code and
-- the reason it exists; this one reads what they need under the user's lock and calls them in
-- order, each when a cheap test says it may refuse or has work to do. A rule returns true or
-- raises, so that it is called as an expression (a PERFORM costs more).
--
-- SQLSTATEs of class BC (src/credits/errors.ts maps each to a typed error; the README lists them):
--   BC001 insufficient balance       BC002 unknown user            BC003 refund exceeds its deduction
--   BC004 invalid refund target      BC007 capped refund under REPEATABLE READ
--   BC008 write out of the user's trail order, or an opening row out of place
--   BC009 ledger not installed (a ledger trigger is missing, disabled or changed)
--   BC010 run other than as its own trigger
--   BC012–BC016 holds: not found, closed already, amount, not due, hold columns or expiry
--   BC017 a foreign trigger runs inside the write    BC018 TRIGGER held by another role (REPEATABLE READ)
--   BC019 another role's foreign key references a ledger table
--   BC020 a daily limit of credit_ledger.credit_limit would be exceeded
--   BC021 more due holds than one write gives back (credit_expire_due_holds)
--   BC022, BC023 plans (credit_plan_change_prepare)
--   BC024 an expire_grant row that does not expire one due grant whole
--
-- lock_timeout bounds every lock wait inside the write: a role with UPDATE on "User" or
-- "CreditHold" can hold a user's row lock (SELECT … FOR UPDATE in a transaction it keeps
-- open), and the user's writes would otherwise wait for as long as it likes. They fail with
-- 55P03 instead, which the package reports as LEDGER_LOCK_TIMEOUT (retryable).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
AS $$
DECLARE
  chat boolean := NEW.feature_type = 'chat_message';
  census record;
  credits integer;
  chats integer;
  head bigint;
  head_hash text;
  available integer;
  held integer;
  next_balance bigint;
  at timestamptz;
  expired_at timestamptz;
  plan_until timestamptz;
  grant_id uuid;
  grant_chat boolean;
  grant_remaining integer;
  grant_expires timestamptz;
  allocated bigint;
  ok boolean;
BEGIN
  -- Only as the trail's own trigger: the owner could attach this function to a table of its own.
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger"."credit_tx_is_trail"(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_prepare() runs only as the BEFORE INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;

  -- No trigger can be added to "User" or "CreditHold" from here to the end of the transaction
  -- (CREATE TRIGGER takes a lock this one conflicts with; the trail's own is held since the
  -- INSERT began), so the census of triggers below stays true for the whole write. With only
  -- the row lock, a trigger created while this write waited after the census (for a
  -- refund_of row another session locked, say) fired in credit_tx_apply's UPDATE. It comes
  -- before the statement below, whose snapshot (READ COMMITTED) then sees every trigger
  -- committed before it.
  LOCK TABLE "public"."User", "public"."CreditHold" IN ROW EXCLUSIVE MODE;

  -- Every write of one user takes this lock first, so they apply one at a time, in seq order.
  -- One statement also reads what the rules need, one round of the executor: the census of
  -- triggers and foreign keys, the feature's daily limit, when this user's next open hold
  -- is due, and, for a deduction or a hold, the user's plan and whether it is unlimited. Its
  -- subqueries and join read the statement's snapshot, which may be older than the row the
  -- lock returns (a write or plan change of this user that committed while this one waited:
  -- both update the user's row); `stale` says the row in that snapshot is another version,
  -- so the hold and plan figures may be stale and are read again.
  -- The census reads pg_trigger alone, with no join or subquery on the common path (each is
  -- set up again on every write, ~5–15 µs): the rules read more only when it is not 10.
  SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash,
         -- The census, one pass over the three tables' triggers summed into one number, since
         -- each aggregate, subquery and expression here is set up again on every write:
         --   1 for each of the ledger's triggers (table, name, function, pg_trigger.tgtype)
         --     present, enabled and plain (credit_rule_ledger_triggers); adding one is one line;
         --   1024 for each trigger that runs inside a write (on the trail or "CreditHold", any;
         --     on "User", those firing on UPDATE) with a function that is not the ledger's
         --     (credit_rule_no_foreign_triggers);
         --   1048576 for each foreign key onto the trail or "CreditHold" from another table
         --     (credit_rule_no_foreign_reference, which looks up that table's owner): such a
         --     key has internal triggers on the table it references, whose tgconstrrelid is
         --     the referencing table.
         -- So it is 10 exactly when nothing needs a closer look.
         (SELECT coalesce(sum(CASE
                  WHEN t.tgisinternal THEN
                    CASE WHEN t.tgrelid <> '"public"."User"'::regclass
                          AND t.tgconstrrelid NOT IN ('"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass, '"public"."User"'::regclass, TG_RELID)
                         THEN 1048576 ELSE 0 END
                  WHEN CASE t.tgname
                  WHEN 'credit_tx_prepare' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_prepare"()'::regprocedure AND t.tgtype = 7
                  WHEN 'credit_tx_apply' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_apply"()'::regprocedure AND t.tgtype = 5
                  WHEN 'credit_tx_append_only' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_append_only"()'::regprocedure AND t.tgtype = 27
                  WHEN 'credit_tx_no_truncate' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_append_only"()'::regprocedure AND t.tgtype = 34
                  WHEN 'user_ledger_guard' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_guard"()'::regprocedure AND t.tgtype = 19
                  WHEN 'user_ledger_open' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_open"()'::regprocedure AND t.tgtype = 7
                  WHEN 'user_ledger_opening' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_opening"()'::regprocedure AND t.tgtype = 5
                  WHEN 'user_ledger_delete' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_delete"()'::regprocedure AND t.tgtype = 11
                  WHEN 'credit_hold_guard' THEN t.tgrelid = '"public"."CreditHold"'::regclass AND t.tgfoid = '"credit_ledger"."credit_hold_guard"()'::regprocedure AND t.tgtype = 31
                  WHEN 'credit_hold_no_truncate' THEN t.tgrelid = '"public"."CreditHold"'::regclass AND t.tgfoid = '"credit_ledger"."credit_hold_guard"()'::regprocedure AND t.tgtype = 34
                         ELSE false END
                   AND t.tgenabled IN ('O', 'A') AND t.tgqual IS NULL AND NOT t.tgdeferrable
                   AND t.tgnargs = 0 AND pg_catalog.cardinality(t.tgattr::int2[]) = 0 THEN 1
                  WHEN t.tgfoid NOT IN ('"credit_ledger"."credit_tx_prepare"()'::regprocedure, '"credit_ledger"."credit_tx_apply"()'::regprocedure,
                                        '"credit_ledger"."credit_tx_append_only"()'::regprocedure, '"credit_ledger"."user_ledger_guard"()'::regprocedure,
                                        '"credit_ledger"."credit_hold_guard"()'::regprocedure)
                   AND (t.tgrelid = TG_RELID OR t.tgrelid <> '"public"."CreditTransaction"'::regclass)
                   AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0) THEN 1024
                  ELSE 0 END), 0)
            FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)) AS triggers,
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           (SELECT l.max_amount FROM "credit_ledger"."credit_limit" l
             WHERE l.feature_type = NEW.feature_type AND l.period = 'day') END AS daily_limit,
         (SELECT min(h.expires_at) FROM "public"."CreditHold" h WHERE h.user_id = NEW.user_id) AS next_expiry,
         (SELECT min(g.expires_at) FROM "credit_ledger"."credit_grant" g
           WHERE g.user_id = NEW.user_id AND g.remaining > 0) AS next_grant_expiry,
         (SELECT s.xmin FROM "public"."User" s WHERE s.id = NEW.user_id) IS DISTINCT FROM u.xmin AS stale,
         p.until AS plan_until,
         -- The unlimited plan that covers a deduction or hold: the user's plan (the default
         -- plan without one), when it is unlimited.
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           (SELECT c.plan FROM "credit_ledger"."credit_plan" c
             WHERE c.unlimited AND c.plan = coalesce(p.plan,
                     (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default))) END AS covering
    INTO census FROM "public"."User" u LEFT JOIN "credit_ledger"."user_plan" p ON p.user_id = u.id
   WHERE u.id = NEW.user_id FOR NO KEY UPDATE OF u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  credits := census.free_credits;
  chats := census.free_chat_messages;
  head := census.ledger_seq;
  head_hash := census.ledger_hash;

  -- A PL/pgSQL rule is called when its first, cheap test says it may refuse or has work to
  -- do: a call costs a write ~10–30 µs, and a plain deduction would otherwise pay for each.
  -- Past 10, each rule gets what is above its own unit (so a count too large for its field,
  -- carried into the next, still makes the rule look), and reads the catalog itself.
  IF census.triggers <> 10 THEN
    ok := "credit_ledger"."credit_rule_ledger_triggers"(10 - census.triggers % 1024);
    ok := "credit_ledger"."credit_rule_no_foreign_triggers"(TG_RELID, census.triggers / 1024);
    ok := "credit_ledger"."credit_rule_no_foreign_reference"(TG_RELID, census.triggers / 1048576);
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  END IF;
  -- An SQL rule, inlined here, is called on every write (it costs no call when it passes).
  ok := "credit_ledger"."credit_rule_hold_columns"(NEW.operation, NEW.hold_id, NEW.hold_expires_at);
  -- A source and an expiry are a grant's (BC016); which grants a row takes from or gives back
  -- to is the ledger's to say: only an expire_grant row names one, which is checked below.
  IF (NEW.source IS NOT NULL OR NEW.grant_expires_at IS NOT NULL) AND NEW.operation <> 'grant' THEN
    RAISE EXCEPTION 'source and grant_expires_at are set on grant rows only'
      USING ERRCODE = 'BC016',
            DETAIL = json_build_object('field', CASE WHEN NEW.source IS NOT NULL THEN 'source' ELSE 'expiresAt' END,
              'reason', 'is set on grants only')::text;
  END IF;
  IF NEW.operation <> 'expire_grant' THEN
    NEW.allocations := NULL;
  END IF;

  -- The user's due holds are given back first (credit_expire_due_holds), as of this row's
  -- time. Open holds change only with a write of their user, which moves its head: with the
  -- head the same in the snapshot as under the lock, `next_expiry` is exact, and when it is
  -- not due (the common case: no open hold at all) nothing is scanned. An expire row expires
  -- nothing itself.
  at := date_trunc('milliseconds', clock_timestamp());
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.next_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_holds"(NEW.user_id, NEW.hold_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  -- Then what remains of the user's grants past their expiry comes off (credit_expire_due_
  -- grants), so this row never spends or counts it. Grants change only with a write of their
  -- user, as holds do: `next_grant_expiry` is exact unless the row is stale.
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.next_grant_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_grants"(NEW.user_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  available := CASE WHEN chat THEN chats ELSE credits END;

  -- An expire_grant row takes off all that remains of one grant of this user and balance,
  -- due by now (BC024): whoever inserts it (the ledger, the sweeper, anyone) can expire
  -- nothing else, and nothing twice (the grant's row is locked and read again here).
  IF NEW.operation = 'expire_grant' THEN
    IF jsonb_typeof(NEW.allocations) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(NEW.allocations)) = 1 THEN
      SELECT c.id, c.chat, c.remaining, c.expires_at INTO grant_id, grant_chat, grant_remaining, grant_expires
        FROM "credit_ledger"."credit_grant" c
       WHERE c.id::text = (SELECT k FROM jsonb_object_keys(NEW.allocations) k) AND c.user_id = NEW.user_id
       FOR UPDATE;
    END IF;
    IF grant_id IS NULL OR grant_chat IS DISTINCT FROM chat OR NOT coalesce(grant_expires <= at, false)
       OR grant_remaining IS DISTINCT FROM NEW.amount
       OR NEW.allocations ->> grant_id::text IS DISTINCT FROM NEW.amount::text
       OR NEW.feature_type NOT IN ('none', 'chat_message') THEN
      RAISE EXCEPTION 'an expire_grant row takes off all that remains of one due grant of its user and balance'
        USING ERRCODE = 'BC024',
              DETAIL = json_build_object('userId', NEW.user_id, 'grantId', grant_id,
                'remaining', grant_remaining, 'expiresAt', grant_expires)::text;
    END IF;
    NEW.allocations := jsonb_build_object(grant_id, NEW.amount);
  END IF;

  -- Which plan covers a deduction or a hold, read under the lock: a plan change is entirely
  -- before or after this row. A time-bound plan past its end at this row's time is ended
  -- first, by its own plan change (credit_plan_lapse). Only the ledger sets covered_by_plan.
  NEW.covered_by_plan := NULL;
  IF NEW.operation IN ('deduct', 'hold') THEN
    NEW.covered_by_plan := census.covering;
    plan_until := census.plan_until;
    IF census.stale THEN
      SELECT p.until INTO plan_until FROM "credit_ledger"."user_plan" p WHERE p.user_id = NEW.user_id;
    END IF;
    IF plan_until <= at THEN
      PERFORM "credit_ledger"."credit_plan_lapse"(NEW.user_id);
    END IF;
    IF census.stale OR plan_until <= at THEN
      NEW.covered_by_plan := (SELECT c.plan FROM "credit_ledger"."credit_plan" c
        WHERE c.unlimited AND c.plan = coalesce(
          (SELECT p.plan FROM "credit_ledger"."user_plan" p WHERE p.user_id = NEW.user_id),
          (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default)));
    END IF;
  END IF;

  IF head >= 0 AND NEW.metadata IS NULL THEN
    NEW.seq := head + 1;
  ELSE
    NEW.seq := "credit_ledger"."credit_rule_opening_row"(NEW.user_id, NEW.operation, NEW.feature_type,
      NEW.amount, NEW.metadata, NEW.idempotency_key, NEW.refund_of, head, credits, chats);
  END IF;
  IF head < 0 THEN
    -- An opening row: the grant of a new user's balance, which never expires.
    IF NEW.grant_expires_at IS NOT NULL THEN
      RAISE EXCEPTION 'the opening rows of user % do not expire', NEW.user_id
        USING ERRCODE = 'BC008', HINT = 'Grant expiring credits in a later statement.';
    END IF;
    NEW.source := 'opening';
    NEW.balance_after := NEW.amount;
  ELSE
    IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
      ok := "credit_ledger"."credit_rule_refund_cap"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.refund_of, NEW.idempotency_key);
      -- Back to the grants the deduction took from (credit_grant_give_back); one from before
      -- credit sources existed took from none, and its refund is a grant of its own.
      NEW.allocations := "credit_ledger"."credit_grant_give_back"(NEW.refund_of, NEW.amount);
      IF NEW.allocations IS NULL THEN
        NEW.source := 'refund';
      END IF;
    ELSIF NEW.hold_id IS NOT NULL THEN
      held := "credit_ledger"."credit_rule_hold_close"(NEW.user_id, NEW.operation, NEW.feature_type,
        NEW.amount, NEW.hold_id, at);
      -- A hold an unlimited plan covered is closed as it was taken: moving no balance.
      NEW.covered_by_plan := (SELECT h.covered_by_plan FROM "public"."CreditHold" h WHERE h.id = NEW.hold_id);
      -- What the hold gives back (all of it, or what a settlement did not charge) goes back to
      -- the grants it took from; a hold from before credit sources existed took from none.
      IF NEW.covered_by_plan IS NULL AND (held - (CASE WHEN NEW.operation = 'settle' THEN NEW.amount ELSE 0 END)) > 0 THEN
        NEW.allocations := "credit_ledger"."credit_grant_give_back"(NEW.hold_id,
          held - CASE WHEN NEW.operation = 'settle' THEN NEW.amount ELSE 0 END);
        IF NEW.allocations IS NULL THEN
          NEW.source := 'refund';
        END IF;
      END IF;
    ELSIF NEW.operation = 'hold' THEN
      ok := "credit_ledger"."credit_rule_hold_expiry"(NEW.hold_expires_at, at);
    ELSIF NEW.operation = 'grant' THEN
      -- Where the credits came from (promotional when the inserter does not say), and when
      -- what remains of them expires: after this row, if ever.
      NEW.source := coalesce(NEW.source, 'promotional');
      IF NEW.source IN ('opening', 'refund', 'carried_over') THEN
        RAISE EXCEPTION 'a grant''s source % is the ledger''s to set', NEW.source
          USING ERRCODE = 'BC016',
                DETAIL = json_build_object('field', 'source', 'reason', 'opening, refund and carried_over are set by the ledger')::text;
      END IF;
      IF NEW.grant_expires_at IS NOT NULL AND (NEW.grant_expires_at <= at OR NOT isfinite(NEW.grant_expires_at)) THEN
        RAISE EXCEPTION 'a grant expires after it is made, at a finite time, not at %', NEW.grant_expires_at
          USING ERRCODE = 'BC016',
                DETAIL = json_build_object('field', 'expiresAt', 'reason', 'must be a finite time in the future')::text;
      END IF;
    ELSIF NEW.operation = 'refund' THEN
      -- A refund that names no deduction gives its credits back as a grant of its own.
      NEW.source := 'refund';
    END IF;
    -- A row an unlimited plan covers records the use and its cost, and moves no balance.
    next_balance := available::bigint + CASE WHEN NEW.covered_by_plan IS NULL
      THEN "credit_ledger"."credit_balance_effect"(NEW.operation, NEW.amount, held) ELSE 0 END;
    IF next_balance IS NULL THEN
      RAISE EXCEPTION 'the credits ledger does not know what operation % does to a balance', NEW.operation
        USING ERRCODE = 'BC009', HINT = 'Add it to credit_ledger.credit_balance_effect (ledger/functions/credit_balance_effect.sql) and run pnpm db:ledger.';
    END IF;
    IF NEW.covered_by_plan IS NOT NULL THEN
      -- A covered use still counts against a daily limit: the limit bounds use, on every plan.
      IF census.daily_limit IS NOT NULL THEN
        ok := "credit_ledger"."credit_rule_daily_limit"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at, census.daily_limit);
      END IF;
    ELSIF next_balance < available THEN
      IF next_balance < 0 THEN
        ok := "credit_ledger"."credit_rule_sufficient"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, available);
      END IF;
      IF census.daily_limit IS NOT NULL THEN
        ok := "credit_ledger"."credit_rule_daily_limit"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at, census.daily_limit);
      END IF;
      -- A deduction or a hold takes from the user's live grants of this balance, the
      -- soonest-expiring first (never-expiring last), then the oldest; their remaining amounts
      -- add up to the balance, so the balance covering the amount means they do. An
      -- expire_grant row took its allocations above.
      IF NEW.operation IN ('deduct', 'hold') THEN
        SELECT jsonb_object_agg(g.id, least(g.remaining, NEW.amount - (g.running - g.remaining))),
               coalesce(sum(least(g.remaining, NEW.amount - (g.running - g.remaining))), 0)
          INTO NEW.allocations, allocated
          FROM (SELECT c.id, c.remaining,
                       sum(c.remaining) OVER (ORDER BY c.expires_at, c.created_at, c.id) AS running
                  FROM "credit_ledger"."credit_grant" c
                 WHERE c.user_id = NEW.user_id AND c.chat = (NEW.feature_type = 'chat_message')
                   AND c.remaining > 0) g
         WHERE g.running - g.remaining < NEW.amount;
        IF allocated <> NEW.amount THEN
          RAISE EXCEPTION 'the live grants of user % cover % of the % % it has', NEW.user_id, allocated,
              available, CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END
            USING ERRCODE = 'BC009', HINT = 'Its grants and its balance disagree: pnpm credits:verify lists what is wrong.';
        END IF;
      END IF;
    ELSE
      ok := "credit_ledger"."credit_rule_balance_range"(NEW.user_id, NEW.feature_type, next_balance,
        CASE WHEN NEW.hold_id IS NULL
             THEN (SELECT coalesce(sum(h.amount), 0) FROM "public"."CreditHold" h
                    WHERE h.user_id = NEW.user_id AND (h.feature_type = 'chat_message') = chat
                      AND h.covered_by_plan IS NULL)
             ELSE 0 END,
        NEW.hold_id IS NULL);
    END IF;
    NEW.balance_after := next_balance;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := at;
  NEW.hash := "credit_ledger"."credit_tx_hash"(head_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at,
    jsonb_strip_nulls(jsonb_build_object('covered_by_plan', NEW.covered_by_plan, 'actor', NEW.actor,
      'source', NEW.source, 'grant_expires_at', (extract(epoch FROM NEW.grant_expires_at) * 1000)::int8,
      'allocations', NEW.allocations)));
  RETURN NEW;
END;
$$;
-- ledger:end functions/credit_tx_prepare.sql
--> statement-breakpoint
-- ledger:source functions/user_ledger_opening.sql
-- AFTER INSERT on "User": writes the new user's opening rows, one grant per non-zero balance.
-- First, the row as it was stored must still call for the opening rows user_ledger_open
-- counted. A BEFORE INSERT trigger that runs after user_ledger_open (one of a role with the
-- TRIGGER privilege, named to sort after it) could otherwise set ledger_seq to 0 and create a
-- user whose balances no row explains; no opening row would then be written, so
-- credit_tx_prepare's check of foreign triggers would never run. The check reads the stored
-- row, so it holds whatever trigger did it.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_opening"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_opening() runs only as the AFTER INSERT trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.ledger_seq IS DISTINCT FROM -((NEW.free_credits <> 0)::int + (NEW.free_chat_messages <> 0)::int)
     OR NEW.ledger_hash IS NOT NULL THEN
    SELECT string_agg(format('%I on %s (function %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc), ', ' ORDER BY t.tgname)
      INTO foreign_list
      FROM pg_trigger t
     WHERE t.tgrelid = TG_RELID AND NOT t.tgisinternal AND t.tgtype & 4 <> 0 AND t.tgname <> 'user_ledger_open'
       AND t.tgname <> 'user_ledger_opening';
    RAISE EXCEPTION 'a trigger that is not the ledger''s changed the head of user % after user_ledger_open set it: %', NEW.id, coalesce(foreign_list, '(not found)')
      USING ERRCODE = 'BC017', DETAIL = json_build_object('triggers', coalesce(foreign_list, '(not found)'))::text,
            HINT = 'Its function could create a user whose balances no row explains. Drop the trigger.';
  END IF;
  -- Read the row as it is now: the creator may have written the opening rows already in
  -- this statement (credit_tx_prepare accepts only the exact ones), or deleted the user.
  IF NEW.free_credits > 0 AND (SELECT ledger_seq FROM "public"."User" WHERE id = NEW.id)
       = (CASE WHEN NEW.free_chat_messages > 0 THEN -2 ELSE -1 END) THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
      VALUES (NEW.id, NEW.free_credits, 'grant', 'none', '{"reason": "opening_balance"}');
  END IF;
  IF NEW.free_chat_messages > 0 AND (SELECT ledger_seq FROM "public"."User" WHERE id = NEW.id) = -1 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
      VALUES (NEW.id, NEW.free_chat_messages, 'grant', 'chat_message', '{"reason": "opening_balance"}');
  END IF;
  RETURN NULL;
END;
$$;
-- ledger:end functions/user_ledger_opening.sql
--> statement-breakpoint
-- ledger:source privileges.sql
-- Who may execute the ledger's functions. Installed after every change of the ledger's
-- sources, since a function created anew gets PUBLIC's EXECUTE and whatever default
-- privileges (ALTER DEFAULT PRIVILEGES … GRANT EXECUTE ON FUNCTIONS, common on hosted
-- platforms) grant to other roles by name, which REVOKE … FROM PUBLIC leaves in place.
--
-- Nobody but the owner may execute a trigger function (attached to a table of its own, say a
-- TEMP table, credit_tx_apply could otherwise be run with any NEW), a rule or a helper, or
-- read or write the ledger's own tables (the limits). The sweeper runs as its caller, so any
-- role may execute it: it can do only what that role's own statements could (so may the
-- grants' sweeper, credit_grants_expire). The plans, the users' current plans and the grants
-- are readable by every role (an app shows its plans, a balance read
-- names the user's, credits:verify compares them with their chains), as the trail is; only
-- the owner changes the plans, and only the ledger the users' plans.
DO $$
DECLARE
  f record;
BEGIN
  FOR f IN
    SELECT DISTINCT p.oid::regprocedure AS fn,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'credit_ledger'::regnamespace AND a.grantee <> p.proowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', f.fn, f.grantee);
  END LOOP;
  FOR f IN
    SELECT DISTINCT c.oid::regclass AS rel,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
      FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
     WHERE c.relnamespace = 'credit_ledger'::regnamespace AND a.grantee <> c.relowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', f.rel, f.grantee);
  END LOOP;
END;
$$;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_holds_expire"(integer, uuid) TO PUBLIC;
--> statement-breakpoint
GRANT SELECT ON "credit_ledger"."credit_plan", "credit_ledger"."user_plan", "credit_ledger"."credit_grant" TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_grants_expire"(integer, uuid) TO PUBLIC;
-- ledger:end privileges.sql
--> statement-breakpoint
-- Every balance from before credit sources existed becomes one grant that never expires,
-- source 'carried_over', as of the user's trail head: rows from here on take from it (and
-- from later grants), and credits:verify checks its amount against the balance the trail
-- had at that head. Holds still open give their credits back as grants of their own.
INSERT INTO "credit_ledger"."credit_grant" (id, user_id, chat, source, amount, remaining, expires_at, created_at, created_seq)
SELECT gen_random_uuid(), u.id, b.chat, 'carried_over', b.balance, b.balance, NULL, now(), u.ledger_seq
  FROM "public"."User" u
 CROSS JOIN LATERAL (VALUES (false, u.free_credits), (true, u.free_chat_messages)) AS b(chat, balance)
 WHERE b.balance > 0
   AND NOT EXISTS (SELECT 1 FROM "credit_ledger"."credit_grant" g WHERE g.user_id = u.id AND g.chat = b.chat);
