-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source functions/credit_refuse.sql
-- Raises the error a rule refuses a write with. Rules that need no table are SQL functions
-- of the form `CASE WHEN <refused> THEN credit_refuse(…) ELSE true END`, which PostgreSQL
-- inlines where they are called, so that a write that passes them pays no function call
-- (a PL/pgSQL call costs a write ~10–30 µs); this is the call made only when one refuses.
-- `detail` is the JSON the typed errors read (src/credits/errors.ts), or NULL for none.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_refuse"(
  code text, message text, detail text, hint text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF detail IS NULL AND hint IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
  ELSIF hint IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail;
  ELSIF detail IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, HINT = hint;
  END IF;
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail, HINT = hint;
END;
$$;
-- ledger:end functions/credit_refuse.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_balance_range.sql
-- Rule (22003): a balance stays an int4. A grant or a refund leaves room for the open holds of
-- its balance to come back (`held`, with `counts_holds`): the balance plus what is held never
-- passes the largest int4, so every hold can always be voided or expire. A closing row gives
-- back into exactly that room, so for it `held` is 0.
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why); the feature
-- is compared as text, as in credit_balance_effect.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_balance_range"(
  user_id uuid, feature_type "public"."feature_type", next_balance bigint, held bigint, counts_holds boolean
) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN (next_balance OPERATOR(pg_catalog.+) held) OPERATOR(pg_catalog.>) 2147483647
    THEN "credit_ledger"."credit_refuse"('22003',
      pg_catalog.format('the %s of user %s would exceed 2147483647%s',
        CASE WHEN feature_type::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{chat_message}'::pg_catalog.text[])
             THEN 'free_chat_messages' ELSE 'free_credits' END, user_id,
        CASE WHEN counts_holds THEN ' (with its open holds)' ELSE '' END),
      NULL, NULL)
    ELSE true END
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
  ok boolean;
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
  ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
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
  -- The hold's row in "CreditHold", which credit_tx_apply deletes, is locked with the read:
  -- here the wait is bounded by the caller's lock_timeout (a role with UPDATE on
  -- "CreditHold" can hold the row), so that credit_tx_apply needs no lock_timeout of its own.
  -- An open hold has that row; without it, the hold row is read alone, to say what is wrong.
  SELECT t.* INTO target FROM "public"."CreditTransaction" t, "public"."CreditHold" h
    WHERE t.id = credit_rule_hold_close.hold_id AND t.user_id = credit_rule_hold_close.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass) AND h.id = t.id
    FOR UPDATE OF h;
  IF NOT FOUND THEN
    SELECT * INTO target FROM "public"."CreditTransaction" t
      WHERE t.id = credit_rule_hold_close.hold_id AND t.user_id = credit_rule_hold_close.user_id
        AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  END IF;
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
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why); the operation
-- is compared as text, as in credit_balance_effect.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_columns"(
  operation "public"."operation_type", hold_id uuid, hold_expires_at timestamptz
) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN (hold_expires_at IS NOT NULL) OPERATOR(pg_catalog.<>) (operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{hold}'::pg_catalog.text[]))
      OR (hold_id IS NOT NULL) OPERATOR(pg_catalog.<>) (operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle,void,expire}'::pg_catalog.text[]))
    THEN "credit_ledger"."credit_refuse"('BC016',
      'hold_expires_at is set on hold rows only, and hold_id on settle, void and expire rows only',
      pg_catalog.json_build_object('field',
        CASE WHEN hold_id IS NOT NULL OR operation::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{settle,void,expire}'::pg_catalog.text[])
             THEN 'holdId' ELSE 'expiresInMs' END,
        'reason', 'is set on hold rows (expiry) or closing rows (hold id) only')::pg_catalog.text,
      NULL)
    ELSE true END
$$;
-- ledger:end functions/credit_rule_hold_columns.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_hold_expiry.sql
-- Rule (BC016): a hold expires after it is taken and within 24 hours of it. Its expiry was
-- computed when the INSERT started, so one that waited for the user's lock longer than the
-- hold was to last is refused rather than taken already due. 24 hours, not '1 day': a
-- timestamptz plus a day is a calendar day in the session's TimeZone (25 hours across a DST
-- change), which the inserter chooses.
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_expiry"(hold_expires_at timestamptz, at timestamptz) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN hold_expires_at OPERATOR(pg_catalog.<=) at
    THEN "credit_ledger"."credit_refuse"('BC016',
      pg_catalog.format('the hold would have expired at %s before it was taken at %s', hold_expires_at, at),
      pg_catalog.json_build_object('field', 'expiresInMs',
        'reason', 'had passed before the hold was taken (the write waited longer than that for the user''s lock); use a longer one')::pg_catalog.text,
      NULL)
    WHEN hold_expires_at OPERATOR(pg_catalog.>) (at OPERATOR(pg_catalog.+) '24 hours 1 minute'::pg_catalog.interval)
    THEN "credit_ledger"."credit_refuse"('BC016',
      pg_catalog.format('a hold expires within 24 hours of being taken, not at %s', hold_expires_at),
      pg_catalog.json_build_object('field', 'expiresInMs', 'reason', 'must be within 24 hours')::pg_catalog.text,
      NULL)
    ELSE true END
$$;
-- ledger:end functions/credit_rule_hold_expiry.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_key_unused.sql
-- Rule (23505, the unique index's own): a write that another rule is about to refuse, but
-- whose idempotency key this user already used, is a retry of a request that was applied:
-- it is reported as credit_tx_user_idempotency_key_idx would report the used key, so the
-- package replays the first row, rather than as the refusal (a retried deduction would
-- otherwise read "insufficient credits" once the first attempt had spent them). Called by
-- the rules that refuse on what earlier writes did (credit_rule_sufficient,
-- credit_rule_refund_cap, credit_rule_daily_limit) just before they raise.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_key_unused"(user_id uuid, idempotency_key text) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditTransaction" t
        WHERE t.user_id = credit_rule_key_unused.user_id AND t.idempotency_key = credit_rule_key_unused.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  RETURN true;
END;
$$;
-- ledger:end functions/credit_rule_key_unused.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_no_foreign_reference.sql
-- Rule (BC019): no foreign key of a table the ledger's owner does not own references the
-- trail or "CreditHold". REFERENCES (part of GRANT ALL) and CREATE on any schema let a role
-- make one and point it at a victim's hold: the hold could then never be closed, and every
-- write of that user, and the sweeper, would fail on it; one on a trail row keeps its user
-- from being deleted. The owner's own tables may reference them. `foreign_keys` is not 0
-- when credit_tx_prepare's census found a foreign key onto them from a table that is not
-- the ledger's (a foreign key creates internal triggers on the table it references); the
-- census does not look up owners (a join there is paid on every write), so this does, then.
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
  IF foreign_list IS NULL THEN
    RETURN true;
  END IF;
  RAISE EXCEPTION 'a foreign key of a table the ledger''s owner does not own references a ledger table: %', foreign_list
    USING ERRCODE = 'BC019', DETAIL = json_build_object('constraints', foreign_list)::text,
          HINT = 'It could keep a hold from ever closing, or a user from being deleted. Drop the constraint, or have the owner of the ledger tables own its table.';
END;
$$;
-- ledger:end functions/credit_rule_no_foreign_reference.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_no_foreign_triggers.sql
-- Rule (BC017): no trigger that is not the ledger's runs inside a write with a function the
-- tables' owner does not own. A role with the TRIGGER privilege (GRANT ALL grants it) could
-- otherwise run code of its own in the middle of the write, after the rules were checked:
-- set the balance credit_tx_apply's UPDATE writes, or change a row after credit_tx_prepare
-- hashed it. The owner's own triggers are the owner's to answer for (credits:verify lists
-- every trigger that is not the ledger's); a built-in function (pg_catalog) is nobody's, and
-- counts as foreign. `foreign_count` is not 0 when credit_tx_prepare's census found a
-- trigger that runs inside a write (on the trail or "CreditHold", any; on "User", those that
-- fire on UPDATE) with a function that is not one of the ledger's, or a foreign key it counts
-- above them: the catalog is only read again, for their functions' owners, then.
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
  ok boolean;
  balance text;
BEGIN
  IF available >= amount THEN
    RETURN true;
  END IF;
  ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
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
