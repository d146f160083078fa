-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source schema.sql
-- The ledger's functions live in a schema of their own, in which only its owner can create
-- anything. In "public", any role with CREATE there (PUBLIC has it on PostgreSQL 14 and
-- earlier, and pg_upgrade keeps that; many hosted setups grant it) could add an overload of a
-- ledger function: a better match for a call than ours would run that role's code as the
-- owner inside every ledger write, and one with a defaulted extra argument would make every
-- call ambiguous (42725). Here no other role can create an overload, so every call inside
-- the ledger resolves to the ledger's own function.
--
-- A schema of that name created beforehand by another role would carry its objects and its
-- owner's grants with it: the migration refuses it rather than move in. Roles other than the
-- owner get USAGE only (to call the one function meant for them, credit_holds_expire), and
-- any grant of CREATE that default privileges made is taken back.
DO $$
DECLARE
  existing_owner regrole;
  grantee text;
BEGIN
  SELECT nspowner::regrole INTO existing_owner FROM pg_catalog.pg_namespace WHERE nspname = 'credit_ledger';
  IF existing_owner IS NULL THEN
    CREATE SCHEMA credit_ledger;
  ELSIF existing_owner <> current_user::regrole THEN
    RAISE EXCEPTION 'schema credit_ledger exists and belongs to %, not to %, who runs the migrations', existing_owner, current_user
      USING HINT = 'Drop or rename that schema (after checking what it holds), then run the migrations again.';
  END IF;
  FOR grantee IN
    SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
     WHERE n.nspname = 'credit_ledger' AND a.grantee <> n.nspowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA credit_ledger FROM %s', grantee);
  END LOOP;
END;
$$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA credit_ledger TO PUBLIC;
-- ledger:end schema.sql
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
                  AND t.hold_expires_at = NEW.expires_at AND t.created_at = NEW.created_at)
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
-- ledger:source functions/credit_holds_expire.sql
-- The sweeper: expires up to max_rows holds past their expiry, earliest first, each with an
-- expire row of its own, and returns those rows. It runs as its caller (SECURITY INVOKER):
-- it can do no more than the caller's own INSERT of those expire rows could, so a role
-- without SELECT and UPDATE on the ledger's tables and INSERT on the trail cannot run it,
-- lock users through it, or read trail rows with it; the app role's grants (the README's)
-- are what it needs. The expire rows it inserts are checked by the triggers like any other.
-- Each user's lock is taken first, as every ledger write takes it; users another session is
-- writing are skipped (that write expires their due holds itself) unless one user is asked
-- for, which waits (as long as lock_timeout allows). After the lock, a hold closed meanwhile
-- is no longer listed, so concurrent sweepers, settlements and voids never close one twice
-- (and credit_tx_hold_close_idx would refuse it). A hold that cannot be expired (a write of
-- its user refused) is reported with a WARNING and skipped: one user's refusal must not stop
-- the sweep for everyone else. Without row_security = off: a policy that hides a hold from
-- the caller leaves it for the user's next write, which expires it as the owner.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_holds_expire"(max_rows integer, only_user uuid DEFAULT NULL)
RETURNS SETOF "public"."CreditTransaction"
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
  h record;
  r "public"."CreditTransaction"%ROWTYPE;
  done integer := 0;
  now_ts timestamptz := clock_timestamp();
  failed_state text;
  failed_message text;
BEGIN
  IF max_rows < 0 THEN
    RAISE EXCEPTION 'max_rows must be 0 or more, not %', max_rows USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- max_rows counts holds expired, not holds looked at: the earliest ones may belong to users
  -- that are busy (skipped), and must not starve the rest.
  FOR h IN SELECT id, user_id FROM "public"."CreditHold"
            WHERE expires_at <= now_ts AND (only_user IS NULL OR user_id = only_user)
            ORDER BY expires_at, id LOOP
    EXIT WHEN done >= max_rows;
    IF only_user IS NULL THEN
      PERFORM 1 FROM "public"."User" WHERE id = h.user_id FOR NO KEY UPDATE SKIP LOCKED;
    ELSE
      PERFORM 1 FROM "public"."User" WHERE id = h.user_id FOR NO KEY UPDATE;
    END IF;
    CONTINUE WHEN NOT FOUND;
    BEGIN
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        SELECT user_id, amount, 'expire', feature_type, id FROM "public"."CreditHold" WHERE id = h.id
        RETURNING * INTO r;
    EXCEPTION WHEN OTHERS THEN
      -- Missing privileges are the caller's to fix, for every hold alike; a serialization
      -- failure or deadlock (class 40) dooms the transaction. Those still stop the sweep.
      IF SQLSTATE = '42501' OR SQLSTATE LIKE '40%' THEN
        RAISE;
      END IF;
      GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
      RAISE WARNING 'hold % of user % was not expired: % (%)', h.id, h.user_id, failed_message, failed_state;
      r := NULL;
    END;
    CONTINUE WHEN r.id IS NULL;
    RETURN NEXT r;
    done := done + 1;
    r := NULL;
  END LOOP;
END;
$$;
-- ledger:end functions/credit_holds_expire.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_append_only.sql
-- The trail is append-only. Rows leave it only with their user: the ON DELETE CASCADE from
-- "User" deletes them after the user row is gone, which is what this checks (in the real
-- "User", whatever TEMP table a session creates under that name; with row_security off, so
-- that a policy hiding the user makes this fail, never pass). Attached to another table with
-- a user_id (docs/scaling's idempotency key claims) it keeps that one append-only too.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_append_only"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW'
     AND NOT EXISTS (SELECT 1 FROM "public"."User" WHERE id = OLD.user_id) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only: % is refused', format('%I', TG_TABLE_NAME), TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Correct a balance with a new grant, deduct or refund row; rows are removed only by deleting their user.';
END;
$$;
-- ledger:end functions/credit_tx_append_only.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_apply.sql
-- AFTER INSERT on the trail: the row exists, so apply it to "User", unless the user's trail
-- moved on since the row was numbered, or the user is not the one it was numbered against (a
-- user deleted and created again under the same id, still waiting for its opening rows,
-- takes only those); then list a hold in "CreditHold", or remove the hold a row closes.
-- user_ledger_guard recognises the UPDATE on line 3 of this body on the call stack (one line,
-- so that the guard can compare it whole) and lets nothing else move a balance: change it
-- and its copy in user_ledger_guard together.
-- lock_timeout: a role with UPDATE on "CreditHold" can lock a hold's row, which the DELETE
-- below would wait for (see credit_tx_prepare).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_apply"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
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
-- ledger:source functions/credit_tx_hash.sql
-- The hash of a trail row: sha256 over the previous row's hash and this row's fields, as
-- jsonb text (deterministic: jsonb normalises key order and number spelling) with the times
-- as epoch milliseconds (their text form would depend on the session's TimeZone and
-- DateStyle). The empty string stands for "no previous row". `credits:verify` recomputes it
-- with its own copy of this formula, so replacing this function cannot hide an edit.
-- No SET clause, so that PostgreSQL inlines it into the trigger (a function with one costs a
-- call per row); instead every name in it is qualified, so that no caller's search_path can
-- change what it computes.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_hash"(
  prev text, id uuid, user_id uuid, seq bigint, operation "public"."operation_type",
  feature_type "public"."feature_type", amount integer, balance_after integer,
  created_at timestamptz, idempotency_key text, refund_of uuid, metadata jsonb,
  hold_id uuid, hold_expires_at timestamptz
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
    coalesce(prev, '') OPERATOR(pg_catalog.||) (pg_catalog.jsonb_build_array(
      id, user_id, seq, operation::pg_catalog.text, feature_type::pg_catalog.text, amount,
      balance_after, (extract(epoch FROM created_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,
      idempotency_key, refund_of, metadata
    ) OPERATOR(pg_catalog.||) CASE WHEN hold_id IS NULL AND hold_expires_at IS NULL THEN '[]'::pg_catalog.jsonb
      ELSE pg_catalog.jsonb_build_array(hold_id,
             (extract(epoch FROM hold_expires_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8) END
    )::pg_catalog.text, 'UTF8')), 'hex')
$$;
-- ledger:end functions/credit_tx_hash.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_is_trail.sql
-- Whether a relation is the trail: the table itself, or a partition of it when it is
-- partitioned (docs/scaling). Rows of any other table that inherits from it (an owner's DDL)
-- are never taken for trail rows, nor is a trigger function of the ledger attached to one.
-- Never NULL (pg_partition_root is NULL outside a partition tree): a NULL would make every
-- `IF NOT …` below skip its refusal. Qualified and without SET, like credit_tx_hash, so that
-- it is inlined.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_is_trail"(relation regclass) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT relation OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass
      OR coalesce(pg_catalog.pg_partition_root(relation)
                    OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass, false)
$$;
-- ledger:end functions/credit_tx_is_trail.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_prepare.sql
-- BEFORE INSERT on the trail: lock the user, check, number, date and hash the row. No side
-- effect here may survive the row being skipped (ON CONFLICT) or refused, so this only reads,
-- locks and writes the expire rows of the user's due holds (statements of their own, undone
-- with this one).
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
  closes boolean := NEW.operation IN ('settle', 'void', 'expire');
  u record;
  h record;
  available integer;
  next_balance bigint;
  target "public"."CreditTransaction"%ROWTYPE;
  closing "public"."CreditTransaction"%ROWTYPE;
  refunded bigint;
  at timestamptz;
  foreign_list text;
  trigger_holders text;
BEGIN
  -- Only as the trail's own trigger: the owner could attach this function to a table of its own.
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger"."credit_tx_is_trail"(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_prepare() runs only as the BEFORE INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;

  -- No trigger can be added to "User" or "CreditHold" from here to the end of the transaction
  -- (CREATE TRIGGER takes a lock this one conflicts with; the trail's own is held since the
  -- INSERT began), so the check of foreign triggers below stays true for the whole write. With
  -- only the row lock, a trigger created while this write waited after the check (for a
  -- refund_of row another session locked, say) fired in credit_tx_apply's UPDATE. It comes
  -- before the statement below, whose snapshot (READ COMMITTED) then sees every trigger
  -- committed before it.
  LOCK TABLE "public"."User", "public"."CreditHold" IN ROW EXCLUSIVE MODE;

  -- Every write of one user takes this lock first, so they apply one at a time, in seq order.
  -- One statement also reads what the checks below need, one round of the executor instead
  -- of three: whether the ledger is installed, and when this user's next open hold is due.
  -- Its subqueries read the statement's snapshot, which may be older than the row the lock
  -- returns (a write of this user that committed while this one waited); `seen_seq` is the
  -- head in that snapshot, so a difference says the hold figure may be stale.
  SELECT free_credits, free_chat_messages, ledger_seq, ledger_hash,
         -- A row is only written when the rest of the ledger will apply and guard it: every ledger
         -- trigger present, enabled, on its own table, with its own function and events, and plain
         -- (no WHEN clause, column list or deferral that could make it skip a row). With
         -- credit_tx_apply disabled, say, a row would be recorded but never applied; with
         -- credit_hold_guard disabled, an open hold could be deleted and never expire.
         (SELECT count(*) FROM pg_trigger t
            JOIN (VALUES (TG_RELID, 'credit_tx_prepare', '"credit_ledger"."credit_tx_prepare"()'::regprocedure, 7),
                         (TG_RELID, 'credit_tx_apply', '"credit_ledger"."credit_tx_apply"()'::regprocedure, 5),
                         (TG_RELID, 'credit_tx_append_only', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 27),
                         (TG_RELID, 'credit_tx_no_truncate', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 34),
                         ('"public"."User"'::regclass, 'user_ledger_guard', '"credit_ledger"."user_ledger_guard"()'::regprocedure, 19),
                         ('"public"."User"'::regclass, 'user_ledger_open', '"credit_ledger"."user_ledger_open"()'::regprocedure, 7),
                         ('"public"."User"'::regclass, 'user_ledger_opening', '"credit_ledger"."user_ledger_opening"()'::regprocedure, 5),
                         ('"public"."User"'::regclass, 'user_ledger_delete', '"credit_ledger"."user_ledger_delete"()'::regprocedure, 11),
                         ('"public"."CreditHold"'::regclass, 'credit_hold_guard', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 31),
                         ('"public"."CreditHold"'::regclass, 'credit_hold_no_truncate', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 34))
                 AS want(relid, name, fn, type)
              ON t.tgrelid = want.relid AND t.tgname = want.name
           WHERE t.tgfoid = want.fn AND t.tgtype = want.type AND t.tgenabled IN ('O', 'A')
             AND t.tgqual IS NULL AND t.tgattr::text = '' AND NOT t.tgdeferrable AND t.tgnargs = 0) AS installed,
         -- How many triggers run inside a ledger write: on the trail or "CreditHold" (any), or
         -- on "User" (those that fire on UPDATE). The ledger's own are 7 of them; any other is
         -- looked at below.
         (SELECT count(*) FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
             AND NOT t.tgisinternal
             AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0)) AS triggers,
         -- Foreign keys that point at the trail or "CreditHold" from a table the ledger's owner
         -- does not own. REFERENCES (part of GRANT ALL) and CREATE on any schema let a role
         -- make one and point it at a victim's hold: the hold could then never be closed, and
         -- every write of that user, and the sweeper, would fail on it. A foreign key creates
         -- internal triggers on the table it references, found here by the same index.
         (SELECT count(*) FROM pg_trigger t
            JOIN pg_constraint k ON k.oid = t.tgconstraint
            JOIN pg_class r ON r.oid = k.conrelid
           WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
             AND t.tgisinternal AND k.contype = 'f' AND k.confrelid = t.tgrelid
             AND r.relowner <> (SELECT c.relowner FROM pg_class c
                                 WHERE c.oid = '"public"."CreditTransaction"'::regclass)) AS foreign_keys,
         (SELECT min(expires_at) FROM "public"."CreditHold" WHERE user_id = NEW.user_id) AS next_expiry,
         (SELECT ledger_seq FROM "public"."User" WHERE id = NEW.user_id) AS seen_seq
    INTO u FROM "public"."User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  IF u.installed <> 10 THEN
    RAISE EXCEPTION 'the credits ledger is not installed: a ledger trigger is missing, disabled or changed'
      USING ERRCODE = 'BC009', HINT = 'Run the migrations (pnpm db:migrate) and re-enable the triggers; pnpm credits:verify lists what is wrong.';
  END IF;
  -- A trigger that is not the ledger's, running inside the write with a function the tables'
  -- owner does not own, is refused. A role with the TRIGGER privilege (GRANT ALL grants it)
  -- could otherwise run code of its own in the middle of the write, after the rules were
  -- checked: set the balance credit_tx_apply's UPDATE writes, or change a row after this
  -- trigger hashed it. The owner's own triggers are the owner's to answer for (credits:verify
  -- lists every trigger that is not the ledger's); a built-in function (pg_catalog) is
  -- nobody's, and counts as foreign. Only looked up when there is a trigger beyond the 7.
  IF u.triggers <> 7 THEN
    SELECT string_agg(format('%I on %s (function %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc), ', ' ORDER BY t.tgname)
      INTO foreign_list
      FROM pg_trigger t
     WHERE t.tgrelid IN (TG_RELID, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
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
  END IF;

  IF u.foreign_keys > 0 THEN
    SELECT string_agg(DISTINCT format('%I on %s (owner %s, references %s)', k.conname, k.conrelid::regclass,
                                      r.relowner::regrole, k.confrelid::regclass), ', ')
      INTO foreign_list
      FROM pg_trigger t
      JOIN pg_constraint k ON k.oid = t.tgconstraint
      JOIN pg_class r ON r.oid = k.conrelid
     WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
       AND t.tgisinternal AND k.contype = 'f' AND k.confrelid = t.tgrelid
       AND r.relowner <> (SELECT c.relowner FROM pg_class c
                           WHERE c.oid = '"public"."CreditTransaction"'::regclass);
    RAISE EXCEPTION 'a foreign key of a table the ledger''s owner does not own references a ledger table: %', foreign_list
      USING ERRCODE = 'BC019', DETAIL = json_build_object('constraints', foreign_list)::text,
            HINT = 'It could keep a hold from ever closing, or a user from being deleted. Drop the constraint, or have the owner of the ledger tables own its table.';
  END IF;

  -- Under REPEATABLE READ or SERIALIZABLE the statements above read the catalog as of the
  -- transaction's snapshot, while the executor fires the triggers the catalog has now: a
  -- trigger created after the snapshot was taken is not in pg_trigger here, and runs (one on
  -- "User" set a balance after the guard approved it). PL/pgSQL has no fresher view of the
  -- catalog to read; what can be seen is who could have created one. Besides the owner, only a
  -- role holding TRIGGER on these tables can: while any does, writes under those levels refuse.
  -- (A grant made after the snapshot is the owner's act, which credits:verify is for.)
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
      INTO trigger_holders
      FROM pg_class c, aclexplode(c.relacl) a
     WHERE c.oid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."User"'::regclass,
                     '"public"."CreditHold"'::regclass)
       AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner;
    IF trigger_holders IS NOT NULL THEN
      RAISE EXCEPTION 'under %, a ledger write cannot see a trigger created after its snapshot, and % may create one (TRIGGER on the ledger''s tables)',
          upper(current_setting('transaction_isolation')), trigger_holders
        USING ERRCODE = 'BC018', DETAIL = json_build_object('roles', trigger_holders)::text,
              HINT = 'Write at READ COMMITTED (the default), or REVOKE TRIGGER ON "User", "CreditTransaction", "CreditHold" FROM those roles.';
    END IF;
  END IF;

  -- The hold columns belong to hold rows and to the rows that close one.
  IF (NEW.hold_expires_at IS NOT NULL) <> (NEW.operation = 'hold') OR (NEW.hold_id IS NOT NULL) <> closes THEN
    RAISE EXCEPTION 'hold_expires_at is set on hold rows only, and hold_id on settle, void and expire rows only'
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', CASE WHEN closes OR NEW.hold_id IS NOT NULL THEN 'holdId' ELSE 'expiresInMs' END,
                                                          'reason', 'is set on hold rows (expiry) or closing rows (hold id) only')::text;
  END IF;

  -- Holds of this user past their expiry are given back first, each with an expire row of its
  -- own (a statement of its own, applied before this row is numbered): so no write or read
  -- of a user ever sees a hold past its expiry, and none needs a background job to. An expire
  -- row expires nothing itself. With the user's lock held, a hold is expired exactly once.
  -- A settlement or void of a due hold leaves that one hold alone: it is refused below
  -- (HOLD_EXPIRED), with the whole statement, so an expire row written here would vanish.
  -- Open holds change only with a write of their user, which moves its head: with the head
  -- the same in the snapshot as under the lock, `next_expiry` is exact, and when it is not
  -- due (the common case: no open hold at all) the scan below is skipped.
  -- Due means due at this row's time (`at`), which every check of an expiry below compares
  -- with: the row is dated first and the holds due by then are expired. Writing their expire
  -- rows takes time (a user with hundreds of due holds: tens of ms), and this row is dated
  -- after them, so it is dated again and the holds due by the new time are expired too, until
  -- none is (with the user's lock held, no hold is added meanwhile). Scanning with a time
  -- taken before the expire rows and dating the row after them left a hold that fell due in
  -- between open behind a row dated after its expiry.
  -- The time as a value, not clock_timestamp() in the condition: a volatile call there
  -- cannot bound the index scan, which would read every open hold of the user.
  at := date_trunc('milliseconds', clock_timestamp());
  IF u.ledger_seq >= 0 AND NEW.operation <> 'expire'
     AND (u.seen_seq <> u.ledger_seq OR u.next_expiry <= at) THEN
    LOOP
      FOR h IN SELECT id, amount, feature_type FROM "public"."CreditHold"
                WHERE user_id = NEW.user_id AND expires_at <= at
                  AND id IS DISTINCT FROM NEW.hold_id
                ORDER BY expires_at, id LOOP
        INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
          VALUES (NEW.user_id, h.amount, 'expire', h.feature_type, h.id);
      END LOOP;
      EXIT WHEN NOT FOUND;
      SELECT free_credits, free_chat_messages, ledger_seq, ledger_hash INTO u
        FROM "public"."User" WHERE id = NEW.user_id;
      at := date_trunc('milliseconds', clock_timestamp());
    END LOOP;
  END IF;
  available := CASE WHEN chat THEN u.free_chat_messages ELSE u.free_credits END;

  IF u.ledger_seq < 0 THEN
    -- The user was inserted by this very statement and its opening rows (written by
    -- user_ledger_opening at the statement's end) are not there yet: only they may come,
    -- free_credits first, each stating exactly the balance the user was created with, with
    -- the opening rows' own feature type and label.
    IF NEW.operation <> 'grant' OR chat <> (u.ledger_seq = -1 AND u.free_chat_messages > 0)
       OR NEW.feature_type NOT IN ('document_generation', 'chat_message')
       OR NEW.metadata IS DISTINCT FROM '{"reason": "opening_balance"}'::jsonb
       OR NEW.amount <> available OR NEW.idempotency_key IS NOT NULL OR NEW.refund_of IS NOT NULL THEN
      RAISE EXCEPTION 'user % was created by this statement and its opening balance is not recorded yet', NEW.user_id
        USING ERRCODE = 'BC008', HINT = 'Change the credits of a new user in a later statement.';
    END IF;
    NEW.seq := CASE WHEN u.ledger_seq = -1 AND u.free_credits > 0 AND u.free_chat_messages > 0 THEN 2 ELSE 1 END;
    NEW.balance_after := NEW.amount;
  ELSE
    -- The label support reads as "the balance the user was created with" is the opening
    -- rows' alone.
    IF NEW.metadata @> '{"reason": "opening_balance"}' THEN
      RAISE EXCEPTION 'only the rows written when user % was created are opening rows', NEW.user_id
        USING ERRCODE = 'BC008', HINT = 'Give a grant another reason.';
    END IF;
    NEW.seq := u.ledger_seq + 1;
    IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
      -- The cap reads the committed refunds; a REPEATABLE READ snapshot would not see one
      -- committed after it was taken, so two refunds could both pass.
      IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'a refund of a deduction cannot run under REPEATABLE READ'
          USING ERRCODE = 'BC007', HINT = 'Use READ COMMITTED (the default) or SERIALIZABLE.';
      END IF;
      -- The user's lock, taken above, serialises the refunds of this deduction (it is the
      -- same user's): each one here sees those committed before it. Only trail rows count,
      -- not rows of a table that inherits from it.
      SELECT * INTO target FROM "public"."CreditTransaction"
        WHERE id = NEW.refund_of AND user_id = NEW.user_id AND "credit_ledger"."credit_tx_is_trail"(tableoid::pg_catalog.regclass);
      IF NOT FOUND OR target.operation <> 'deduct' OR target.feature_type <> NEW.feature_type THEN
        RAISE EXCEPTION 'refund_of % is not a % deduction of user %', NEW.refund_of, NEW.feature_type, NEW.user_id
          USING ERRCODE = 'BC004',
                DETAIL = json_build_object('refundOf', NEW.refund_of,
                  'reason', CASE WHEN NOT FOUND THEN
                                   CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" WHERE id = NEW.refund_of)
                                        THEN 'other_user' ELSE 'not_found' END
                                 WHEN target.operation <> 'deduct' THEN 'not_a_deduction'
                                 ELSE 'other_feature' END)::text;
      END IF;
      SELECT coalesce(sum(amount), 0) INTO refunded FROM "public"."CreditTransaction"
        WHERE refund_of = NEW.refund_of AND user_id = NEW.user_id AND "credit_ledger"."credit_tx_is_trail"(tableoid::pg_catalog.regclass);
      IF refunded + NEW.amount > target.amount THEN
        -- A retry of the refund that used the deduction up is a replay, not an excess.
        IF NEW.idempotency_key IS NOT NULL AND EXISTS (
             SELECT 1 FROM "public"."CreditTransaction"
              WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
          RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
        END IF;
        RAISE EXCEPTION 'refund of % would exceed deduction % (% deducted, % refunded already)',
            NEW.amount, NEW.refund_of, target.amount, refunded
          USING ERRCODE = 'BC003',
                DETAIL = json_build_object('refundOf', NEW.refund_of, 'deducted', target.amount,
                  'refunded', refunded, 'requested', NEW.amount)::text;
      END IF;
    END IF;

    IF closes THEN
      -- The hold this row closes: a hold row of this user and balance, open, and (for a
      -- settlement or a void) not past its expiry, or (for an expiry) past it. The user's
      -- lock serialises every closing of the hold (the hold is this user's); under REPEATABLE
      -- READ a closing committed after this snapshot moved the user's head, so the lock above
      -- already failed with a serialization error. credit_tx_hold_close_idx is the last word.
      SELECT * INTO target FROM "public"."CreditTransaction"
        WHERE id = NEW.hold_id AND user_id = NEW.user_id AND "credit_ledger"."credit_tx_is_trail"(tableoid::pg_catalog.regclass);
      IF NOT FOUND OR target.operation <> 'hold' OR target.feature_type <> NEW.feature_type THEN
        RAISE EXCEPTION 'hold % is not a % hold of user %', NEW.hold_id, NEW.feature_type, NEW.user_id
          USING ERRCODE = 'BC012',
                DETAIL = json_build_object('holdId', NEW.hold_id,
                  'reason', CASE WHEN NOT FOUND THEN
                                   CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" WHERE id = NEW.hold_id)
                                        THEN 'other_user' ELSE 'not_found' END
                                 WHEN target.operation <> 'hold' THEN 'not_a_hold'
                                 ELSE 'other_feature' END)::text;
      END IF;
      SELECT * INTO closing FROM "public"."CreditTransaction"
        WHERE hold_id = NEW.hold_id AND "credit_ledger"."credit_tx_is_trail"(tableoid::pg_catalog.regclass);
      IF FOUND OR (NEW.operation <> 'expire' AND at >= target.hold_expires_at) THEN
        RAISE EXCEPTION 'hold % of user % is % already', NEW.hold_id, NEW.user_id,
            CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END
          USING ERRCODE = 'BC013',
                DETAIL = json_build_object('holdId', NEW.hold_id,
                  'outcome', CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END,
                  'closedBy', closing.id, 'amount', closing.amount, 'held', target.amount,
                  'expiresAt', target.hold_expires_at)::text;
      END IF;
      IF NEW.operation = 'expire' AND at < target.hold_expires_at THEN
        RAISE EXCEPTION 'hold % of user % expires at %, not yet', NEW.hold_id, NEW.user_id, target.hold_expires_at
          USING ERRCODE = 'BC015',
                DETAIL = json_build_object('holdId', NEW.hold_id, 'expiresAt', target.hold_expires_at)::text;
      END IF;
      IF NEW.amount > target.amount OR (NEW.operation <> 'settle' AND NEW.amount <> target.amount) THEN
        RAISE EXCEPTION '% of % does not fit hold % of %', NEW.operation, NEW.amount, NEW.hold_id, target.amount
          USING ERRCODE = 'BC014',
                DETAIL = json_build_object('holdId', NEW.hold_id, 'held', target.amount,
                  'requested', NEW.amount)::text;
      END IF;
      -- A settlement charges its amount and gives the rest back; a void or an expiry gives
      -- the whole hold back.
      next_balance := available::bigint + CASE WHEN NEW.operation = 'settle' THEN target.amount - NEW.amount ELSE NEW.amount END;
      IF next_balance > 2147483647 THEN
        RAISE EXCEPTION 'the % of user % would exceed 2147483647', CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END, NEW.user_id
          USING ERRCODE = 'numeric_value_out_of_range';
      END IF;
      NEW.balance_after := next_balance;
    ELSIF NEW.operation IN ('deduct', 'hold') THEN
      IF NEW.operation = 'hold' AND NEW.hold_expires_at <= at THEN
        -- The expiry was computed when the INSERT started: it waited for the user's lock
        -- longer than the hold was to last.
        RAISE EXCEPTION 'the hold would have expired at % before it was taken at %', NEW.hold_expires_at, at
          USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs',
            'reason', 'had passed before the hold was taken (the write waited longer than that for the user''s lock); use a longer one')::text;
      END IF;
      -- 24 hours, not '1 day': a timestamptz plus a day is a calendar day in the session's
      -- TimeZone (25 hours across a DST change), which the inserter chooses.
      IF NEW.operation = 'hold' AND NEW.hold_expires_at > at + interval '24 hours 1 minute' THEN
        RAISE EXCEPTION 'a hold expires within 24 hours of being taken, not at %', NEW.hold_expires_at
          USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs', 'reason', 'must be within 24 hours')::text;
      END IF;
      IF available < NEW.amount THEN
        -- A retry of a request that already spent the balance is a replay, not
        -- "insufficient credits": report the used key as the unique index would.
        IF NEW.idempotency_key IS NOT NULL AND EXISTS (
             SELECT 1 FROM "public"."CreditTransaction"
              WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
          RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
        END IF;
        RAISE EXCEPTION 'user % has % % but % is required', NEW.user_id, available, CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END, NEW.amount
          USING ERRCODE = 'BC001',
                DETAIL = json_build_object('userId', NEW.user_id, 'balance', CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END,
                  'available', available, 'required', NEW.amount)::text;
      END IF;
      NEW.balance_after := available - NEW.amount;
    ELSE
      -- A grant or refund leaves room for the open holds of its balance to come back: the
      -- balance plus what is held never passes the largest int4, so every hold can always be
      -- voided or expire.
      next_balance := available::bigint + NEW.amount;
      IF next_balance + (SELECT coalesce(sum(amount), 0) FROM "public"."CreditHold"
                          WHERE user_id = NEW.user_id AND (feature_type = 'chat_message') = chat) > 2147483647 THEN
        RAISE EXCEPTION 'the % of user % would exceed 2147483647 (with its open holds)', CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END, NEW.user_id
          USING ERRCODE = 'numeric_value_out_of_range';
      END IF;
      NEW.balance_after := next_balance;
    END IF;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := at;
  NEW.hash := "credit_ledger"."credit_tx_hash"(u.ledger_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at);
  RETURN NEW;
END;
$$;
-- ledger:end functions/credit_tx_prepare.sql
--> statement-breakpoint
-- ledger:source functions/user_ledger_delete.sql
-- A user is deleted with its trail (ON DELETE CASCADE), but never while a row of it is
-- written and not yet applied: the statement would then apply a deleted row, to a user
-- created again under the same id. Only deletions read the trail here.
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
-- ledger:source functions/user_ledger_guard.sql
-- A user's balances and trail head change only to exactly what its next trail row says, and
-- that row must already be written: so no UPDATE, from anyone, changes a balance without
-- its row. Its id never changes either, since a moved id could take the trail away from the
-- balances (delete "the old user's" rows, then move the id back).
--
-- The proof is that the update is credit_tx_apply's own, fired as the trail's AFTER INSERT
-- trigger (it checks that itself) for a row that was really inserted: then it is that row's
-- by construction, and must still be exactly the next step of the head. Nothing else may
-- move a balance or the head, whatever rows exist: an UPDATE that merely matched an existing
-- row could run before that row's own apply and let its user be deleted and created again
-- under the same id, for the row to land on the new one. The call stack (PG_CONTEXT) is
-- built by the server: a session can name no function credit_ledger.credit_tx_apply() but ours
-- (only the owner can create in that schema), cannot call ours from a trigger of its
-- own (EXECUTE is revoked from PUBLIC; the owner's attempt fails in credit_tx_apply), and a
-- statement of its own that merely starts with the same text cannot continue with the `"`
-- that ends it here. Reading no row also keeps operations on different users from failing
-- each other under SERIALIZABLE (a read of the trail's index would lock pages their rows
-- share). The one cost: the stack is read in English, so a server with translated messages
-- (lc_messages) refuses ledger writes with BC011 until it is set to English.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_guard"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  expected bigint;
  stack text;
  apply_frames constant text := 'SQL statement "UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = ''chat_message'' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = ''chat_message'' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = CASE WHEN ledger_seq = -2 THEN -1 ELSE NEW.seq END, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id AND (ledger_seq = NEW.seq - 1 OR (ledger_seq < 0 AND NEW.seq = (CASE WHEN ledger_seq = -1 AND free_credits > 0 AND free_chat_messages > 0 THEN 2 ELSE 1 END) AND NEW.balance_after = (CASE WHEN NEW.feature_type = ''chat_message'' THEN free_chat_messages ELSE free_credits END)))"'
    || E'\nPL/pgSQL function credit_ledger.credit_tx_apply() line 3 at SQL statement';
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'UPDATE' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_guard() runs only as the BEFORE UPDATE trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.id IS DISTINCT FROM OLD.id THEN
    RAISE EXCEPTION 'the id of "User" % never changes: its credit trail is keyed by it', OLD.id
      USING ERRCODE = 'BC006';
  END IF;
  IF NEW.free_credits IS NOT DISTINCT FROM OLD.free_credits
     AND NEW.free_chat_messages IS NOT DISTINCT FROM OLD.free_chat_messages
     AND NEW.ledger_seq IS NOT DISTINCT FROM OLD.ledger_seq
     AND NEW.ledger_hash IS NOT DISTINCT FROM OLD.ledger_hash THEN
    RETURN NEW;
  END IF;

  -- The one next step of the head: seq + 1; while the opening rows are due, -2 → -1 → the
  -- last opening row's seq, with the balances as they are (an opening row states them).
  expected := CASE WHEN OLD.ledger_seq >= 0 THEN OLD.ledger_seq + 1
                   WHEN OLD.ledger_seq = -1 AND OLD.free_credits > 0 AND OLD.free_chat_messages > 0 THEN 2
                   ELSE 1 END;
  IF NEW.ledger_seq IS DISTINCT FROM (CASE WHEN OLD.ledger_seq = -2 THEN -1 ELSE expected END)
     OR (OLD.ledger_seq < 0 AND (NEW.free_credits IS DISTINCT FROM OLD.free_credits
                                 OR NEW.free_chat_messages IS DISTINCT FROM OLD.free_chat_messages)) THEN
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;

  GET DIAGNOSTICS stack = PG_CONTEXT;
  -- The frames under this one's: credit_tx_apply's UPDATE, then credit_tx_apply itself, then
  -- the end of the stack or the next frame.
  IF substr(stack, strpos(stack, E'\n') + 1, length(apply_frames) + 1) NOT IN (apply_frames, apply_frames || E'\n') THEN
    -- On a server whose messages are translated the stack cannot be read; say so, rather
    -- than refuse every write as if it were an attack.
    IF stack NOT LIKE 'PL/pgSQL function credit_ledger.user_ledger_guard() line % at GET DIAGNOSTICS%' THEN
      RAISE EXCEPTION 'the credits ledger reads the call stack in English, and this server''s messages are not (lc_messages = %)', current_setting('lc_messages')
        USING ERRCODE = 'BC011', HINT = 'Set lc_messages to C or an English locale for this database (ALTER DATABASE … SET lc_messages = ''C'', as a superuser).';
    END IF;
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;
  RETURN NEW;
END;
$$;
-- ledger:end functions/user_ledger_guard.sql
--> statement-breakpoint
-- ledger:source functions/user_ledger_open.sql
-- A new user's balances are explained by its opening rows. BEFORE INSERT marks how many are
-- due (as a negative ledger_seq, whatever the inserter wrote); AFTER INSERT writes them, so
-- the statement that creates a user also records where its credits came from.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_open"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_open() runs only as the BEFORE INSERT trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  NEW.ledger_seq := -((NEW.free_credits <> 0)::int + (NEW.free_chat_messages <> 0)::int);
  NEW.ledger_hash := NULL;
  RETURN NEW;
END;
$$;
-- ledger:end functions/user_ledger_open.sql
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
      VALUES (NEW.id, NEW.free_credits, 'grant', 'document_generation', '{"reason": "opening_balance"}');
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
-- ledger:source triggers/CreditHold.sql
-- "CreditHold" lists exactly the trail's open holds: credit_hold_guard checks every change
-- against the trail, and TRUNCATE is refused.
DROP TRIGGER IF EXISTS "credit_hold_guard" ON "public"."CreditHold";
--> statement-breakpoint
CREATE TRIGGER "credit_hold_guard" BEFORE INSERT OR UPDATE OR DELETE ON "public"."CreditHold"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_hold_guard"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_hold_no_truncate" ON "public"."CreditHold";
--> statement-breakpoint
CREATE TRIGGER "credit_hold_no_truncate" BEFORE TRUNCATE ON "public"."CreditHold"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_hold_guard"();
-- ledger:end triggers/CreditHold.sql
--> statement-breakpoint
-- ledger:source triggers/CreditTransaction.sql
-- The trail's triggers. PostgreSQL fires triggers of one timing in the order of their names:
-- credit_tx_prepare numbers and hashes a row before any other BEFORE INSERT trigger the owner
-- adds with a later name sees it.
DROP TRIGGER IF EXISTS "credit_tx_prepare" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_prepare" BEFORE INSERT ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_prepare"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_apply" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_apply" AFTER INSERT ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_apply"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_append_only" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_append_only" BEFORE UPDATE OR DELETE ON "public"."CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "credit_tx_no_truncate" ON "public"."CreditTransaction";
--> statement-breakpoint
CREATE TRIGGER "credit_tx_no_truncate" BEFORE TRUNCATE ON "public"."CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION "credit_ledger"."credit_tx_append_only"();
-- ledger:end triggers/CreditTransaction.sql
--> statement-breakpoint
-- ledger:source triggers/User.sql
-- "User"'s triggers: its balances and head change only through the trail (user_ledger_guard),
-- a new user's balances are explained by opening rows (user_ledger_open marks them due,
-- user_ledger_opening writes them), and a user is not deleted under a row not yet applied.
DROP TRIGGER IF EXISTS "user_ledger_guard" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_guard" BEFORE UPDATE ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_guard"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_open" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_open" BEFORE INSERT ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_open"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_opening" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_opening" AFTER INSERT ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_opening"();
--> statement-breakpoint
DROP TRIGGER IF EXISTS "user_ledger_delete" ON "public"."User";
--> statement-breakpoint
CREATE TRIGGER "user_ledger_delete" BEFORE DELETE ON "public"."User"
  FOR EACH ROW EXECUTE FUNCTION "credit_ledger"."user_ledger_delete"();
-- ledger:end triggers/User.sql
--> statement-breakpoint
-- ledger:source privileges.sql
-- Who may execute the ledger's functions. Installed after every change of the ledger's
-- sources, since a function created anew gets PUBLIC's EXECUTE and whatever default
-- privileges (ALTER DEFAULT PRIVILEGES … GRANT EXECUTE ON FUNCTIONS, common on hosted
-- platforms) grant to other roles by name, which REVOKE … FROM PUBLIC leaves in place.
--
-- Nobody but the owner may execute a trigger function (attached to a table of its own, say a
-- TEMP table, credit_tx_apply could otherwise be run with any NEW) or the helpers. The
-- sweeper runs as its caller, so any role may execute it: it can do only what that role's
-- own statements could.
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
END;
$$;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_holds_expire"(integer, uuid) TO PUBLIC;
-- ledger:end privileges.sql
--> statement-breakpoint

-- The move out of "public" (the one-time part of this migration, written by hand). Triggers
-- of tables other than the three above that call a ledger function in "public" (docs/scaling's
-- partitions and key claims, say) are re-created on the function of the same name in
-- credit_ledger, as they were; then the old functions go. DROP FUNCTION without CASCADE: a
-- use of one this did not foresee stops the migration rather than vanish with it.
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN
    SELECT tg.tgname, tg.tgrelid::regclass AS rel, pg_get_triggerdef(tg.oid) AS def, p.proname
      FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
     WHERE p.pronamespace = 'public'::regnamespace AND NOT tg.tgisinternal AND tg.tgparentid = 0
       AND p.proname IN ('credit_tx_prepare', 'credit_tx_apply', 'credit_tx_append_only', 'user_ledger_guard',
                         'user_ledger_open', 'user_ledger_opening', 'user_ledger_delete', 'credit_hold_guard')
  LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    -- pg_get_triggerdef qualifies the function only when "public" is not on the search_path.
    EXECUTE regexp_replace(t.def, format('EXECUTE FUNCTION (public\.)?%s\(\)', t.proname),
                           format('EXECUTE FUNCTION credit_ledger.%s()', t.proname));
  END LOOP;
END;
$$;
--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_prepare"();
--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_apply"();
--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_append_only"();
--> statement-breakpoint
DROP FUNCTION "public"."user_ledger_guard"();
--> statement-breakpoint
DROP FUNCTION "public"."user_ledger_open"();
--> statement-breakpoint
DROP FUNCTION "public"."user_ledger_opening"();
--> statement-breakpoint
DROP FUNCTION "public"."user_ledger_delete"();
--> statement-breakpoint
DROP FUNCTION "public"."credit_hold_guard"();
--> statement-breakpoint
DROP FUNCTION "public"."credit_holds_expire"(integer, uuid);
--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_hash"(text, uuid, uuid, bigint, "public"."operation_type", "public"."feature_type", integer, integer, timestamptz, text, uuid, jsonb, uuid, timestamptz);
--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_is_trail"(regclass);
