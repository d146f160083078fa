-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.
-- ledger:removed functions/credit_rule_installed.sql
-- (replaced by credit_rule_ledger_triggers: dropped at the end of this migration)
-- ledger:removed functions/credit_rule_no_foreign_trigger.sql
-- (replaced by credit_rule_no_foreign_triggers: dropped at the end of this migration)

-- ledger:source functions/credit_rule_daily_limit.sql
-- Rule (BC020): what a user takes for a feature in one UTC day (its deductions and holds
-- dated from midnight UTC) stays within that feature's daily limit, when
-- credit_ledger.credit_limit has one. A hold counts in full when it is taken: what it gives
-- back later does not make room again, so the limit bounds what could be charged. The day is
-- UTC's, whatever the session's TimeZone. The user's lock (the caller holds it) serialises
-- the user's writes, so two writes cannot both see the same room. A retry of a request that
-- already took the room is a replay, reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_daily_limit"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text,
  at timestamptz, max_amount integer
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  day_start timestamptz;
  used bigint;
BEGIN
  IF max_amount IS NULL THEN
    RETURN true;
  END IF;
  day_start := date_trunc('day', at, 'UTC');
  -- credit_tx_user_created_at_idx: this user's rows of the day only.
  SELECT coalesce(sum(t.amount), 0) INTO used FROM "public"."CreditTransaction" t
   WHERE t.user_id = credit_rule_daily_limit.user_id AND t.created_at >= day_start
     AND t.feature_type = credit_rule_daily_limit.feature_type AND t.operation IN ('deduct', 'hold')
     AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF used + amount <= max_amount THEN
    RETURN true;
  END IF;
  IF idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditTransaction" t
        WHERE t.user_id = credit_rule_daily_limit.user_id AND t.idempotency_key = credit_rule_daily_limit.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  RAISE EXCEPTION 'user % has taken % of its daily limit of % for %, so % more would exceed it', user_id, used, max_amount, feature_type, amount
    USING ERRCODE = 'BC020',
          DETAIL = json_build_object('userId', user_id, 'featureType', feature_type, 'period', 'day',
            'limit', max_amount, 'used', used, 'requested', amount,
            'resetsAt', day_start + interval '24 hours')::text,
          HINT = 'The limit is a row of credit_ledger.credit_limit, changed by the owner in a migration.';
END;
$$;
-- ledger:end functions/credit_rule_daily_limit.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_ledger_triggers.sql
-- Rule (BC009): a row is only written when the rest of the ledger will apply and guard it:
-- every ledger trigger present, enabled, on its own table, with its own function and events,
-- and plain (no WHEN clause, column list or deferral that could make it skip a row). With
-- credit_tx_apply disabled, say, a row would be recorded but never applied; with
-- credit_hold_guard disabled, an open hold could be deleted and never expire.
-- credit_tx_prepare counts the ones that are not so (`missing`, in the statement that locks
-- the user); every rule returns true or raises, so that it is called as an expression (a
-- fraction of a PERFORM's cost).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_ledger_triggers"(missing bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF missing > 0 THEN
    RAISE EXCEPTION 'the credits ledger is not installed: a ledger trigger is missing, disabled or changed'
      USING ERRCODE = 'BC009', HINT = 'Run the migrations (pnpm db:migrate) and re-enable the triggers; pnpm credits:verify lists what is wrong.';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_ledger_triggers.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_no_foreign_triggers.sql
-- Rule (BC017): no trigger that is not the ledger's runs inside a write with a function the
-- tables' owner does not own. A role with the TRIGGER privilege (GRANT ALL grants it) could
-- otherwise run code of its own in the middle of the write, after the rules were checked:
-- set the balance credit_tx_apply's UPDATE writes, or change a row after credit_tx_prepare
-- hashed it. The owner's own triggers are the owner's to answer for (credits:verify lists
-- every trigger that is not the ledger's); a built-in function (pg_catalog) is nobody's, and
-- counts as foreign. `foreign_count` is credit_tx_prepare's count of the triggers that run inside a
-- write (on the trail or "CreditHold", any; on "User", those that fire on UPDATE) with a
-- function that is not one of the ledger's: the catalog is only read again, for their
-- functions' owners, when there is one.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_no_foreign_triggers"(relid oid, foreign_count bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF foreign_count = 0 THEN
    RETURN true;
  END IF;
  SELECT string_agg(format('%I on %s (function %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc), ', ' ORDER BY t.tgname)
    INTO foreign_list
    FROM pg_trigger t
   WHERE t.tgrelid IN (relid, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
     AND NOT t.tgisinternal AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0)
     AND NOT EXISTS (SELECT 1 FROM pg_proc p
                      WHERE p.oid = t.tgfoid AND p.pronamespace <> 'pg_catalog'::regnamespace
                        AND p.proowner = (SELECT c.relowner FROM pg_class c
                                           WHERE c.oid = '"public"."CreditTransaction"'::regclass));
  IF foreign_list IS NOT NULL THEN
    RAISE EXCEPTION 'a trigger that is not the ledger''s runs inside ledger writes: %', foreign_list
      USING ERRCODE = 'BC017', DETAIL = json_build_object('triggers', foreign_list)::text,
            HINT = 'Its function could change a balance or a row after the ledger checked it. Drop the trigger, or have the owner of the ledger tables own its function.';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_no_foreign_triggers.sql
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
    INSERT INTO "public"."CreditHold" (id, user_id, amount, feature_type, expires_at, created_at)
      VALUES (NEW.id, NEW.user_id, NEW.amount, NEW.feature_type, NEW.hold_expires_at, NEW.created_at);
  ELSIF NEW.hold_id IS NOT NULL THEN
    DELETE FROM "public"."CreditHold" WHERE id = NEW.hold_id;
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
  -- triggers and foreign keys, the feature's daily limit, and when this user's next open hold
  -- is due. Its subqueries read the statement's snapshot, which may be older than the row the
  -- lock returns (a write of this user that committed while this one waited); `seen_seq` is
  -- the head in that snapshot, so a difference says the hold figure may be stale.
  -- The census reads pg_trigger by its index on tgrelid only, with no join on the common path
  -- (each join cost ~15 µs a write): the rules read more only when a count is not 0.
  SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash,
         -- The ledger's triggers (table, name, function, pg_trigger.tgtype) that are not present,
         -- enabled, with their own function and events, and plain (credit_rule_ledger_triggers).
         -- Adding one is one line here.
         (SELECT count(*)
            FROM (VALUES (TG_RELID, 'credit_tx_prepare', '"credit_ledger"."credit_tx_prepare"()'::regprocedure, 7),
                         (TG_RELID, 'credit_tx_apply', '"credit_ledger"."credit_tx_apply"()'::regprocedure, 5),
                         (TG_RELID, 'credit_tx_append_only', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 27),
                         (TG_RELID, 'credit_tx_no_truncate', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 34),
                         ('"public"."User"'::regclass, 'user_ledger_guard', '"credit_ledger"."user_ledger_guard"()'::regprocedure, 19),
                         ('"public"."User"'::regclass, 'user_ledger_open', '"credit_ledger"."user_ledger_open"()'::regprocedure, 7),
                         ('"public"."User"'::regclass, 'user_ledger_opening', '"credit_ledger"."user_ledger_opening"()'::regprocedure, 5),
                         ('"public"."User"'::regclass, 'user_ledger_delete', '"credit_ledger"."user_ledger_delete"()'::regprocedure, 11),
                         ('"public"."CreditHold"'::regclass, 'credit_hold_guard', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 31),
                         ('"public"."CreditHold"'::regclass, 'credit_hold_no_truncate', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 34))
                 AS own(relid, name, fn, type)
           WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t
                              WHERE t.tgrelid = own.relid AND t.tgname = own.name AND t.tgfoid = own.fn
                                AND t.tgtype = own.type AND t.tgenabled IN ('O', 'A') AND t.tgqual IS NULL
                                AND t.tgattr::text = '' AND NOT t.tgdeferrable AND t.tgnargs = 0)) AS missing,
         -- Triggers that run inside a write (on the trail or "CreditHold", any; on "User", those
         -- firing on UPDATE) with a function that is not one of the ledger's
         -- (credit_rule_no_foreign_triggers).
         (SELECT count(*) FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
             AND NOT t.tgisinternal
             AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0)
             AND t.tgfoid NOT IN ('"credit_ledger"."credit_tx_prepare"()'::regprocedure,
                                  '"credit_ledger"."credit_tx_apply"()'::regprocedure,
                                  '"credit_ledger"."credit_tx_append_only"()'::regprocedure,
                                  '"credit_ledger"."user_ledger_guard"()'::regprocedure,
                                  '"credit_ledger"."credit_hold_guard"()'::regprocedure)) AS foreign_triggers,
         -- Foreign keys onto the trail or "CreditHold" from a table the owner does not own
         -- (credit_rule_no_foreign_reference): each has internal triggers on the table it
         -- references, whose tgconstrrelid is the referencing table. The ledger's own link only
         -- its three tables; another's owner is looked up only for those that do not.
         (SELECT count(*) FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
             AND t.tgisinternal
             AND t.tgconstrrelid NOT IN ('"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass,
                                         '"public"."User"'::regclass, TG_RELID)
             AND NOT EXISTS (SELECT 1 FROM pg_class r, pg_class c
                              WHERE r.oid = t.tgconstrrelid AND c.oid = '"public"."CreditTransaction"'::regclass
                                AND r.relowner = c.relowner)) AS foreign_keys,
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           (SELECT l.max_amount FROM "credit_ledger"."credit_limit" l
             WHERE l.feature_type = NEW.feature_type AND l.period = 'day') END AS daily_limit,
         (SELECT min(h.expires_at) FROM "public"."CreditHold" h WHERE h.user_id = NEW.user_id) AS next_expiry,
         (SELECT s.ledger_seq FROM "public"."User" s WHERE s.id = NEW.user_id) AS seen_seq
    INTO census FROM "public"."User" u WHERE u.id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  credits := census.free_credits;
  chats := census.free_chat_messages;
  head := census.ledger_seq;
  head_hash := census.ledger_hash;

  -- A rule is called when its first, cheap test says it may refuse or has work to do: a
  -- PL/pgSQL call costs a few µs, and a plain deduction would otherwise pay for every rule.
  IF census.missing > 0 THEN
    ok := "credit_ledger"."credit_rule_ledger_triggers"(census.missing);
  END IF;
  IF census.foreign_triggers > 0 THEN
    ok := "credit_ledger"."credit_rule_no_foreign_triggers"(TG_RELID, census.foreign_triggers);
  END IF;
  IF census.foreign_keys > 0 THEN
    ok := "credit_ledger"."credit_rule_no_foreign_reference"(TG_RELID, census.foreign_keys);
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  END IF;
  IF NEW.hold_id IS NOT NULL OR NEW.hold_expires_at IS NOT NULL OR NEW.operation IN ('hold', 'settle', 'void', 'expire') THEN
    ok := "credit_ledger"."credit_rule_hold_columns"(NEW.operation, NEW.hold_id, NEW.hold_expires_at);
  END IF;

  -- The user's due holds are given back first (credit_expire_due_holds), as of this row's
  -- time. Open holds change only with a write of their user, which moves its head: with the
  -- head the same in the snapshot as under the lock, `next_expiry` is exact, and when it is
  -- not due (the common case: no open hold at all) nothing is scanned. An expire row expires
  -- nothing itself.
  at := date_trunc('milliseconds', clock_timestamp());
  IF head >= 0 AND NEW.operation <> 'expire'
     AND (census.seen_seq <> head OR census.next_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_holds"(NEW.user_id, NEW.hold_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  available := CASE WHEN chat THEN chats ELSE credits END;

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
      -- The hold's row in "CreditHold", which credit_tx_apply deletes: locked here, where the
      -- wait is bounded by lock_timeout (a role with UPDATE on "CreditHold" can hold it), so
      -- that credit_tx_apply needs no lock_timeout of its own.
      PERFORM 1 FROM "public"."CreditHold" h WHERE h.id = NEW.hold_id FOR UPDATE;
    ELSIF NEW.operation = 'hold' THEN
      ok := "credit_ledger"."credit_rule_hold_expiry"(NEW.hold_expires_at, at);
    END IF;
    next_balance := available::bigint + "credit_ledger"."credit_balance_effect"(NEW.operation, NEW.amount, held);
    IF next_balance IS NULL THEN
      RAISE EXCEPTION 'the credits ledger does not know what operation % does to a balance', NEW.operation
        USING ERRCODE = 'BC009', HINT = 'Add it to credit_ledger.credit_balance_effect (ledger/functions/credit_balance_effect.sql) and run pnpm db:ledger.';
    END IF;
    IF next_balance < available THEN
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
                    WHERE h.user_id = NEW.user_id AND (h.feature_type = 'chat_message') = chat)
             ELSE 0 END,
        NEW.hold_id IS NULL);
    END IF;
    NEW.balance_after := next_balance;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := at;
  NEW.hash := "credit_ledger"."credit_tx_hash"(head_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at);
  RETURN NEW;
END;
$$;
-- ledger:end functions/credit_tx_prepare.sql
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
-- role may execute it: it can do only what that role's own statements could.
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
-- ledger:end privileges.sql
--> statement-breakpoint

-- The two rules whose arguments changed (a census with no join on the common path counts
-- what is wrong, not what is right): their old signatures go, once nothing calls them.
DROP FUNCTION "credit_ledger"."credit_rule_installed"(bigint, bigint);
--> statement-breakpoint
DROP FUNCTION "credit_ledger"."credit_rule_no_foreign_trigger"(oid, bigint, bigint);
