-- Credit holds: credits taken from a balance now, then settled (charged in part or in full,
-- the rest given back), voided, or expired, each exactly once, even when the process that
-- took the hold dies. The trail records all of it: a `hold` row takes the amount, and one
-- `settle`, `void` or `expire` row (hold_id = the hold row's id) closes it. "CreditHold"
-- lists the holds still open, so that due ones are found without reading the trail.
--
-- drizzle-kit generated the schema change (see meta/0004_snapshot.json); the functions and
-- triggers below were added by hand before it was ever applied, in the same migration so
-- that the new operations are never written without the rules that check them. The enum
-- values added here are not used by this migration's own statements outside function
-- bodies (PostgreSQL refuses a new enum value before its transaction commits).
--
-- New SQLSTATEs (src/credits/errors.ts): BC012 unknown hold (or another user's, another
-- balance's, not a hold), BC013 hold already closed (settled, voided or expired), BC014 an
-- amount that does not fit the hold, BC015 an expiry before the hold's time, BC016 hold
-- columns on a row that is not a hold, or an expiry out of bounds.

ALTER TYPE "public"."operation_type" ADD VALUE 'hold';--> statement-breakpoint
ALTER TYPE "public"."operation_type" ADD VALUE 'settle';--> statement-breakpoint
ALTER TYPE "public"."operation_type" ADD VALUE 'void';--> statement-breakpoint
ALTER TYPE "public"."operation_type" ADD VALUE 'expire';--> statement-breakpoint
CREATE TABLE "CreditHold" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"amount" integer NOT NULL,
	"feature_type" "feature_type" NOT NULL,
	"expires_at" timestamp (3) with time zone NOT NULL,
	"created_at" timestamp (3) with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "hold_id" uuid;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "hold_expires_at" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "CreditHold" ADD CONSTRAINT "CreditHold_id_CreditTransaction_id_fk" FOREIGN KEY ("id") REFERENCES "public"."CreditTransaction"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "CreditHold" ADD CONSTRAINT "CreditHold_user_id_User_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."User"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "credit_hold_user_expires_idx" ON "CreditHold" USING btree ("user_id","expires_at");--> statement-breakpoint
CREATE INDEX "credit_hold_expires_idx" ON "CreditHold" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "credit_tx_hold_close_idx" ON "CreditTransaction" USING btree ("hold_id") WHERE "CreditTransaction"."hold_id" is not null;--> statement-breakpoint

-- The hash of a trail row, as 0003's with the two hold columns: appended to the hashed array
-- only when one is set, so that every row written before this migration keeps its hash (the
-- array of the other rows is exactly 0003's). `credits:verify` recomputes it with its own copy.
-- credit_tx_prepare is replaced first, so that nothing calls the old one once it is dropped.
CREATE OR REPLACE FUNCTION "public"."credit_tx_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  chat boolean := NEW.feature_type = 'chat_message';
  balance_name text := CASE WHEN NEW.feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  closes boolean := NEW.operation IN ('settle', 'void', 'expire');
  u record;
  h record;
  available integer;
  next_balance bigint;
  target "public"."CreditTransaction"%ROWTYPE;
  closing "public"."CreditTransaction"%ROWTYPE;
  refunded bigint;
  at timestamptz;
  now_ts timestamptz;
BEGIN
  -- Only as the trail's own trigger: the owner could attach this function to a table of its own.
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "public"."credit_tx_is_trail"(TG_RELID) THEN
    RAISE EXCEPTION 'credit_tx_prepare() runs only as the BEFORE INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  -- A row is only written when the rest of the ledger will apply and guard it: every ledger
  -- trigger present, enabled, on its own table, with its own function and events, and plain
  -- (no WHEN clause, column list or deferral that could make it skip a row). With
  -- credit_tx_apply disabled, say, a row would be recorded but never applied; with
  -- credit_hold_guard disabled, an open hold could be deleted and never expire.
  IF (SELECT count(*) FROM pg_trigger t
        JOIN (VALUES (TG_RELID, 'credit_tx_prepare', '"public"."credit_tx_prepare"()'::regprocedure, 7),
                     (TG_RELID, 'credit_tx_apply', '"public"."credit_tx_apply"()'::regprocedure, 5),
                     (TG_RELID, 'credit_tx_append_only', '"public"."credit_tx_append_only"()'::regprocedure, 27),
                     (TG_RELID, 'credit_tx_no_truncate', '"public"."credit_tx_append_only"()'::regprocedure, 34),
                     ('"public"."User"'::regclass, 'user_ledger_guard', '"public"."user_ledger_guard"()'::regprocedure, 19),
                     ('"public"."User"'::regclass, 'user_ledger_open', '"public"."user_ledger_open"()'::regprocedure, 7),
                     ('"public"."User"'::regclass, 'user_ledger_opening', '"public"."user_ledger_opening"()'::regprocedure, 5),
                     ('"public"."User"'::regclass, 'user_ledger_delete', '"public"."user_ledger_delete"()'::regprocedure, 11),
                     ('"public"."CreditHold"'::regclass, 'credit_hold_guard', '"public"."credit_hold_guard"()'::regprocedure, 31),
                     ('"public"."CreditHold"'::regclass, 'credit_hold_no_truncate', '"public"."credit_hold_guard"()'::regprocedure, 34))
             AS want(relid, name, fn, type)
          ON t.tgrelid = want.relid AND t.tgname = want.name
       WHERE t.tgfoid = want.fn AND t.tgtype = want.type AND t.tgenabled IN ('O', 'A')
         AND t.tgqual IS NULL AND t.tgattr::text = '' AND NOT t.tgdeferrable AND t.tgnargs = 0) <> 10 THEN
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
  IF u.ledger_seq >= 0 AND NEW.operation <> 'expire' THEN
    -- The time as a value, not clock_timestamp() in the condition: a volatile call there
    -- cannot bound the index scan, which would read every open hold of the user.
    now_ts := clock_timestamp();
    FOR h IN SELECT id, amount, feature_type FROM "public"."CreditHold"
              WHERE user_id = NEW.user_id AND expires_at <= now_ts
                AND id IS DISTINCT FROM NEW.hold_id
              ORDER BY expires_at, id LOOP
      INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        VALUES (NEW.user_id, h.amount, 'expire', h.feature_type, h.id);
    END LOOP;
    IF FOUND THEN
      SELECT free_credits, free_chat_messages, ledger_seq, ledger_hash INTO u
        FROM "public"."User" WHERE id = NEW.user_id;
    END IF;
  END IF;
  available := CASE WHEN chat THEN u.free_chat_messages ELSE u.free_credits END;
  -- This row's time, taken once the rows before it are written: every check of an expiry
  -- below compares with the time the row is dated with.
  at := date_trunc('milliseconds', clock_timestamp());

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

    IF closes THEN
      -- The hold this row closes: a hold row of this user and balance, open, and (for a
      -- settlement or a void) not past its expiry, or (for an expiry) past it. The user's
      -- lock serialises every closing of the hold (the hold is this user's); under REPEATABLE
      -- READ a closing committed after this snapshot moved the user's head, so the lock above
      -- already failed with a serialization error. credit_tx_hold_close_idx is the last word.
      SELECT * INTO target FROM "public"."CreditTransaction"
        WHERE id = NEW.hold_id AND user_id = NEW.user_id AND "public"."credit_tx_is_trail"(tableoid);
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
        WHERE hold_id = NEW.hold_id AND "public"."credit_tx_is_trail"(tableoid);
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
        RAISE EXCEPTION 'the % of user % would exceed 2147483647', balance_name, NEW.user_id
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
      IF NEW.operation = 'hold' AND NEW.hold_expires_at > at + interval '1 day 1 minute' THEN
        RAISE EXCEPTION 'a hold expires within a day of being taken, not at %', NEW.hold_expires_at
          USING ERRCODE = 'BC016', DETAIL = json_build_object('field', 'expiresInMs', 'reason', 'must be within a day')::text;
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
        RAISE EXCEPTION 'user % has % % but % is required', NEW.user_id, available, balance_name, NEW.amount
          USING ERRCODE = 'BC001',
                DETAIL = json_build_object('userId', NEW.user_id, 'balance', balance_name,
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
        RAISE EXCEPTION 'the % of user % would exceed 2147483647 (with its open holds)', balance_name, NEW.user_id
          USING ERRCODE = 'numeric_value_out_of_range';
      END IF;
      NEW.balance_after := next_balance;
    END IF;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := at;
  NEW.hash := "public"."credit_tx_hash"(u.ledger_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at);
  RETURN NEW;
END;
$$;--> statement-breakpoint
DROP FUNCTION "public"."credit_tx_hash"(text, uuid, uuid, bigint, "public"."operation_type", "public"."feature_type", integer, integer, timestamptz, text, uuid, jsonb);--> statement-breakpoint
CREATE FUNCTION "public"."credit_tx_hash"(
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
$$;--> statement-breakpoint

-- credit_tx_apply as in 0003, and then the hold's row in "CreditHold": added for a hold,
-- removed for the row that closes it. Its first three lines are 0003's exactly: the UPDATE on
-- line 3 is what user_ledger_guard recognises on the call stack.
CREATE OR REPLACE FUNCTION "public"."credit_tx_apply"() RETURNS trigger
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
  IF NEW.operation = 'hold' THEN
    INSERT INTO "public"."CreditHold" (id, user_id, amount, feature_type, expires_at, created_at)
      VALUES (NEW.id, NEW.user_id, NEW.amount, NEW.feature_type, NEW.hold_expires_at, NEW.created_at);
  ELSIF NEW.hold_id IS NOT NULL THEN
    DELETE FROM "public"."CreditHold" WHERE id = NEW.hold_id;
  END IF;
  RETURN NULL;
END;
$$;--> statement-breakpoint

-- "CreditHold" holds exactly the trail's open holds. Its rows are checked against the trail,
-- not against who writes them: a row is added only for a hold row of the trail, with its
-- values, that nothing has closed; removed only once the trail closed that hold, or with its
-- user; never changed. So no UPDATE or DELETE, from anyone, can make a hold never expire, or
-- fake one for the sweeper (an expire row is checked against the trail again anyway).
CREATE FUNCTION "public"."credit_hold_guard"() RETURNS trigger
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
                WHERE t.id = NEW.id AND t.operation = 'hold' AND "public"."credit_tx_is_trail"(t.tableoid)
                  AND t.user_id = NEW.user_id AND t.amount = NEW.amount AND t.feature_type = NEW.feature_type
                  AND t.hold_expires_at = NEW.expires_at AND t.created_at = NEW.created_at)
       AND NOT EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                        WHERE c.hold_id = NEW.id AND "public"."credit_tx_is_trail"(c.tableoid)) THEN
      RETURN NEW;
    END IF;
  ELSIF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM "public"."User" WHERE id = OLD.user_id)
       OR EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                   WHERE c.hold_id = OLD.id AND "public"."credit_tx_is_trail"(c.tableoid)) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '"CreditHold" lists the open holds of the credit trail: % is refused', TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Settle, void or expire a hold through the ledger (settleCreditHold, voidCreditHold, expireCreditHolds).';
END;
$$;--> statement-breakpoint
CREATE TRIGGER "credit_hold_guard" BEFORE INSERT OR UPDATE OR DELETE ON "CreditHold"
  FOR EACH ROW EXECUTE FUNCTION "public"."credit_hold_guard"();--> statement-breakpoint
CREATE TRIGGER "credit_hold_no_truncate" BEFORE TRUNCATE ON "CreditHold"
  FOR EACH STATEMENT EXECUTE FUNCTION "public"."credit_hold_guard"();--> statement-breakpoint
REVOKE EXECUTE ON FUNCTION "public"."credit_hold_guard"() FROM PUBLIC;--> statement-breakpoint

-- The sweeper: expires up to max_rows holds past their expiry, earliest first, each with an
-- expire row of its own, and returns those rows. It runs as its owner, so that an app role
-- with no UPDATE on "User" (which the lock below needs) can run it too; anyone may, since
-- all it can do is what any write or balance read of those users does: the expire rows it
-- inserts are checked by the triggers like any other. Each user's lock is taken
-- first, as every ledger write takes it; users another session is writing are skipped (that
-- write expires their due holds itself) unless one user is asked for, which waits. After the
-- lock, a hold closed meanwhile is no longer listed, so concurrent sweepers, settlements and
-- voids never close one twice (and credit_tx_hold_close_idx would refuse it).
CREATE FUNCTION "public"."credit_holds_expire"(max_rows integer, only_user uuid DEFAULT NULL)
RETURNS SETOF "public"."CreditTransaction"
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
DECLARE
  h record;
  r "public"."CreditTransaction"%ROWTYPE;
  done integer := 0;
  now_ts timestamptz := clock_timestamp();
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
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
      SELECT user_id, amount, 'expire', feature_type, id FROM "public"."CreditHold" WHERE id = h.id
      RETURNING * INTO r;
    CONTINUE WHEN r.id IS NULL;
    RETURN NEXT r;
    done := done + 1;
    r := NULL;
  END LOOP;
END;
$$;
