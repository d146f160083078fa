-- Custom SQL migration file, put your code below! --
-- The credits ledger, enforced by the database (drizzle-kit cannot express triggers).
-- SQLSTATEs of class BC are this ledger's own; src/credits/errors.ts maps them to typed errors.
--   BC001 insufficient balance       BC002 unknown user            BC003 refund exceeds its deduction
--   BC004 invalid refund target      BC005 append-only trail       BC006 balance changed outside the ledger
--   BC007 capped refund under REPEATABLE READ

-- Every balance change is one INSERT into "CreditTransaction": this BEFORE INSERT trigger
-- applies it to "User" with a conditional UPDATE … RETURNING and records the balance after
-- it in the row, all in the INSERT's own statement, so a failed INSERT undoes the UPDATE.
--
-- It locks the user's row first, so every write of one user runs one at a time, always
-- taking the user's lock before any other (no deadlock between refunds and other writes).
-- Under that lock it refuses a duplicate idempotency key or id itself, before any balance
-- check or change: a retry of a request that already spent the whole balance is a replay,
-- not "insufficient credits"; and `INSERT … ON CONFLICT DO NOTHING`, which runs BEFORE
-- triggers and only then skips the conflicting row, gets an error instead of a balance
-- change without its row.
CREATE FUNCTION credit_tx_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  chat boolean := NEW.feature_type = 'chat_message';
  balance_name text := CASE WHEN NEW.feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  new_balance integer;
  available integer;
  target "CreditTransaction"%ROWTYPE;
  refunded bigint;
BEGIN
  SELECT CASE WHEN chat THEN free_chat_messages ELSE free_credits END INTO available
    FROM "User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;

  IF NEW.idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "CreditTransaction"
       WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  IF EXISTS (SELECT 1 FROM "CreditTransaction" WHERE id = NEW.id) THEN
    RAISE EXCEPTION 'transaction % already exists', NEW.id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'CreditTransaction_pkey';
  END IF;

  IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
    -- The cap below reads the committed refunds; a REPEATABLE READ snapshot would not see a
    -- concurrent one, so two refunds could both pass. READ COMMITTED and SERIALIZABLE are safe.
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
      RAISE EXCEPTION 'a refund of a deduction cannot run under REPEATABLE READ'
        USING ERRCODE = 'BC007', HINT = 'Use READ COMMITTED (the default) or SERIALIZABLE.';
    END IF;
    -- The user's lock, taken above, already serialises the refunds of this deduction (it is
    -- the same user's): each one here sees those committed before it.
    SELECT * INTO target FROM "CreditTransaction"
      WHERE id = NEW.refund_of AND user_id = NEW.user_id;
    IF NOT FOUND OR target.operation <> 'deduct' OR target.feature_type <> NEW.feature_type THEN
      RAISE EXCEPTION 'refund_of % is not a % deduction of user %', NEW.refund_of, NEW.feature_type, NEW.user_id
        USING ERRCODE = 'BC004',
              DETAIL = json_build_object('refundOf', NEW.refund_of,
                'reason', CASE WHEN NOT FOUND THEN
                                 CASE WHEN EXISTS (SELECT 1 FROM "CreditTransaction" WHERE id = NEW.refund_of)
                                      THEN 'other_user' ELSE 'not_found' END
                               WHEN target.operation <> 'deduct' THEN 'not_a_deduction'
                               ELSE 'other_feature' END)::text;
    END IF;
    SELECT coalesce(sum(amount), 0) INTO refunded FROM "CreditTransaction"
      WHERE refund_of = NEW.refund_of AND user_id = NEW.user_id;
    IF refunded + NEW.amount > target.amount THEN
      RAISE EXCEPTION 'refund of % would exceed deduction % (% deducted, % refunded already)',
          NEW.amount, NEW.refund_of, target.amount, refunded
        USING ERRCODE = 'BC003',
              DETAIL = json_build_object('refundOf', NEW.refund_of, 'deducted', target.amount,
                'refunded', refunded, 'requested', NEW.amount)::text;
    END IF;
  END IF;

  IF NEW.operation = 'deduct' AND available < NEW.amount THEN
    RAISE EXCEPTION 'user % has % % but % is required', NEW.user_id, available, balance_name, NEW.amount
      USING ERRCODE = 'BC001',
            DETAIL = json_build_object('userId', NEW.user_id, 'balance', balance_name,
              'available', available, 'required', NEW.amount)::text;
  END IF;

  -- Lets user_balance_guard() tell the ledger's UPDATE from any other.
  PERFORM set_config('bragdoc.ledger_write', 'on', true);
  IF NEW.operation = 'deduct' THEN
    IF chat THEN
      UPDATE "User" SET free_chat_messages = free_chat_messages - NEW.amount, updated_at = now()
        WHERE id = NEW.user_id AND free_chat_messages >= NEW.amount
        RETURNING free_chat_messages INTO new_balance;
    ELSE
      UPDATE "User" SET free_credits = free_credits - NEW.amount, updated_at = now()
        WHERE id = NEW.user_id AND free_credits >= NEW.amount
        RETURNING free_credits INTO new_balance;
    END IF;
  ELSIF chat THEN
    UPDATE "User" SET free_chat_messages = free_chat_messages + NEW.amount, updated_at = now()
      WHERE id = NEW.user_id RETURNING free_chat_messages INTO new_balance;
  ELSE
    UPDATE "User" SET free_credits = free_credits + NEW.amount, updated_at = now()
      WHERE id = NEW.user_id RETURNING free_credits INTO new_balance;
  END IF;
  PERFORM set_config('bragdoc.ledger_write', 'off', true);

  -- Under the user's lock the conditional UPDATE always finds its row; this is the last line
  -- of defence if it ever does not.
  IF new_balance IS NULL THEN
    RAISE EXCEPTION 'user % changed while locked', NEW.user_id USING ERRCODE = 'BC001',
      DETAIL = json_build_object('userId', NEW.user_id, 'balance', balance_name,
        'available', available, 'required', NEW.amount)::text;
  END IF;

  NEW.balance_after := new_balance;
  RETURN NEW;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER credit_tx_apply BEFORE INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_apply();
--> statement-breakpoint

-- A balance that changed without its ledger row would leave the trail unable to explain it.
CREATE FUNCTION user_balance_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- The flag alone could be set by any session (SET bragdoc.ledger_write = on), so the
  -- UPDATE must also come from inside a trigger: credit_tx_apply is one level up.
  IF (NEW.free_credits IS DISTINCT FROM OLD.free_credits
      OR NEW.free_chat_messages IS DISTINCT FROM OLD.free_chat_messages)
     AND (coalesce(current_setting('bragdoc.ledger_write', true), 'off') <> 'on'
          OR pg_trigger_depth() < 2) THEN
    RAISE EXCEPTION 'the balances of "User" % change only through "CreditTransaction"', OLD.id
      USING ERRCODE = 'BC006',
            HINT = 'Insert a grant, deduct or refund row (grantCredits, deductCredits, refundCredits).';
  END IF;
  RETURN NEW;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER user_balance_guard BEFORE UPDATE OF free_credits, free_chat_messages ON "User"
  FOR EACH ROW EXECUTE FUNCTION user_balance_guard();
--> statement-breakpoint

-- The audit trail is append-only. Rows leave it only with their user: the ON DELETE CASCADE
-- from "User" deletes them after the user row is gone, which is what this checks.
CREATE FUNCTION credit_tx_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM "User" WHERE id = OLD.user_id) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only: % is refused', format('%I', TG_TABLE_NAME), TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Correct a balance with a new grant, deduct or refund row; rows are removed only by deleting their user.';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER credit_tx_append_only BEFORE UPDATE OR DELETE ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_append_only();
--> statement-breakpoint
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();
