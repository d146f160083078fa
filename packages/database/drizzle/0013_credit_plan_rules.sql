-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- credit_tx_hash takes an `extension` argument from this migration on. CREATE OR REPLACE
-- cannot add an argument (it would create a second function beside this one), so the old one
-- is dropped first; credit_tx_prepare, the one caller, is replaced below in the same
-- transaction, and no write runs in between.
DROP FUNCTION IF EXISTS "credit_ledger"."credit_tx_hash"(text, uuid, uuid, bigint, "public"."operation_type", "public"."feature_type", integer, integer, timestamptz, text, uuid, jsonb, uuid, timestamptz);
--> statement-breakpoint
-- ledger:source tables/credit_plan.sql
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
-- ledger:end tables/credit_plan.sql
--> statement-breakpoint
-- ledger:source tables/user_plan.sql
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
-- ledger:end tables/user_plan.sql
--> statement-breakpoint
-- ledger:source functions/credit_hold_guard.sql
-- "CreditHold" holds exactly the trail's open holds. Its rows are checked against the trail,
-- not against who writes them: a row is added only for a hold row of the trail, with its
-- values, that nothing has closed; removed only once the trail closed that hold, or with its
-- user; never changed. So no UPDATE or DELETE, from anyone, can make a hold never expire, or
-- fake one for the sweeper (an expire row is checked against the trail again anyway).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_hold_guard"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_RELID <> '"public"."CreditHold"'::regclass THEN
    RAISE EXCEPTION 'credit_hold_guard() runs only as the BEFORE triggers of "CreditHold"'
      USING ERRCODE = 'BC010';
  END IF;
  IF TG_LEVEL = 'ROW' AND TG_OP = 'INSERT' THEN
    -- The user's lock first, as every write of the trail takes it: a closing row written
    -- meanwhile is then committed and seen below (or, from an older REPEATABLE READ
    -- snapshot, taking the lock fails), so a closed hold is never listed again. The
    -- ledger's own insert holds the lock already.
    PERFORM 1 FROM "public"."User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
    IF EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                WHERE t.id = NEW.id AND t.operation = 'hold' AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass)
                  AND t.user_id = NEW.user_id AND t.amount = NEW.amount AND t.feature_type = NEW.feature_type
                  AND t.hold_expires_at = NEW.expires_at AND t.created_at = NEW.created_at
                  AND t.covered_by_plan IS NOT DISTINCT FROM NEW.covered_by_plan)
       AND NOT EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                        WHERE c.hold_id = NEW.id AND "credit_ledger"."credit_tx_is_trail"(c.tableoid::pg_catalog.regclass)) THEN
      RETURN NEW;
    END IF;
  ELSIF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM "public"."User" WHERE id = OLD.user_id)
       OR EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                   WHERE c.hold_id = OLD.id AND "credit_ledger"."credit_tx_is_trail"(c.tableoid::pg_catalog.regclass)) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '"CreditHold" lists the open holds of the credit trail: % is refused', TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Settle, void or expire a hold through the ledger (settleCreditHold, voidCreditHold, expireCreditHolds).';
END;
$$;
-- ledger:end functions/credit_hold_guard.sql
--> statement-breakpoint
-- ledger:source functions/credit_plan_audit.sql
-- AFTER INSERT, UPDATE or DELETE on credit_ledger.credit_plan: records the change in
-- credit_plan_audit, with the roles that made it. A plan's worth (unlimited, and the
-- allowances and caps later columns give it) is money: its every change is kept.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_audit"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"credit_ledger"."credit_plan"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_audit() runs only as the AFTER trigger of credit_ledger.credit_plan'
      USING ERRCODE = 'BC010';
  END IF;
  INSERT INTO "credit_ledger"."credit_plan_audit" (changed_at, session_role, effective_role, operation, old_row, new_row)
    VALUES (clock_timestamp(), session_user, current_user, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
  RETURN NULL;
END;
$$;
-- ledger:end functions/credit_plan_audit.sql
--> statement-breakpoint
-- ledger:source functions/credit_plan_change_apply.sql
-- AFTER INSERT on "CreditPlanChange": the row exists, so it becomes the user's current plan
-- (credit_ledger.user_plan), exactly as the next step of its chain: the first change creates
-- the user's row, every later one moves it from seq − 1. Anything else (two changes of one
-- user in one statement) is refused, and the statement with it. The user's row is touched
-- (updated_at): a credit operation whose snapshot is older than the change then sees its
-- user's row moved, so it reads the plan again under the lock (credit_tx_prepare), or, under
-- REPEATABLE READ, fails to lock it with a serialization error rather than use the old plan.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_change_apply"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."CreditPlanChange"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_change_apply() runs only as the AFTER INSERT trigger of "CreditPlanChange"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.seq = 1 THEN
    INSERT INTO "credit_ledger"."user_plan" (user_id, plan, until, seq, hash)
      VALUES (NEW.user_id, NEW.plan, NEW.until, NEW.seq, NEW.hash)
      ON CONFLICT (user_id) DO NOTHING;
  ELSE
    UPDATE "credit_ledger"."user_plan" SET plan = NEW.plan, until = NEW.until, seq = NEW.seq, hash = NEW.hash
     WHERE user_id = NEW.user_id AND seq = NEW.seq - 1;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'plan change % of user % cannot be applied: another change of this statement took seq %', NEW.id, NEW.user_id, NEW.seq
      USING ERRCODE = 'BC008', HINT = 'Change one user''s plan once per statement.';
  END IF;
  UPDATE "public"."User" SET updated_at = now() WHERE id = NEW.user_id;
  RETURN NULL;
END;
$$;
-- ledger:end functions/credit_plan_change_apply.sql
--> statement-breakpoint
-- ledger:source functions/credit_plan_change_prepare.sql
-- BEFORE INSERT on "CreditPlanChange": lock the user, check, number, date and hash the plan
-- change. The inserter chooses the plan, its end (`until`), the reason, the actor and the
-- idempotency key; the ledger sets everything else: from which plan (the user's current one),
-- the position in the user's chain, the trail head it follows, the time and the hash.
--
-- It takes the user's lock first, as every trail write does, so that a plan change is
-- entirely before or after each credit operation of the user, and the trail head it records
-- (trail_seq) orders the two chains exactly. A time-bound plan past its end is ended first
-- by its own row (credit_plan_lapse), unless this row is that lapse.
--
-- SQLSTATEs (src/credits/errors.ts): BC002 unknown user, BC022 unknown plan (or no default
-- plan), BC023 an end that is not in the future, or an end on the default plan.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_change_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
AS $$
DECLARE
  head bigint;
  state record;
  default_plan text;
  at timestamptz;
  ok boolean;
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."CreditPlanChange"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_change_prepare() runs only as the BEFORE INSERT trigger of "CreditPlanChange"'
      USING ERRCODE = 'BC010';
  END IF;
  -- credit_plan_change_apply runs as the owner and touches "User": no other role's trigger may
  -- run inside it (credit_rule_no_foreign_triggers says why), on this table or on "User".
  ok := "credit_ledger"."credit_rule_no_foreign_triggers"(TG_RELID, 1);

  SELECT u.ledger_seq INTO head FROM "public"."User" u WHERE u.id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  -- A retry of a change already made is reported as the unique index would report its key
  -- (the package then returns the first change), before any rule could refuse the retry:
  -- its `until` may have passed since the first attempt.
  IF NEW.idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditPlanChange" c
        WHERE c.user_id = NEW.user_id AND c.idempotency_key = NEW.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_plan_change_user_idempotency_key_idx';
  END IF;

  SELECT d.plan INTO default_plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default;
  IF default_plan IS NULL THEN
    RAISE EXCEPTION 'no plan of credit_ledger.credit_plan is the default'
      USING ERRCODE = 'BC022', DETAIL = json_build_object('plan', NULL, 'reason', 'no_default_plan')::text,
            HINT = 'Mark one plan is_default in a migration: users without a plan change are on it, and time-bound plans lapse to it.';
  END IF;
  at := date_trunc('milliseconds', clock_timestamp());
  SELECT s.plan, s.until, s.seq, s.hash INTO state FROM "credit_ledger"."user_plan" s WHERE s.user_id = NEW.user_id;
  IF state.until <= at
     AND NOT (NEW.plan = default_plan AND NEW.until IS NULL AND NEW.reason = 'lapsed'
              AND NEW.actor IS NULL AND NEW.idempotency_key IS NULL) THEN
    default_plan := "credit_ledger"."credit_plan_lapse"(NEW.user_id);
    at := date_trunc('milliseconds', clock_timestamp());
    SELECT s.plan, s.until, s.seq, s.hash INTO state FROM "credit_ledger"."user_plan" s WHERE s.user_id = NEW.user_id;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM "credit_ledger"."credit_plan" c WHERE c.plan = NEW.plan) THEN
    RAISE EXCEPTION 'plan "%" is not a plan of credit_ledger.credit_plan', NEW.plan
      USING ERRCODE = 'BC022',
            DETAIL = json_build_object('plan', NEW.plan, 'reason', 'not_found',
              'plans', (SELECT json_agg(c.plan ORDER BY c.plan) FROM "credit_ledger"."credit_plan" c))::text;
  END IF;
  IF NEW.until IS NOT NULL AND NEW.until <= at THEN
    RAISE EXCEPTION 'plan "%" would end at %, which is not after now (%)', NEW.plan, NEW.until, at
      USING ERRCODE = 'BC023', DETAIL = json_build_object('field', 'until', 'reason', 'is not in the future')::text;
  END IF;
  IF NEW.until IS NOT NULL AND NEW.plan = default_plan THEN
    RAISE EXCEPTION 'plan "%" is the default plan, which does not end', NEW.plan
      USING ERRCODE = 'BC023', DETAIL = json_build_object('field', 'until', 'reason', 'the default plan does not end')::text;
  END IF;

  NEW.seq := coalesce(state.seq, 0) + 1;
  NEW.from_plan := coalesce(state.plan, default_plan);
  NEW.trail_seq := greatest(head, 0);
  NEW.created_at := at;
  NEW.hash := encode(sha256(convert_to(coalesce(state.hash, '') || jsonb_build_array(
    NEW.id, NEW.user_id, NEW.seq, NEW.from_plan, NEW.plan,
    (extract(epoch FROM NEW.until) * 1000)::int8, NEW.reason, NEW.actor, NEW.idempotency_key,
    NEW.trail_seq, (extract(epoch FROM NEW.created_at) * 1000)::int8)::text, 'UTF8')), 'hex');
  RETURN NEW;
END;
$$;
-- ledger:end functions/credit_plan_change_prepare.sql
--> statement-breakpoint
-- ledger:source functions/credit_plan_lapse.sql
-- Ends a user's time-bound plan that is past its `until`: writes the plan change back to the
-- default plan, with reason 'lapsed' and no actor (credit_plan_change_prepare recognises that
-- row as the lapse itself), and returns the default plan. Called under the user's lock, by
-- the first write that needs the plan after it lapsed (credit_tx_prepare for a deduction or
-- a hold, credit_plan_change_prepare for the next change), so the lapse is written once, in
-- the user's order, and a plan is never used past its end; reads compute it without writing.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_lapse"(user_id uuid) RETURNS text
LANGUAGE sql
AS $$
  INSERT INTO "public"."CreditPlanChange" (user_id, plan, reason)
    SELECT credit_plan_lapse.user_id, d.plan, 'lapsed'
      FROM "credit_ledger"."credit_plan" d WHERE d.is_default
  RETURNING plan
$$;
-- ledger:end functions/credit_plan_lapse.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_refund_cap.sql
-- Rule: the refunds of a deduction never add up to more than it. A refund with refund_of
-- names a deduction of its user and feature (BC004) that took credits (one an unlimited plan
-- covered took none, so there is nothing to give back), and with the refunds before it stays
-- within that deduction (BC003); it cannot run under REPEATABLE READ (BC007), whose snapshot
-- would not see a refund committed after it was taken, so two refunds could both pass. The
-- user's lock, which the caller holds, serialises the refunds of the deduction (it is the
-- same user's): each one here sees those committed before it. Only trail rows count, not
-- rows of a table that inherits from it. A retry of the refund that used the deduction up is
-- a replay, not an excess: it is reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_refund_cap"(
  user_id uuid, feature_type "public"."feature_type", amount integer, refund_of uuid, idempotency_key text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  target "public"."CreditTransaction"%ROWTYPE;
  refunded bigint;
BEGIN
  IF current_setting('transaction_isolation') = 'repeatable read' THEN
    RAISE EXCEPTION 'a refund of a deduction cannot run under REPEATABLE READ'
      USING ERRCODE = 'BC007', HINT = 'Use READ COMMITTED (the default) or SERIALIZABLE.';
  END IF;
  SELECT * INTO target FROM "public"."CreditTransaction" t
    WHERE t.id = credit_rule_refund_cap.refund_of AND t.user_id = credit_rule_refund_cap.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF NOT FOUND OR target.operation <> 'deduct' OR target.feature_type <> credit_rule_refund_cap.feature_type
     OR target.covered_by_plan IS NOT NULL THEN
    RAISE EXCEPTION 'refund_of % is not a % deduction of user %', refund_of, feature_type, user_id
      USING ERRCODE = 'BC004',
            DETAIL = json_build_object('refundOf', refund_of,
              'reason', CASE WHEN NOT FOUND THEN
                               CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                                                  WHERE t.id = credit_rule_refund_cap.refund_of)
                                    THEN 'other_user' ELSE 'not_found' END
                             WHEN target.operation <> 'deduct' THEN 'not_a_deduction'
                             WHEN target.covered_by_plan IS NOT NULL THEN 'covered_by_plan'
                             ELSE 'other_feature' END)::text;
  END IF;
  SELECT coalesce(sum(t.amount), 0) INTO refunded FROM "public"."CreditTransaction" t
    WHERE t.refund_of = credit_rule_refund_cap.refund_of AND t.user_id = credit_rule_refund_cap.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF refunded + amount > target.amount THEN
    ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
    RAISE EXCEPTION 'refund of % would exceed deduction % (% deducted, % refunded already)',
        amount, refund_of, target.amount, refunded
      USING ERRCODE = 'BC003',
            DETAIL = json_build_object('refundOf', refund_of, 'deducted', target.amount,
              'refunded', refunded, 'requested', amount)::text;
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_refund_cap.sql
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
  RETURN NULL;
END;
$$;
-- ledger:end functions/credit_tx_apply.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_hash.sql
-- The hash of a trail row: sha256 over the previous row's hash and this row's fields, as
-- jsonb text (deterministic: jsonb normalises key order and number spelling) with the times
-- as epoch milliseconds (their text form would depend on the session's TimeZone and
-- DateStyle). The empty string stands for "no previous row". `credits:verify` recomputes it
-- with its own copy of this formula, so replacing this function cannot hide an edit.
-- No SET clause, so that PostgreSQL inlines it into the trigger (a function with one costs a
-- call per row); instead every name in it is qualified, so that no caller's search_path can
-- change what it computes. `extension` holds the columns added after the hold columns, with
-- the NULL ones left out (jsonb_strip_nulls): a row with none of them set hashes as it did
-- before they existed, so earlier rows verify unchanged, and a later column is one more key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_hash"(
  prev text, id uuid, user_id uuid, seq bigint, operation "public"."operation_type",
  feature_type "public"."feature_type", amount integer, balance_after integer,
  created_at timestamptz, idempotency_key text, refund_of uuid, metadata jsonb,
  hold_id uuid, hold_expires_at timestamptz, extension jsonb
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
    coalesce(prev, '') OPERATOR(pg_catalog.||) ((pg_catalog.jsonb_build_array(
      id, user_id, seq, operation::pg_catalog.text, feature_type::pg_catalog.text, amount,
      balance_after, (extract(epoch FROM created_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,
      idempotency_key, refund_of, metadata
    ) OPERATOR(pg_catalog.||) CASE WHEN hold_id IS NULL AND hold_expires_at IS NULL THEN '[]'::pg_catalog.jsonb
      ELSE pg_catalog.jsonb_build_array(hold_id,
             (extract(epoch FROM hold_expires_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8) END)
    OPERATOR(pg_catalog.||) CASE WHEN extension IS NULL OR extension OPERATOR(pg_catalog.=) '{}'::pg_catalog.jsonb
      THEN '[]'::pg_catalog.jsonb ELSE pg_catalog.jsonb_build_array(extension) END
    )::pg_catalog.text, 'UTF8')), 'hex')
$$;
-- ledger:end functions/credit_tx_hash.sql
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

  -- The user's due holds are given back first (credit_expire_due_holds), as of this row's
  -- time. Open holds change only with a write of their user, which moves its head: with the
  -- head the same in the snapshot as under the lock, `next_expiry` is exact, and when it is
  -- not due (the common case: no open hold at all) nothing is scanned. An expire row expires
  -- nothing itself.
  at := date_trunc('milliseconds', clock_timestamp());
  IF head >= 0 AND NEW.operation <> 'expire'
     AND (census.stale OR census.next_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_holds"(NEW.user_id, NEW.hold_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  available := CASE WHEN chat THEN chats ELSE credits END;

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
    NEW.balance_after := NEW.amount;
  ELSE
    IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
      ok := "credit_ledger"."credit_rule_refund_cap"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.refund_of, NEW.idempotency_key);
    ELSIF NEW.hold_id IS NOT NULL THEN
      held := "credit_ledger"."credit_rule_hold_close"(NEW.user_id, NEW.operation, NEW.feature_type,
        NEW.amount, NEW.hold_id, at);
      -- A hold an unlimited plan covered is closed as it was taken: moving no balance.
      NEW.covered_by_plan := (SELECT h.covered_by_plan FROM "public"."CreditHold" h WHERE h.id = NEW.hold_id);
    ELSIF NEW.operation = 'hold' THEN
      ok := "credit_ledger"."credit_rule_hold_expiry"(NEW.hold_expires_at, at);
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
    jsonb_strip_nulls(jsonb_build_object('covered_by_plan', NEW.covered_by_plan, 'actor', NEW.actor)));
  RETURN NEW;
END;
$$;
-- ledger:end functions/credit_tx_prepare.sql
--> statement-breakpoint
-- ledger:source triggers/CreditPlanChange.sql
-- "CreditPlanChange"'s triggers: credit_plan_change_prepare numbers, checks and hashes a
-- change under the user's lock, credit_plan_change_apply makes it the user's current plan,
-- and the chain is append-only (rows leave it only with their user), like the trail.
DROP TRIGGER IF EXISTS "credit_plan_change_prepare" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_prepare" BEFORE INSERT ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_change_prepare"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_apply" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_apply" AFTER INSERT ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_change_apply"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_append_only" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_append_only" BEFORE UPDATE OR DELETE ON "public"."CreditPlanChange"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_plan_change_no_truncate" ON "public"."CreditPlanChange";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_change_no_truncate" BEFORE TRUNCATE ON "public"."CreditPlanChange"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
-- ledger:end triggers/CreditPlanChange.sql
--> statement-breakpoint
-- ledger:source triggers/credit_plan.sql
-- Every change of a plan is recorded (credit_plan_audit).
DROP TRIGGER IF EXISTS "credit_plan_audit" ON "credit_ledger"."credit_plan";
--> statement-breakpoint
CREATE TRIGGER "credit_plan_audit" AFTER INSERT OR UPDATE OR DELETE ON "credit_ledger"."credit_plan"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_plan_audit"();
-- ledger:end triggers/credit_plan.sql
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
-- role may execute it: it can do only what that role's own statements could. The plans and
-- the users' current plans are readable by every role (an app shows its plans, a balance read
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
GRANT SELECT ON "credit_ledger"."credit_plan", "credit_ledger"."user_plan" TO PUBLIC;
-- ledger:end privileges.sql
