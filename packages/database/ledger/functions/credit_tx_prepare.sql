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
