-- The ledger that nobody can get around: apply order, every credit explained, tamper evidence.
--
-- drizzle-kit generated this migration for the schema change (see meta/0003_snapshot.json):
-- "CreditTransaction".seq and .hash, "User".ledger_seq and .ledger_hash, balance_after NOT
-- NULL and credit_tx_user_seq_idx. Its SQL was completed by hand before it was ever applied:
-- the generated `ADD COLUMN … NOT NULL` cannot run on a trail that has rows, so the columns
-- are added, backfilled and only then made NOT NULL; and the ledger's functions and triggers
-- are replaced in the same transaction, so the new columns are never unguarded.
--
-- The threat model (README, "What the database guarantees, and against whom"): an app role
-- with SELECT, INSERT, UPDATE, DELETE on every table and TEMP on the database, and the role
-- that owns the tables, must not be able, with any DML, TEMP object, own function or trigger,
-- session setting, search_path, CTE, ON CONFLICT clause, COPY or interleaving of sessions, to
-- change a balance without its trail row, write a trail row whose change did not happen,
-- remove or alter a trail row of an existing user, choose balance_after, created_at or seq,
-- exceed a refund cap, or change a user's id under its trail. What the owner's DDL can still
-- do (disable a trigger, replace a function) is found by `pnpm credits:verify`.
--
-- How:
-- * Rules are checked against privileges and row data only, never a setting a session can
--   set: the old guard trusted `SET bragdoc.ledger_write = on` plus pg_trigger_depth(),
--   which a session's own trigger (or its own pg_trigger_depth() earlier in search_path)
--   could fake.
-- * Every function runs as its owner with `search_path = pg_catalog, pg_temp` and names
--   every relation with its schema: a TEMP table named "User" or "CreditTransaction", or a
--   function in a schema the session puts first, is never what they read or call.
-- * A trail INSERT has no side effect until its row exists: credit_tx_prepare (BEFORE)
--   locks the user, checks and numbers the row; credit_tx_apply (AFTER, so only for a row
--   that was really inserted) applies it to "User". `INSERT … ON CONFLICT DO NOTHING`, which
--   runs BEFORE triggers and then skips the row, changes nothing.
-- * "User" balances and head (ledger_seq, ledger_hash) change only to exactly what the
--   user's next trail row says, and that row must already be written (user_ledger_guard).
--
-- SQLSTATEs of class BC (src/credits/errors.ts maps them to typed errors):
--   BC001 insufficient balance       BC002 unknown user            BC003 refund exceeds its deduction
--   BC004 invalid refund target      BC005 append-only trail       BC006 balance or id changed outside the ledger
--   BC007 capped refund under REPEATABLE READ                      BC008 write out of the user's trail order
--   BC009 ledger not installed (a ledger trigger is missing or disabled)
--   BC010 a ledger trigger function run other than as its own trigger
--   BC011 the server's messages are not in English (the guard reads the call stack)

-- The 0002 triggers go first: the backfill below writes rows they would refuse or apply twice.
DROP TRIGGER "credit_tx_apply" ON "CreditTransaction";--> statement-breakpoint
DROP TRIGGER "credit_tx_append_only" ON "CreditTransaction";--> statement-breakpoint
DROP TRIGGER "credit_tx_no_truncate" ON "CreditTransaction";--> statement-breakpoint
DROP TRIGGER "user_balance_guard" ON "User";--> statement-breakpoint
DROP FUNCTION "credit_tx_apply"();--> statement-breakpoint
DROP FUNCTION "credit_tx_append_only"();--> statement-breakpoint
DROP FUNCTION "user_balance_guard"();--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "seq" bigint;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "hash" text;--> statement-breakpoint
ALTER TABLE "User" ADD COLUMN "ledger_seq" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "User" ADD COLUMN "ledger_hash" text;--> statement-breakpoint

-- The hash of a trail row: sha256 over the previous row's hash and this row's fields, as
-- jsonb text (deterministic: jsonb normalises key order and number spelling) with created_at
-- as epoch milliseconds (its text form would depend on the session's TimeZone). The empty
-- string stands for "no previous row". `credits:verify` recomputes it with its own copy of
-- this formula, so replacing this function cannot hide an edit.
-- No SET clause, so that PostgreSQL inlines it into the trigger (a function with one costs
-- a call per row); instead every name in it is qualified, so that no caller's search_path
-- can change what it computes.
CREATE FUNCTION "public"."credit_tx_hash"(
  prev text, id uuid, user_id uuid, seq bigint, operation "public"."operation_type",
  feature_type "public"."feature_type", amount integer, balance_after integer,
  created_at timestamptz, idempotency_key text, refund_of uuid, metadata jsonb
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
    coalesce(prev, '') OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(
      id, user_id, seq, operation::pg_catalog.text, feature_type::pg_catalog.text, amount,
      balance_after, (extract(epoch FROM created_at) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,
      idempotency_key, refund_of, metadata
    )::pg_catalog.text, 'UTF8')), 'hex')
$$;--> statement-breakpoint

-- Backfill of a trail written before this migration. Rows are numbered per user in
-- (created_at, id) order, the best order the old trail records (its created_at was the
-- transaction's start time, so rows of concurrent transactions may be listed out of apply
-- order); balance_after is recomputed as the running balance in that order. Users whose
-- balance the old trail did not explain (every user created with the default 10 credits and
-- 20 chat messages) get an opening grant first, of what the trail does not explain; only when
-- that would let the running balance go below zero in this order is the opening the least
-- that does not, with a reconciliation row (a deduct) last to end at the balance. A fresh
-- database has no rows and skips all of this.
DO $$
DECLARE
  u record;
  r record;
  seq_no bigint;
  prev text;
  running bigint;
  credits bigint;
  chats bigint;
  open_credits bigint;
  open_chats bigint;
  fix_credits bigint;
  fix_chats bigint;
  at timestamptz;
BEGIN
  FOR u IN SELECT id, free_credits, free_chat_messages, created_at FROM "public"."User" ORDER BY id LOOP
    SELECT greatest(0, -coalesce(min(run) FILTER (WHERE NOT chat), 0)),
           greatest(0, -coalesce(min(run) FILTER (WHERE chat), 0)),
           coalesce(sum(delta) FILTER (WHERE NOT chat), 0),
           coalesce(sum(delta) FILTER (WHERE chat), 0),
           least(u.created_at, min(created_at))
      INTO open_credits, open_chats, credits, chats, at
      FROM (SELECT chat, delta, created_at,
                   sum(delta) OVER (PARTITION BY chat ORDER BY created_at, id) AS run
              FROM (SELECT feature_type = 'chat_message' AS chat, created_at, id,
                           CASE WHEN operation = 'deduct' THEN -amount ELSE amount END AS delta
                      FROM "public"."CreditTransaction" WHERE user_id = u.id) d) w;
    open_credits := greatest(open_credits, u.free_credits - credits);
    open_chats := greatest(open_chats, u.free_chat_messages - chats);
    fix_credits := u.free_credits - open_credits - credits;
    fix_chats := u.free_chat_messages - open_chats - chats;
    seq_no := 0;
    prev := NULL;
    credits := 0;
    chats := 0;
    FOR r IN
      SELECT * FROM (
        SELECT 0 AS part, NULL::uuid AS id, 'grant'::"public"."operation_type" AS operation,
               k.feature_type, k.amount, at AS created_at, NULL::text AS idempotency_key,
               NULL::uuid AS refund_of, '{"reason": "opening_balance"}'::jsonb AS metadata
          FROM (VALUES ('document_generation'::"public"."feature_type", open_credits),
                       ('chat_message'::"public"."feature_type", open_chats)) k(feature_type, amount)
         WHERE k.amount > 0
        UNION ALL
        SELECT 1, t.id, t.operation, t.feature_type, t.amount, t.created_at, t.idempotency_key,
               t.refund_of, t.metadata
          FROM "public"."CreditTransaction" t WHERE t.user_id = u.id
        UNION ALL
        SELECT 2, NULL, CASE WHEN k.fix > 0 THEN 'grant' ELSE 'deduct' END::"public"."operation_type",
               k.feature_type, abs(k.fix), now(), NULL, NULL,
               '{"reason": "reconciliation"}'::jsonb
          FROM (VALUES ('document_generation'::"public"."feature_type", fix_credits),
                       ('chat_message'::"public"."feature_type", fix_chats)) k(feature_type, fix)
         WHERE k.fix <> 0
      ) rows
      ORDER BY part, created_at, feature_type = 'chat_message', id
    LOOP
      seq_no := seq_no + 1;
      IF r.feature_type = 'chat_message' THEN
        chats := chats + CASE WHEN r.operation = 'deduct' THEN -r.amount ELSE r.amount END;
        running := chats;
      ELSE
        credits := credits + CASE WHEN r.operation = 'deduct' THEN -r.amount ELSE r.amount END;
        running := credits;
      END IF;
      IF r.id IS NULL THEN
        r.id := gen_random_uuid();
        INSERT INTO "public"."CreditTransaction"
            (id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, seq)
          VALUES (r.id, u.id, r.amount, r.operation, r.feature_type, r.metadata,
                  date_trunc('milliseconds', r.created_at), running, seq_no);
        r.created_at := date_trunc('milliseconds', r.created_at);
      ELSE
        UPDATE "public"."CreditTransaction" SET seq = seq_no, balance_after = running WHERE id = r.id;
      END IF;
      prev := "public"."credit_tx_hash"(prev, r.id, u.id, seq_no, r.operation, r.feature_type,
        r.amount::integer, running::integer, r.created_at, r.idempotency_key, r.refund_of, r.metadata);
      UPDATE "public"."CreditTransaction" SET hash = prev WHERE id = r.id;
    END LOOP;
    UPDATE "public"."User" SET ledger_seq = seq_no, ledger_hash = prev WHERE id = u.id;
  END LOOP;
END;
$$;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ALTER COLUMN "balance_after" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ALTER COLUMN "seq" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ALTER COLUMN "hash" SET NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "credit_tx_user_seq_idx" ON "CreditTransaction" USING btree ("user_id","seq");--> statement-breakpoint

-- Whether a relation is the trail: the table itself, or a partition of it when it is
-- partitioned (docs/scaling). Rows of any other table that inherits from it (an owner's DDL)
-- are never taken for trail rows, nor is a trigger function of the ledger attached to one.
-- Never NULL (pg_partition_root is NULL outside a partition tree): a NULL would make every
-- `IF NOT …` below skip its refusal. Qualified and without SET, like credit_tx_hash, so that
-- it is inlined.
CREATE FUNCTION "public"."credit_tx_is_trail"(relation regclass) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT relation OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass
      OR coalesce(pg_catalog.pg_partition_root(relation)
                    OPERATOR(pg_catalog.=) '"public"."CreditTransaction"'::pg_catalog.regclass, false)
$$;--> statement-breakpoint

-- BEFORE INSERT: lock the user, check, number, date and hash the row. No side effect here
-- may survive the row being skipped (ON CONFLICT) or refused, so this only reads and locks.
CREATE FUNCTION "public"."credit_tx_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  chat boolean := NEW.feature_type = 'chat_message';
  balance_name text := CASE WHEN NEW.feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  u record;
  available integer;
  next_balance bigint;
  target "public"."CreditTransaction"%ROWTYPE;
  refunded bigint;
BEGIN
  -- Only as the trail's own trigger: the owner could attach this function to a table of its own.
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "public"."credit_tx_is_trail"(TG_RELID) THEN
    RAISE EXCEPTION 'credit_tx_prepare() runs only as the BEFORE INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  -- A row is only written when the rest of the ledger will apply and guard it: every ledger
  -- trigger present, enabled, on its own table, with its own function and events, and plain
  -- (no WHEN clause, column list or deferral that could make it skip a row). With
  -- credit_tx_apply disabled, say, a row would be recorded but never applied.
  IF (SELECT count(*) FROM pg_trigger t
        JOIN (VALUES (TG_RELID, 'credit_tx_prepare', '"public"."credit_tx_prepare"()'::regprocedure, 7),
                     (TG_RELID, 'credit_tx_apply', '"public"."credit_tx_apply"()'::regprocedure, 5),
                     (TG_RELID, 'credit_tx_append_only', '"public"."credit_tx_append_only"()'::regprocedure, 27),
                     (TG_RELID, 'credit_tx_no_truncate', '"public"."credit_tx_append_only"()'::regprocedure, 34),
                     ('"public"."User"'::regclass, 'user_ledger_guard', '"public"."user_ledger_guard"()'::regprocedure, 19),
                     ('"public"."User"'::regclass, 'user_ledger_open', '"public"."user_ledger_open"()'::regprocedure, 7),
                     ('"public"."User"'::regclass, 'user_ledger_opening', '"public"."user_ledger_opening"()'::regprocedure, 5),
                     ('"public"."User"'::regclass, 'user_ledger_delete', '"public"."user_ledger_delete"()'::regprocedure, 11))
             AS want(relid, name, fn, type)
          ON t.tgrelid = want.relid AND t.tgname = want.name
       WHERE t.tgfoid = want.fn AND t.tgtype = want.type AND t.tgenabled IN ('O', 'A')
         AND t.tgqual IS NULL AND t.tgattr::text = '' AND NOT t.tgdeferrable AND t.tgnargs = 0) <> 8 THEN
    RAISE EXCEPTION 'the credits ledger is not installed: a ledger trigger is missing, disabled or changed'
      USING ERRCODE = 'BC009', HINT = 'Run the migrations (pnpm db:migrate) and re-enable the triggers; pnpm credits:verify lists what is wrong.';
  END IF;

  -- Every write of one user takes this lock first, so they apply one at a time, in seq order.
  SELECT free_credits, free_chat_messages, ledger_seq, ledger_hash INTO u
    FROM "public"."User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
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
        WHERE id = NEW.refund_of AND user_id = NEW.user_id AND "public"."credit_tx_is_trail"(tableoid);
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
        WHERE refund_of = NEW.refund_of AND user_id = NEW.user_id AND "public"."credit_tx_is_trail"(tableoid);
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

    IF NEW.operation = 'deduct' THEN
      IF available < NEW.amount THEN
        -- A retry of a request that already spent the balance is a replay, not
        -- "insufficient credits": report the used key as the unique index would.
        IF NEW.idempotency_key IS NOT NULL AND EXISTS (
             SELECT 1 FROM "public"."CreditTransaction"
              WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
          RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
        END IF;
        RAISE EXCEPTION 'user % has % % but % is required', NEW.user_id, available, balance_name, NEW.amount
          USING ERRCODE = 'BC001',
                DETAIL = json_build_object('userId', NEW.user_id, 'balance', balance_name,
                  'available', available, 'required', NEW.amount)::text;
      END IF;
      NEW.balance_after := available - NEW.amount;
    ELSE
      next_balance := available::bigint + NEW.amount;
      IF next_balance > 2147483647 THEN
        RAISE EXCEPTION 'the % of user % would exceed 2147483647', balance_name, NEW.user_id
          USING ERRCODE = 'numeric_value_out_of_range';
      END IF;
      NEW.balance_after := next_balance;
    END IF;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := date_trunc('milliseconds', clock_timestamp());
  NEW.hash := "public"."credit_tx_hash"(u.ledger_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata);
  RETURN NEW;
END;
$$;--> statement-breakpoint
CREATE TRIGGER "credit_tx_prepare" BEFORE INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "public"."credit_tx_prepare"();--> statement-breakpoint

-- AFTER INSERT: the row exists, so apply it, unless the user's trail moved on since the row
-- was numbered, or the user is not the one it was numbered against (a user deleted and
-- created again under the same id, still waiting for its opening rows, takes only those).
-- user_ledger_guard recognises this very statement (one line, so that the guard can compare
-- it whole) and lets nothing else move a balance.
CREATE FUNCTION "public"."credit_tx_apply"() RETURNS trigger
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
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "public"."credit_tx_is_trail"(TG_RELID) THEN
    RAISE EXCEPTION 'credit_tx_apply() runs only as the AFTER INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  RETURN NULL;
END;
$$;--> statement-breakpoint
CREATE TRIGGER "credit_tx_apply" AFTER INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "public"."credit_tx_apply"();--> statement-breakpoint

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
-- built by the server: a session can name no function public.credit_tx_apply() but ours
-- without the owner's DDL (which credits:verify finds), cannot call ours from a trigger of its
-- own (EXECUTE is revoked from PUBLIC; the owner's attempt fails in credit_tx_apply), and a
-- statement of its own that merely starts with the same text cannot continue with the `"`
-- that ends it here. Reading no row also keeps operations on different users from failing
-- each other under SERIALIZABLE (a read of the trail's index would lock pages their rows
-- share). The one cost: the stack is read in English, so a server with translated messages
-- (lc_messages) refuses ledger writes with BC011 until it is set to English.
CREATE FUNCTION "public"."user_ledger_guard"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  expected bigint;
  stack text;
  apply_frames constant text := 'SQL statement "UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = ''chat_message'' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = ''chat_message'' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = CASE WHEN ledger_seq = -2 THEN -1 ELSE NEW.seq END, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id AND (ledger_seq = NEW.seq - 1 OR (ledger_seq < 0 AND NEW.seq = (CASE WHEN ledger_seq = -1 AND free_credits > 0 AND free_chat_messages > 0 THEN 2 ELSE 1 END) AND NEW.balance_after = (CASE WHEN NEW.feature_type = ''chat_message'' THEN free_chat_messages ELSE free_credits END)))"'
    || E'\nPL/pgSQL function public.credit_tx_apply() line 3 at SQL statement';
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
    IF stack NOT LIKE 'PL/pgSQL function public.user_ledger_guard() line % at GET DIAGNOSTICS%' THEN
      RAISE EXCEPTION 'the credits ledger reads the call stack in English, and this server''s messages are not (lc_messages = %)', current_setting('lc_messages')
        USING ERRCODE = 'BC011', HINT = 'Set lc_messages to C or an English locale for this database (ALTER DATABASE … SET lc_messages = ''C'', as a superuser).';
    END IF;
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;
  RETURN NEW;
END;
$$;--> statement-breakpoint
CREATE TRIGGER "user_ledger_guard" BEFORE UPDATE ON "User"
  FOR EACH ROW EXECUTE FUNCTION "public"."user_ledger_guard"();--> statement-breakpoint

-- A new user's balances are explained by its opening rows. BEFORE INSERT marks how many are
-- due (as a negative ledger_seq, whatever the inserter wrote); AFTER INSERT writes them, so
-- the statement that creates a user also records where its credits came from.
CREATE FUNCTION "public"."user_ledger_open"() RETURNS trigger
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
$$;--> statement-breakpoint
CREATE TRIGGER "user_ledger_open" BEFORE INSERT ON "User"
  FOR EACH ROW EXECUTE FUNCTION "public"."user_ledger_open"();--> statement-breakpoint

CREATE FUNCTION "public"."user_ledger_opening"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_opening() runs only as the AFTER INSERT trigger of "User"'
      USING ERRCODE = 'BC010';
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
$$;--> statement-breakpoint
CREATE TRIGGER "user_ledger_opening" AFTER INSERT ON "User"
  FOR EACH ROW EXECUTE FUNCTION "public"."user_ledger_opening"();--> statement-breakpoint

-- A user is deleted with its trail (ON DELETE CASCADE), but never while a row of it is
-- written and not yet applied: the statement would then apply a deleted row, to a user
-- created again under the same id. Only deletions read the trail here.
CREATE FUNCTION "public"."user_ledger_delete"() RETURNS trigger
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
$$;--> statement-breakpoint
CREATE TRIGGER "user_ledger_delete" BEFORE DELETE ON "User"
  FOR EACH ROW EXECUTE FUNCTION "public"."user_ledger_delete"();--> statement-breakpoint

-- The trail is append-only. Rows leave it only with their user: the ON DELETE CASCADE from
-- "User" deletes them after the user row is gone, which is what this checks (in the real
-- "User", whatever TEMP table a session creates under that name; with row_security off, so
-- that a policy hiding the user makes this fail, never pass). Attached to another table with
-- a user_id (docs/scaling's idempotency key claims) it keeps that one append-only too.
CREATE FUNCTION "public"."credit_tx_append_only"() RETURNS trigger
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
$$;--> statement-breakpoint
CREATE TRIGGER "credit_tx_append_only" BEFORE UPDATE OR DELETE ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION "public"."credit_tx_append_only"();--> statement-breakpoint
CREATE TRIGGER "credit_tx_no_truncate" BEFORE TRUNCATE ON "CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."credit_tx_append_only"();--> statement-breakpoint

-- Trigger functions run only as the triggers above: nobody may attach them to a table of
-- their own (a trigger on a TEMP table could otherwise run credit_tx_apply with any NEW).
REVOKE EXECUTE ON FUNCTION "public"."credit_tx_prepare"(), "public"."credit_tx_apply"(),
  "public"."user_ledger_guard"(), "public"."user_ledger_open"(), "public"."user_ledger_opening"(),
  "public"."user_ledger_delete"(), "public"."credit_tx_append_only"() FROM PUBLIC;
