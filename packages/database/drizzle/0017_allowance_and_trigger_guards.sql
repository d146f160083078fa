-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source functions/credit_allowance_grant.sql
-- Grants the user its plan's allowance for the period that holds `at`, unless it was granted
-- in this period already: one grant row per balance the plan allows (source 'allowance',
-- expiring at the period's end, metadata naming the plan and the period), each a statement of
-- its own. The plan is the one the user is on at `at` (a plan past its `until` is the default
-- plan). Exactly once per period: user_allowance is moved first, under the user's lock (the
-- caller holds it), so the rows written here see it granted and write no allowance of their
-- own. Returns whether it granted anything. A user who changes plan within a period keeps
-- what that period granted, and is granted the new plan's allowance from the next period on.
-- A balance that, with its open holds, has less room than the allowance below the largest
-- int4 is granted what fits (nothing when nothing does): a grant past it would be refused, and
-- with it every write and balance read of the user. The rows are inserted as the owner (also
-- for credit_allowance_apply, whoever calls it): no trigger of another role may run inside
-- them (BC017), since one named to fire first would run as the owner.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_allowance_grant"(user_id uuid, at timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  plan_name text;
  allowance record;
  starts timestamptz;
  ends timestamptz;
  room record;
  tag jsonb;
BEGIN
  plan_name := coalesce(
    (SELECT p.plan FROM "credit_ledger"."user_plan" p
      WHERE p.user_id = credit_allowance_grant.user_id AND (p.until IS NULL OR p.until > at)),
    (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default));
  SELECT c.allowance_credits AS credits, c.allowance_chat_messages AS chats, c.allowance_period AS period
    INTO allowance FROM "credit_ledger"."credit_plan" c WHERE c.plan = plan_name;
  IF allowance.period IS NULL THEN
    RETURN false;
  END IF;
  starts := date_trunc(allowance.period, at, 'UTC');
  IF EXISTS (SELECT 1 FROM "credit_ledger"."user_allowance" a
              WHERE a.user_id = credit_allowance_grant.user_id AND a.period_start >= starts) THEN
    RETURN false;
  END IF;
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
  INSERT INTO "credit_ledger"."user_allowance" AS a (user_id, period_start, plan)
    VALUES (credit_allowance_grant.user_id, starts, plan_name)
    ON CONFLICT ON CONSTRAINT user_allowance_pkey DO UPDATE SET period_start = EXCLUDED.period_start, plan = EXCLUDED.plan;
  -- The period's end in UTC, whatever the session's TimeZone (a month is a calendar month).
  ends := ((starts AT TIME ZONE 'UTC') + ('1 ' || allowance.period)::interval) AT TIME ZONE 'UTC';
  tag := jsonb_build_object('allowance', jsonb_build_object('plan', plan_name, 'period', allowance.period,
    'starts', to_char(starts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
  SELECT 2147483647::int8 - u.free_credits - coalesce((SELECT sum(h.amount) FROM "public"."CreditHold" h
           WHERE h.user_id = u.id AND h.feature_type <> 'chat_message' AND h.covered_by_plan IS NULL), 0) AS credits,
         2147483647::int8 - u.free_chat_messages - coalesce((SELECT sum(h.amount) FROM "public"."CreditHold" h
           WHERE h.user_id = u.id AND h.feature_type = 'chat_message' AND h.covered_by_plan IS NULL), 0) AS chats
    INTO room FROM "public"."User" u WHERE u.id = credit_allowance_grant.user_id;
  IF allowance.credits IS NOT NULL AND least(allowance.credits, room.credits) > 0 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, least(allowance.credits, room.credits), 'grant', 'none', 'allowance', ends, tag);
  END IF;
  IF allowance.chats IS NOT NULL AND least(allowance.chats, room.chats) > 0 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, least(allowance.chats, room.chats), 'grant', 'chat_message', 'allowance', ends, tag);
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_allowance_grant.sql
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
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  END IF;

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
-- The row is inserted as the owner: a trigger of another role on "CreditPlanChange", named to
-- fire before the ledger's, would run as the owner and could skip the lapse (RETURN NULL), so
-- none may exist (BC017).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_lapse"(user_id uuid) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  lapsed_to text;
BEGIN
  ok := "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditPlanChange"'::regclass, 1);
  INSERT INTO "public"."CreditPlanChange" (user_id, plan, reason)
    SELECT credit_plan_lapse.user_id, d.plan, 'lapsed'
      FROM "credit_ledger"."credit_plan" d WHERE d.is_default
  RETURNING plan INTO lapsed_to;
  RETURN lapsed_to;
END;
$$;
-- ledger:end functions/credit_plan_lapse.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_allowance_grant.sql
-- Rule (BC016): a grant of source 'allowance' is the ledger's own, written by
-- credit_allowance_grant: for the period user_allowance says was just granted (its metadata
-- names that period's start and plan), expiring at that period's end, at most the plan's
-- allowance, and the first of its balance in the period. So no other insert can pass for an
-- allowance (support, the figures and credits:verify can tell them apart), nor be one twice.
-- Called only for such grants.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_allowance_grant"(
  user_id uuid, feature_type "public"."feature_type", amount integer, expires_at timestamptz, metadata jsonb
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  granted record;
  allowed integer;
BEGIN
  SELECT a.period_start, a.plan, c.allowance_period AS period,
         CASE WHEN credit_rule_allowance_grant.feature_type = 'chat_message' THEN c.allowance_chat_messages ELSE c.allowance_credits END AS amount
    INTO granted
    FROM "credit_ledger"."user_allowance" a JOIN "credit_ledger"."credit_plan" c ON c.plan = a.plan
   WHERE a.user_id = credit_rule_allowance_grant.user_id;
  allowed := granted.amount;
  IF granted.period_start IS NULL
     OR metadata IS DISTINCT FROM jsonb_build_object('allowance', jsonb_build_object('plan', granted.plan,
          'period', granted.period, 'starts', to_char(granted.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
     OR expires_at IS DISTINCT FROM ((granted.period_start AT TIME ZONE 'UTC') + ('1 ' || granted.period)::interval) AT TIME ZONE 'UTC'
     OR allowed IS NULL OR credit_rule_allowance_grant.amount > allowed
     OR EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                 WHERE t.user_id = credit_rule_allowance_grant.user_id AND t.created_at >= granted.period_start
                   AND t.source = 'allowance'
                   AND (t.feature_type = 'chat_message') = (credit_rule_allowance_grant.feature_type = 'chat_message')
                   AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass)) THEN
    RAISE EXCEPTION 'a grant of source allowance is the ledger''s own, once a period'
      USING ERRCODE = 'BC016',
            DETAIL = json_build_object('field', 'source', 'reason', 'allowance is granted by the ledger, once a period')::text;
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_allowance_grant.sql
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
--   BC020 a cap of credit_ledger.credit_limit (per plan, feature and period) would be exceeded
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
           EXISTS (SELECT 1 FROM "credit_ledger"."credit_limit" l WHERE l.feature_type = NEW.feature_type) END AS capped,
         (SELECT min(h.expires_at) FROM "public"."CreditHold" h WHERE h.user_id = NEW.user_id) AS next_expiry,
         (SELECT min(g.expires_at) FROM "credit_ledger"."credit_grant" g
           WHERE g.user_id = NEW.user_id AND g.remaining > 0) AS next_grant_expiry,
         (SELECT s.xmin FROM "public"."User" s WHERE s.id = NEW.user_id) IS DISTINCT FROM u.xmin AS stale,
         p.until AS plan_until,
         -- The period of the plan's allowance, and the last period it was granted in.
         (SELECT c.allowance_period FROM "credit_ledger"."credit_plan" c
           WHERE c.plan = coalesce(p.plan, (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default))) AS allowance_period,
         (SELECT a.period_start FROM "credit_ledger"."user_allowance" a WHERE a.user_id = NEW.user_id) AS allowance_start,
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
  -- Then the allowance of the period, at the user's first write in it (credit_allowance_grant:
  -- once per period, whatever the plan; its rows are written before this one). The census's
  -- plan may be stale or past its end: the function reads the plan again, and decides. Before
  -- the grants' expiries below, which then expire what is due by the time it moved `at` to.
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.plan_until <= at
          OR (census.allowance_period IS NOT NULL
              AND coalesce(census.allowance_start < date_trunc(census.allowance_period, at, 'UTC'), true))) THEN
    IF "credit_ledger"."credit_allowance_grant"(NEW.user_id, at) THEN
      at := date_trunc('milliseconds', clock_timestamp());
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
      IF NEW.source = 'allowance' THEN
        ok := "credit_ledger"."credit_rule_allowance_grant"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.grant_expires_at, NEW.metadata);
      END IF;
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
      -- A covered use still counts against the caps: a cap bounds use, on every plan.
      IF census.capped THEN
        ok := "credit_ledger"."credit_rule_caps"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at);
      END IF;
    ELSIF next_balance < available THEN
      IF next_balance < 0 THEN
        ok := "credit_ledger"."credit_rule_sufficient"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, available);
      END IF;
      IF census.capped THEN
        ok := "credit_ledger"."credit_rule_caps"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at);
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
-- ledger:source functions/user_ledger_delete.sql
-- A user is deleted with its trail (ON DELETE CASCADE), but never while a row of it is
-- written and not yet applied: the statement would then apply a deleted row, to a user
-- created again under the same id. Only deletions read the trail here. The cascades delete as
-- the tables' owner, so a trigger of another role on the trail, "CreditHold" or the plan
-- changes would run as the owner: refused first (BC017).
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_delete"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'DELETE' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_delete() runs only as the BEFORE DELETE trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditPlanChange"'::regclass, 1);
  IF EXISTS (SELECT 1 FROM "public"."CreditTransaction"
              WHERE user_id = OLD.id AND seq > greatest(OLD.ledger_seq, 0)) THEN
    RAISE EXCEPTION 'user % has a credit change written and not yet applied: it cannot be deleted by this statement', OLD.id
      USING ERRCODE = 'BC008', HINT = 'Delete the user in a statement of its own.';
  END IF;
  RETURN OLD;
END;
$$;
-- ledger:end functions/user_ledger_delete.sql
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
  -- The opening rows are inserted as the owner: a trigger of another role on the trail, named
  -- to fire before the ledger's own, would run as the owner and could skip them (RETURN
  -- NULL) before credit_tx_prepare's census ever ran. So the census comes first (BC017).
  IF NEW.free_credits > 0 OR NEW.free_chat_messages > 0 THEN
    PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
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
-- grants' sweeper, credit_grants_expire). Any role may also have a user's due allowance
-- granted (credit_allowance_apply): it grants only what is due, once. The plans, the users' current plans and the grants
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
GRANT SELECT ON "credit_ledger"."credit_plan", "credit_ledger"."user_plan", "credit_ledger"."credit_grant",
  "credit_ledger"."user_allowance" TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_grants_expire"(integer, uuid) TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_allowance_apply"(uuid) TO PUBLIC;
-- ledger:end privileges.sql
