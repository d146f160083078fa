-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source tables/credit_limit.sql
-- Limits on spending, as data the rules read rather than literals inside them: one row per
-- feature and period caps what a user may spend on that feature in one period (a UTC day
-- from midnight). Only the owner writes them (no grant to any other role: privileges.sql), in a
-- migration, so a change of a limit is reviewed and recorded like a change of a rule. It ships
-- empty: which feature to cap, and by how much, is a product decision. Example, in a
-- migration: INSERT INTO credit_ledger.credit_limit VALUES ('document_generation', 'day', 5);
-- Created once: a later change of its columns is an ALTER TABLE the migration's author writes.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_limit" (
  feature_type "public"."feature_type" NOT NULL,
  period text NOT NULL CONSTRAINT credit_limit_period CHECK (period = 'day'),
  max_amount integer NOT NULL CONSTRAINT credit_limit_max_amount_positive CHECK (max_amount > 0),
  PRIMARY KEY (feature_type, period)
);
-- ledger:end tables/credit_limit.sql
--> statement-breakpoint
-- ledger:source functions/credit_balance_effect.sql
-- What a row of each operation does to its balance, declared once: a deduction or a hold
-- takes its amount; a grant or a refund adds it; a settlement charges its amount of the hold
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
  SELECT CASE WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{deduct,hold}'::pg_catalog.text[])
              THEN 0::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{grant,refund,void,expire}'::pg_catalog.text[])
              THEN amount::pg_catalog.int8
              WHEN operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle}'::pg_catalog.text[])
              THEN held::pg_catalog.int8 OPERATOR(pg_catalog.-) amount::pg_catalog.int8
         END
$$;
-- ledger:end functions/credit_balance_effect.sql
--> statement-breakpoint
-- ledger:source functions/credit_expire_due_holds.sql
-- Gives back the user's holds that are due by `at`, each with an expire row of its own (a
-- statement of its own, applied before the row being written is numbered), and returns the
-- time that row is to be dated with. So no write or read of a user ever sees a hold past its
-- expiry, and none needs a background job to. An expire row expires nothing itself. With the
-- user's lock held (the caller took it), a hold is expired exactly once. `keep` (the hold a
-- settlement or void closes) is left alone: that write is refused as HOLD_EXPIRED, with the
-- whole statement, so an expire row written here would vanish.
-- Due means due at the row's time, which every check of an expiry compares with: the row is
-- dated first and the holds due by then are expired. Writing their expire rows takes time (a
-- user with hundreds of due holds: tens of ms), and the row is dated after them, so it is
-- dated again and the holds due by the new time are expired too, until none is (with the
-- user's lock held, no hold is added meanwhile). The time is a value, not clock_timestamp()
-- in the condition: a volatile call there cannot bound the index scan, which would read
-- every open hold of the user. Returns NULL when there was nothing to expire.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_expire_due_holds"(user_id uuid, keep uuid, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
  h record;
  expired boolean := false;
BEGIN
  LOOP
    FOR h IN SELECT c.id, c.amount, c.feature_type FROM "public"."CreditHold" c
              WHERE c.user_id = credit_expire_due_holds.user_id AND c.expires_at <= at
                AND c.id IS DISTINCT FROM keep
              ORDER BY c.expires_at, c.id LOOP
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        VALUES (credit_expire_due_holds.user_id, h.amount, 'expire', h.feature_type, h.id);
    END LOOP;
    EXIT WHEN NOT FOUND;
    expired := true;
    at := date_trunc('milliseconds', clock_timestamp());
  END LOOP;
  RETURN CASE WHEN expired THEN at END;
END;
$$;
-- ledger:end functions/credit_expire_due_holds.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_balance_range.sql
-- Rule (22003): a balance stays an int4. A grant or a refund leaves room for the open holds of
-- its balance to come back (`held`, with `counts_holds`): the balance plus what is held never
-- passes the largest int4, so every hold can always be voided or expire. A closing row gives
-- back into exactly that room, so for it `held` is 0.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_balance_range"(
  user_id uuid, feature_type "public"."feature_type", next_balance bigint, held bigint, counts_holds boolean
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF next_balance + held > 2147483647 THEN
    RAISE EXCEPTION 'the % of user % would exceed 2147483647%',
        CASE WHEN feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END, user_id,
        CASE WHEN counts_holds THEN ' (with its open holds)' ELSE '' END
      USING ERRCODE = 'numeric_value_out_of_range';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_balance_range.sql
--> statement-breakpoint
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
  day_start timestamptz := date_trunc('day', at, 'UTC');
  used bigint;
BEGIN
  IF max_amount IS NULL THEN
    RETURN true;
  END IF;
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
-- ledger:source functions/credit_rule_hold_close.sql
-- Rule: a settle, void or expire row closes exactly one open hold of its user and balance, in
-- time, within its amount. The hold is a hold row of this user and feature (BC012), not
-- closed already, and, for a settlement or a void, not past its expiry (BC013); an expiry
-- comes only once it is due (BC015); a settlement charges at most the held amount, and a void
-- or an expiry gives back exactly that (BC014). The user's lock (the caller holds it)
-- serialises every closing of the hold (the hold is this user's); under REPEATABLE READ a
-- closing committed after the snapshot moved the user's head, so taking the lock already
-- failed with a serialization error; credit_tx_hold_close_idx is the last word. Returns the
-- held amount, which a settlement's balance effect needs.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_close"(
  user_id uuid, operation "public"."operation_type", feature_type "public"."feature_type",
  amount integer, hold_id uuid, at timestamptz
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  target "public"."CreditTransaction"%ROWTYPE;
  closing "public"."CreditTransaction"%ROWTYPE;
BEGIN
  SELECT * INTO target FROM "public"."CreditTransaction" t
    WHERE t.id = credit_rule_hold_close.hold_id AND t.user_id = credit_rule_hold_close.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF NOT FOUND OR target.operation <> 'hold' OR target.feature_type <> credit_rule_hold_close.feature_type THEN
    RAISE EXCEPTION 'hold % is not a % hold of user %', hold_id, feature_type, user_id
      USING ERRCODE = 'BC012',
            DETAIL = json_build_object('holdId', hold_id,
              'reason', CASE WHEN NOT FOUND THEN
                               CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                                                  WHERE t.id = credit_rule_hold_close.hold_id)
                                    THEN 'other_user' ELSE 'not_found' END
                             WHEN target.operation <> 'hold' THEN 'not_a_hold'
                             ELSE 'other_feature' END)::text;
  END IF;
  SELECT * INTO closing FROM "public"."CreditTransaction" t
    WHERE t.hold_id = credit_rule_hold_close.hold_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF FOUND OR (operation <> 'expire' AND at >= target.hold_expires_at) THEN
    RAISE EXCEPTION 'hold % of user % is % already', hold_id, user_id,
        CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END
      USING ERRCODE = 'BC013',
            DETAIL = json_build_object('holdId', hold_id,
              'outcome', CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END,
              'closedBy', closing.id, 'amount', closing.amount, 'held', target.amount,
              'expiresAt', target.hold_expires_at)::text;
  END IF;
  IF operation = 'expire' AND at < target.hold_expires_at THEN
    RAISE EXCEPTION 'hold % of user % expires at %, not yet', hold_id, user_id, target.hold_expires_at
      USING ERRCODE = 'BC015',
            DETAIL = json_build_object('holdId', hold_id, 'expiresAt', target.hold_expires_at)::text;
  END IF;
  IF amount > target.amount OR (operation <> 'settle' AND amount <> target.amount) THEN
    RAISE EXCEPTION '% of % does not fit hold % of %', operation, amount, hold_id, target.amount
      USING ERRCODE = 'BC014',
            DETAIL = json_build_object('holdId', hold_id, 'held', target.amount,
              'requested', amount)::text;
  END IF;
  RETURN target.amount;
END;
$$;
-- ledger:end functions/credit_rule_hold_close.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_hold_columns.sql
-- Rule (BC016): the hold columns belong to hold rows (hold_expires_at) and to the rows that
-- close one (hold_id: settle, void, expire), and to no other.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_columns"(
  operation "public"."operation_type", hold_id uuid, hold_expires_at timestamptz
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  closes boolean := operation IN ('settle', 'void', 'expire');
BEGIN
  IF (hold_expires_at IS NOT NULL) <> (operation = 'hold') OR (hold_id IS NOT NULL) <> closes THEN
    RAISE EXCEPTION 'hold_expires_at is set on hold rows only, and hold_id on settle, void and expire rows only'
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', CASE WHEN closes OR hold_id IS NOT NULL THEN 'holdId' ELSE 'expiresInMs' END,
                                                          'reason', 'is set on hold rows (expiry) or closing rows (hold id) only')::text;
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_hold_columns.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_hold_expiry.sql
-- Rule (BC016): a hold expires after it is taken and within 24 hours of it. Its expiry was
-- computed when the INSERT started, so one that waited for the user's lock longer than the
-- hold was to last is refused rather than taken already due. 24 hours, not '1 day': a
-- timestamptz plus a day is a calendar day in the session's TimeZone (25 hours across a DST
-- change), which the inserter chooses.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_expiry"(hold_expires_at timestamptz, at timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF hold_expires_at <= at THEN
    RAISE EXCEPTION 'the hold would have expired at % before it was taken at %', hold_expires_at, at
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs',
        'reason', 'had passed before the hold was taken (the write waited longer than that for the user''s lock); use a longer one')::text;
  END IF;
  IF hold_expires_at > at + interval '24 hours 1 minute' THEN
    RAISE EXCEPTION 'a hold expires within 24 hours of being taken, not at %', hold_expires_at
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs', 'reason', 'must be within 24 hours')::text;
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_hold_expiry.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_installed.sql
-- Rule (BC009): a row is only written when the rest of the ledger will apply and guard it:
-- every ledger trigger present, enabled, on its own table, with its own function and events,
-- and plain (no WHEN clause, column list or deferral that could make it skip a row). With
-- credit_tx_apply disabled, say, a row would be recorded but never applied; with
-- credit_hold_guard disabled, an open hold could be deleted and never expire.
-- credit_tx_prepare counts them (`installed` of `expected`, in the statement that locks the
-- user); every rule returns true or raises, so that it is called as an expression (a
-- fraction of a PERFORM's cost).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_installed"(installed bigint, expected bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF installed <> expected THEN
    RAISE EXCEPTION 'the credits ledger is not installed: a ledger trigger is missing, disabled or changed'
      USING ERRCODE = 'BC009', HINT = 'Run the migrations (pnpm db:migrate) and re-enable the triggers; pnpm credits:verify lists what is wrong.';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_installed.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_no_foreign_reference.sql
-- Rule (BC019): no foreign key of a table the ledger's owner does not own references the
-- trail or "CreditHold". REFERENCES (part of GRANT ALL) and CREATE on any schema let a role
-- make one and point it at a victim's hold: the hold could then never be closed, and every
-- write of that user, and the sweeper, would fail on it; one on a trail row keeps its user
-- from being deleted. `foreign_keys` is credit_tx_prepare's count of them (a foreign key
-- creates internal triggers on the table it references, found by pg_trigger's index); the
-- catalog is only read again, to name them, when there is one.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_no_foreign_reference"(relid oid, foreign_keys bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF foreign_keys = 0 THEN
    RETURN true;
  END IF;
  SELECT string_agg(DISTINCT format('%I on %s (owner %s, references %s)', k.conname, k.conrelid::regclass,
                                    r.relowner::regrole, k.confrelid::regclass), ', ')
    INTO foreign_list
    FROM pg_trigger t
    JOIN pg_constraint k ON k.oid = t.tgconstraint
    JOIN pg_class r ON r.oid = k.conrelid
   WHERE t.tgrelid IN (relid, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
     AND t.tgisinternal AND k.contype = 'f' AND k.confrelid = t.tgrelid
     AND r.relowner <> (SELECT c.relowner FROM pg_class c
                         WHERE c.oid = '"public"."CreditTransaction"'::regclass);
  RAISE EXCEPTION 'a foreign key of a table the ledger''s owner does not own references a ledger table: %', foreign_list
    USING ERRCODE = 'BC019', DETAIL = json_build_object('constraints', foreign_list)::text,
          HINT = 'It could keep a hold from ever closing, or a user from being deleted. Drop the constraint, or have the owner of the ledger tables own its table.';
END;
$$;
-- ledger:end functions/credit_rule_no_foreign_reference.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_no_foreign_trigger.sql
-- Rule (BC017): no trigger that is not the ledger's runs inside a write with a function the
-- tables' owner does not own. A role with the TRIGGER privilege (GRANT ALL grants it) could
-- otherwise run code of its own in the middle of the write, after the rules were checked:
-- set the balance credit_tx_apply's UPDATE writes, or change a row after credit_tx_prepare
-- hashed it. The owner's own triggers are the owner's to answer for (credits:verify lists
-- every trigger that is not the ledger's); a built-in function (pg_catalog) is nobody's, and
-- counts as foreign. `triggers` is how many run inside a write (on the trail or
-- "CreditHold", any; on "User", those that fire on UPDATE), `own` how many of those are the
-- ledger's: the catalog is only read again when they differ.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_no_foreign_trigger"(relid oid, triggers bigint, own bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF triggers = own THEN
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
-- ledger:end functions/credit_rule_no_foreign_trigger.sql
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
     OR feature_type NOT IN ('document_generation', 'chat_message')
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
-- ledger:source functions/credit_rule_refund_cap.sql
-- Rule: the refunds of a deduction never add up to more than it. A refund with refund_of
-- names a deduction of its user and feature (BC004), and with the refunds before it stays
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
  IF NOT FOUND OR target.operation <> 'deduct' OR target.feature_type <> credit_rule_refund_cap.feature_type THEN
    RAISE EXCEPTION 'refund_of % is not a % deduction of user %', refund_of, feature_type, user_id
      USING ERRCODE = 'BC004',
            DETAIL = json_build_object('refundOf', refund_of,
              'reason', CASE WHEN NOT FOUND THEN
                               CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                                                  WHERE t.id = credit_rule_refund_cap.refund_of)
                                    THEN 'other_user' ELSE 'not_found' END
                             WHEN target.operation <> 'deduct' THEN 'not_a_deduction'
                             ELSE 'other_feature' END)::text;
  END IF;
  SELECT coalesce(sum(t.amount), 0) INTO refunded FROM "public"."CreditTransaction" t
    WHERE t.refund_of = credit_rule_refund_cap.refund_of AND t.user_id = credit_rule_refund_cap.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF refunded + amount > target.amount THEN
    IF idempotency_key IS NOT NULL AND EXISTS (
         SELECT 1 FROM "public"."CreditTransaction" t
          WHERE t.user_id = credit_rule_refund_cap.user_id AND t.idempotency_key = credit_rule_refund_cap.idempotency_key) THEN
      RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
        USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
    END IF;
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
-- ledger:source functions/credit_rule_snapshot_sees_triggers.sql
-- Rule (BC018): under REPEATABLE READ or SERIALIZABLE, no role but the owner holds TRIGGER on
-- the ledger's tables. There the census of triggers reads the catalog as of the
-- transaction's snapshot, while the executor fires the triggers the catalog has now: a
-- trigger created after the snapshot was taken is not in pg_trigger, and runs (one on "User"
-- set a balance after the guard approved it). PL/pgSQL has no fresher view of the catalog to
-- read; what can be seen is who could have created one. (A grant made after the snapshot is
-- the owner's act, which credits:verify is for.)
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_snapshot_sees_triggers"(relid oid) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  trigger_holders text;
BEGIN
  IF current_setting('transaction_isolation') = 'read committed' THEN
    RETURN true;
  END IF;
  SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
    INTO trigger_holders
    FROM pg_class c, aclexplode(c.relacl) a
   WHERE c.oid IN (relid, '"public"."CreditTransaction"'::regclass, '"public"."User"'::regclass,
                   '"public"."CreditHold"'::regclass)
     AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner;
  IF trigger_holders IS NOT NULL THEN
    RAISE EXCEPTION 'under %, a ledger write cannot see a trigger created after its snapshot, and % may create one (TRIGGER on the ledger''s tables)',
        upper(current_setting('transaction_isolation')), trigger_holders
      USING ERRCODE = 'BC018', DETAIL = json_build_object('roles', trigger_holders)::text,
            HINT = 'Write at READ COMMITTED (the default), or REVOKE TRIGGER ON "User", "CreditTransaction", "CreditHold" FROM those roles.';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_snapshot_sees_triggers.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_sufficient.sql
-- Rule (BC001): a balance never goes below zero: a deduction or a hold takes only what is
-- there. A retry of a request that already spent the balance is a replay, not "insufficient
-- credits": it is reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_sufficient"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text, available integer
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  balance text;
BEGIN
  IF available >= amount THEN
    RETURN true;
  END IF;
  IF idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditTransaction" t
        WHERE t.user_id = credit_rule_sufficient.user_id AND t.idempotency_key = credit_rule_sufficient.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  balance := CASE WHEN feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  RAISE EXCEPTION 'user % has % % but % is required', user_id, available, balance, amount
    USING ERRCODE = 'BC001',
          DETAIL = json_build_object('userId', user_id, 'balance', balance,
            'available', available, 'required', amount)::text;
END;
$$;
-- ledger:end functions/credit_rule_sufficient.sql
--> statement-breakpoint
-- ledger:source functions/credit_tx_prepare.sql
-- BEFORE INSERT on the trail: lock the user, check, number, date and hash the row. No side
-- effect here may survive the row being skipped (ON CONFLICT) or refused, so this only reads,
-- locks and writes the expire rows of the user's due holds (statements of their own, undone
-- with this one). Each rule is a function of its own (credit_rule_*), with its error code and
-- the reason it exists; this one reads what they need under the user's lock and calls them in
-- order. A rule returns true or raises, so that it is called as an expression (about 0.5 µs;
-- a PERFORM costs three times that), and the rules of other operations are not called.
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
  -- `own` lists the ledger's triggers (table, name, function, pg_trigger.tgtype): adding one
  -- is one line here, and every count below follows from the list.
  WITH own(relid, name, fn, type) AS (
    VALUES (TG_RELID, 'credit_tx_prepare', '"credit_ledger"."credit_tx_prepare"()'::regprocedure, 7),
           (TG_RELID, 'credit_tx_apply', '"credit_ledger"."credit_tx_apply"()'::regprocedure, 5),
           (TG_RELID, 'credit_tx_append_only', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 27),
           (TG_RELID, 'credit_tx_no_truncate', '"credit_ledger"."credit_tx_append_only"()'::regprocedure, 34),
           ('"public"."User"'::regclass, 'user_ledger_guard', '"credit_ledger"."user_ledger_guard"()'::regprocedure, 19),
           ('"public"."User"'::regclass, 'user_ledger_open', '"credit_ledger"."user_ledger_open"()'::regprocedure, 7),
           ('"public"."User"'::regclass, 'user_ledger_opening', '"credit_ledger"."user_ledger_opening"()'::regprocedure, 5),
           ('"public"."User"'::regclass, 'user_ledger_delete', '"credit_ledger"."user_ledger_delete"()'::regprocedure, 11),
           ('"public"."CreditHold"'::regclass, 'credit_hold_guard', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 31),
           ('"public"."CreditHold"'::regclass, 'credit_hold_no_truncate', '"credit_ledger"."credit_hold_guard"()'::regprocedure, 34))
  SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash,
         (SELECT count(*) FROM own) AS expected,
         -- Present, enabled, with its own function and events, and plain (credit_rule_installed).
         (SELECT count(*) FROM pg_trigger t JOIN own ON t.tgrelid = own.relid AND t.tgname = own.name
           WHERE t.tgfoid = own.fn AND t.tgtype = own.type AND t.tgenabled IN ('O', 'A')
             AND t.tgqual IS NULL AND t.tgattr::text = '' AND NOT t.tgdeferrable AND t.tgnargs = 0) AS installed,
         -- The ledger's triggers that run inside a write: on the trail or "CreditHold", or on
         -- "User" firing on UPDATE; and how many triggers do (credit_rule_no_foreign_trigger).
         (SELECT count(*) FROM own WHERE own.relid <> '"public"."User"'::regclass OR own.type & 16 <> 0) AS own_inside,
         (SELECT count(*) FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
             AND NOT t.tgisinternal
             AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0)) AS triggers,
         -- Foreign keys onto the trail or "CreditHold" of tables the owner does not own
         -- (credit_rule_no_foreign_reference): each has internal triggers on the table it references.
         (SELECT count(*) FROM pg_trigger t
            JOIN pg_constraint k ON k.oid = t.tgconstraint
            JOIN pg_class r ON r.oid = k.conrelid
           WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
             AND t.tgisinternal AND k.contype = 'f' AND k.confrelid = t.tgrelid
             AND r.relowner <> (SELECT c.relowner FROM pg_class c
                                 WHERE c.oid = '"public"."CreditTransaction"'::regclass)) AS foreign_keys,
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           (SELECT l.max_amount FROM "credit_ledger"."credit_limit" l
             WHERE l.feature_type = NEW.feature_type AND l.period = 'day') END AS daily_limit,
         (SELECT min(h.expires_at) FROM "public"."CreditHold" h WHERE h.user_id = NEW.user_id) AS next_expiry,
         (SELECT s.ledger_seq FROM "public"."User" s WHERE s.id = NEW.user_id) AS seen_seq
    INTO census FROM "public"."User" u WHERE u.id = NEW.user_id FOR NO KEY UPDATE OF u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  credits := census.free_credits;
  chats := census.free_chat_messages;
  head := census.ledger_seq;
  head_hash := census.ledger_hash;

  ok := "credit_ledger"."credit_rule_installed"(census.installed, census.expected);
  ok := "credit_ledger"."credit_rule_no_foreign_trigger"(TG_RELID, census.triggers, census.own_inside);
  ok := "credit_ledger"."credit_rule_no_foreign_reference"(TG_RELID, census.foreign_keys);
  ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  ok := "credit_ledger"."credit_rule_hold_columns"(NEW.operation, NEW.hold_id, NEW.hold_expires_at);

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

  NEW.seq := "credit_ledger"."credit_rule_opening_row"(NEW.user_id, NEW.operation, NEW.feature_type,
    NEW.amount, NEW.metadata, NEW.idempotency_key, NEW.refund_of, head, credits, chats);
  IF head < 0 THEN
    NEW.balance_after := NEW.amount;
  ELSE
    IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
      ok := "credit_ledger"."credit_rule_refund_cap"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.refund_of, NEW.idempotency_key);
    ELSIF NEW.hold_id IS NOT NULL THEN
      held := "credit_ledger"."credit_rule_hold_close"(NEW.user_id, NEW.operation, NEW.feature_type,
        NEW.amount, NEW.hold_id, at);
    ELSIF NEW.operation = 'hold' THEN
      ok := "credit_ledger"."credit_rule_hold_expiry"(NEW.hold_expires_at, at);
    END IF;
    next_balance := available::bigint + "credit_ledger"."credit_balance_effect"(NEW.operation, NEW.amount, held);
    IF next_balance IS NULL THEN
      RAISE EXCEPTION 'the credits ledger does not know what operation % does to a balance', NEW.operation
        USING ERRCODE = 'BC009', HINT = 'Add it to credit_ledger.credit_balance_effect (ledger/functions/credit_balance_effect.sql) and run pnpm db:ledger.';
    END IF;
    IF next_balance < available THEN
      ok := "credit_ledger"."credit_rule_sufficient"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.idempotency_key, available);
      ok := "credit_ledger"."credit_rule_daily_limit"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.idempotency_key, at, census.daily_limit);
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
