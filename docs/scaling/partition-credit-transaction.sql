-- Range-partitions "CreditTransaction" by created_at (one partition per month), in place,
-- on a database migrated to 0006 (the ledger's functions in credit_ledger). docs/SCALING.md explains each step;
-- packages/database/test/scaling/partitioning.test.ts runs this file and checks the claims.
-- It runs in one transaction and takes an ACCESS EXCLUSIVE lock on the trail while it
-- copies: on a large table, create the new table first and backfill in batches instead.

BEGIN;

-- "CreditHold" lists the open holds, and its foreign key (id) -> "CreditTransaction"(id)
-- cannot exist on a partitioned table (id alone is not unique there). Nothing is lost:
-- credit_hold_guard already checks every "CreditHold" row against the trail (inserted only
-- for an open hold row of the trail, with its values; deleted only once the trail closes the
-- hold, or with its user), and trail rows are only ever deleted with their user, which
-- CreditHold.user_id's ON DELETE CASCADE follows.
ALTER TABLE "CreditHold" DROP CONSTRAINT "CreditHold_id_CreditTransaction_id_fk";

ALTER TABLE "CreditTransaction" RENAME TO "CreditTransaction_unpartitioned";
-- The old table keeps its constraints and indexes under their names; free the names.
ALTER INDEX credit_tx_user_id_idx RENAME TO credit_tx_user_id_idx_old;
ALTER INDEX credit_tx_created_at_idx RENAME TO credit_tx_created_at_idx_old;
ALTER INDEX credit_tx_user_created_at_idx RENAME TO credit_tx_user_created_at_idx_old;
ALTER INDEX credit_tx_user_idempotency_key_idx RENAME TO credit_tx_user_idempotency_key_idx_old;
ALTER INDEX credit_tx_refund_of_idx RENAME TO credit_tx_refund_of_idx_old;
ALTER INDEX credit_tx_user_seq_idx RENAME TO credit_tx_user_seq_idx_old;
ALTER INDEX credit_tx_hold_close_idx RENAME TO credit_tx_hold_close_idx_old;

CREATE TABLE "CreditTransaction" (
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  -- Named as the migrations name it (credits:verify looks it up by name).
  user_id uuid NOT NULL CONSTRAINT "CreditTransaction_user_id_User_id_fk" REFERENCES "User"(id) ON DELETE CASCADE,
  amount integer NOT NULL CONSTRAINT credit_tx_amount_positive CHECK (amount > 0),
  operation operation_type NOT NULL,
  feature_type feature_type NOT NULL,
  metadata jsonb,
  created_at timestamp(3) with time zone NOT NULL DEFAULT now(),
  balance_after integer NOT NULL CONSTRAINT credit_tx_balance_after_non_negative CHECK (balance_after >= 0),
  idempotency_key text,
  -- No foreign key: a key on a partitioned table must include created_at, so refund_of
  -- cannot reference id alone. The ledger trigger checks the target instead (it always did).
  refund_of uuid,
  seq bigint NOT NULL,
  hash text NOT NULL,
  -- The hold columns of 0004, in the same place: checked by credit_tx_prepare, as before.
  hold_id uuid,
  hold_expires_at timestamp(3) with time zone,
  -- The columns of 0012 (plans) and 0014 (grants), in the same place: set and hashed by
  -- credit_tx_prepare.
  covered_by_plan text,
  actor text,
  source credit_source,
  grant_expires_at timestamp(3) with time zone,
  allocations jsonb,
  CONSTRAINT credit_tx_refund_of_only_on_refunds CHECK (refund_of IS NULL OR operation = 'refund'),
  -- Every unique constraint of a partitioned table includes the partition key.
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- Created on the parent, these exist on every partition, present and future.
CREATE INDEX credit_tx_user_id_idx ON "CreditTransaction" (user_id);
CREATE INDEX credit_tx_created_at_idx ON "CreditTransaction" (created_at);
CREATE INDEX credit_tx_user_created_at_idx ON "CreditTransaction" (user_id, created_at);
CREATE INDEX credit_tx_refund_of_idx ON "CreditTransaction" (refund_of) WHERE refund_of IS NOT NULL;
-- A user's history in apply order. Not unique (it cannot be without created_at): the ledger
-- numbers rows under the user's lock, and credit_tx_apply refuses a row whose seq another row
-- of the same statement took, which is what the unique index did first on the plain table.
CREATE INDEX credit_tx_user_seq_idx ON "CreditTransaction" (user_id, seq);
-- Not unique (it cannot be, see below): serves the ledger trigger's "was this key used?".
CREATE INDEX credit_tx_user_idempotency_key_lookup_idx ON "CreditTransaction" (user_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- Not unique either (see credit_hold_closing below): serves "is this hold closed?" in
-- credit_tx_prepare and credit_hold_guard.
CREATE INDEX credit_tx_hold_close_lookup_idx ON "CreditTransaction" (hold_id)
  WHERE hold_id IS NOT NULL;

-- Idempotency must stay unique per user across all partitions, which a partitioned index
-- cannot give (it would have to include created_at). A small unpartitioned table claims
-- each key; its primary key takes the old index's name, so the package's error handling
-- (a unique violation on credit_tx_user_idempotency_key_idx means "replay") is unchanged.
CREATE TABLE credit_idempotency_key (
  user_id uuid NOT NULL REFERENCES "User"(id) ON DELETE CASCADE,
  idempotency_key text NOT NULL,
  transaction_id uuid NOT NULL,
  CONSTRAINT credit_tx_user_idempotency_key_idx PRIMARY KEY (user_id, idempotency_key)
);

-- Claimed keys are part of the trail: deleting one would let a retry charge again.
CREATE TRIGGER credit_idempotency_key_append_only BEFORE UPDATE OR DELETE ON credit_idempotency_key
  FOR EACH ROW EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_idempotency_key_no_truncate BEFORE TRUNCATE ON credit_idempotency_key
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();

-- A hold closes once: one settle, void or expire row per hold_id, across all partitions.
-- credit_tx_prepare already refuses a second closing under the user's lock (BC013); the
-- unique credit_tx_hold_close_idx was the last word on the plain table, and a partitioned
-- index cannot be unique on hold_id alone. This table is that last word now, claimed like the
-- idempotency keys, and its primary key takes the old index's name.
CREATE TABLE credit_hold_closing (
  hold_id uuid NOT NULL,
  user_id uuid NOT NULL REFERENCES "User"(id) ON DELETE CASCADE,
  transaction_id uuid NOT NULL,
  CONSTRAINT credit_tx_hold_close_idx PRIMARY KEY (hold_id)
);

CREATE TRIGGER credit_hold_closing_append_only BEFORE UPDATE OR DELETE ON credit_hold_closing
  FOR EACH ROW EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_hold_closing_no_truncate BEFORE TRUNCATE ON credit_hold_closing
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();

-- A claim is checked against the trail, not against who writes it: a role that may INSERT
-- into these tables could otherwise claim another user's key, or a hold nobody closed (which
-- would then never close, and every later write of its user would fail).
CREATE FUNCTION credit_claim_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $$
BEGIN
  IF TG_WHEN = 'BEFORE' AND TG_OP = 'INSERT' AND TG_LEVEL = 'ROW'
     AND TG_RELID = '"public".credit_idempotency_key'::regclass THEN
    IF EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                WHERE t.id = NEW.transaction_id AND t.user_id = NEW.user_id
                  AND t.idempotency_key = NEW.idempotency_key AND "credit_ledger".credit_tx_is_trail(t.tableoid::pg_catalog.regclass)) THEN
      RETURN NEW;
    END IF;
  ELSIF TG_WHEN = 'BEFORE' AND TG_OP = 'INSERT' AND TG_LEVEL = 'ROW'
     AND TG_RELID = '"public".credit_hold_closing'::regclass THEN
    IF EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                WHERE t.id = NEW.transaction_id AND t.user_id = NEW.user_id
                  AND t.hold_id = NEW.hold_id AND "credit_ledger".credit_tx_is_trail(t.tableoid::pg_catalog.regclass)) THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION '% claims only what the credit trail records', format('%I', TG_TABLE_NAME)
    USING ERRCODE = 'BC005', HINT = 'Keys and hold closings are claimed by the ledger''s own triggers.';
END;
$$;
CREATE TRIGGER credit_idempotency_key_guard BEFORE INSERT ON credit_idempotency_key
  FOR EACH ROW EXECUTE FUNCTION credit_claim_guard();
CREATE TRIGGER credit_hold_closing_guard BEFORE INSERT ON credit_hold_closing
  FOR EACH ROW EXECUTE FUNCTION credit_claim_guard();

-- Claims for rows of the trail only: the function refuses to run as another table's trigger.
CREATE FUNCTION credit_tx_claim() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $$
BEGIN
  IF TG_WHEN <> 'AFTER' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger".credit_tx_is_trail(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_claim() runs only as an AFTER INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;
  IF NEW.idempotency_key IS NOT NULL THEN
    INSERT INTO "public".credit_idempotency_key (user_id, idempotency_key, transaction_id)
    VALUES (NEW.user_id, NEW.idempotency_key, NEW.id);
  END IF;
  IF NEW.hold_id IS NOT NULL THEN
    INSERT INTO "public".credit_hold_closing (hold_id, user_id, transaction_id)
    VALUES (NEW.hold_id, NEW.user_id, NEW.id);
  END IF;
  RETURN NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION credit_claim_guard(), credit_tx_claim() FROM PUBLIC;

-- Monthly partitions; a job creates next month's ahead of time. The default partition
-- catches anything outside them, so an insert never fails for want of a partition.
CREATE TABLE "CreditTransaction_2026_10" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE "CreditTransaction_2026_11" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE "CreditTransaction_2026_12" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
CREATE TABLE "CreditTransaction_default" PARTITION OF "CreditTransaction" DEFAULT;

-- Row triggers on the parent are cloned to every partition (PostgreSQL 13+), under the
-- same name: a row's triggers then fire with TG_RELID = its partition, so credit_tx_prepare's
-- check that the ledger is installed finds credit_tx_prepare, credit_tx_apply and
-- credit_tx_append_only there, and credit_tx_no_truncate, created on each partition below
-- (and the "User" and "CreditHold" triggers, untouched). Keys and hold closings are claimed
-- AFTER INSERT, like the balance is applied: only for a row that was really written (ON
-- CONFLICT DO NOTHING skips a row after its BEFORE triggers). Either failing undoes the
-- whole INSERT.
CREATE TRIGGER credit_tx_prepare BEFORE INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_ledger.credit_tx_prepare();
CREATE TRIGGER credit_tx_apply AFTER INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_ledger.credit_tx_apply();
CREATE TRIGGER credit_tx_claim AFTER INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_claim();
CREATE TRIGGER credit_tx_append_only BEFORE UPDATE OR DELETE ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
-- A statement trigger fires only for the table a statement names, so TRUNCATE is refused
-- on the parent and on each partition (the partition job adds it to new partitions).
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_10"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_11"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_12"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_default"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger.credit_tx_append_only();

-- Move the rows over with the triggers of the new table off (the balances and "CreditHold"
-- already include them, and their seq and hash stay as they are), and their idempotency keys
-- and hold closings with them.
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_prepare;
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_apply;
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_claim;
INSERT INTO "CreditTransaction"
  (id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, idempotency_key, refund_of, seq, hash,
   hold_id, hold_expires_at, covered_by_plan, actor, source, grant_expires_at, allocations)
SELECT id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, idempotency_key, refund_of, seq, hash,
       hold_id, hold_expires_at, covered_by_plan, actor, source, grant_expires_at, allocations
FROM "CreditTransaction_unpartitioned";
INSERT INTO credit_idempotency_key (user_id, idempotency_key, transaction_id)
SELECT user_id, idempotency_key, id FROM "CreditTransaction_unpartitioned" WHERE idempotency_key IS NOT NULL;
INSERT INTO credit_hold_closing (hold_id, user_id, transaction_id)
SELECT hold_id, user_id, id FROM "CreditTransaction_unpartitioned" WHERE hold_id IS NOT NULL;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_prepare;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_apply;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_claim;

-- The sweepers, credit_holds_expire and credit_grants_expire, return SETOF "CreditTransaction":
-- that is the old table's row type (it followed the rename), so each is created again for the
-- new table, with its body and attributes exactly as the ledger's sources
-- (ledger/functions/credit_holds_expire.sql, credit_grants_expire.sql) have them, which
-- credits:verify compares them with. Grants made on them since must be made again.
DO $$
DECLARE
  sweeper text;
  body text;
BEGIN
  FOREACH sweeper IN ARRAY ARRAY['credit_holds_expire', 'credit_grants_expire'] LOOP
    body := (SELECT prosrc FROM pg_proc WHERE oid = format('credit_ledger.%I(integer, uuid)', sweeper)::regprocedure);
    EXECUTE format('DROP FUNCTION credit_ledger.%I(integer, uuid)', sweeper);
    EXECUTE format('CREATE FUNCTION "credit_ledger".%I(max_rows integer, only_user uuid DEFAULT NULL)
      RETURNS SETOF "public"."CreditTransaction" LANGUAGE plpgsql SECURITY INVOKER
      SET search_path = pg_catalog, pg_temp SET lock_timeout = ''5s'' AS %L', sweeper, body);
  END LOOP;
END;
$$;

-- The old table is append-only too: its triggers go first, then the table.
DROP TRIGGER credit_tx_append_only ON "CreditTransaction_unpartitioned";
DROP TRIGGER credit_tx_no_truncate ON "CreditTransaction_unpartitioned";
DROP TABLE "CreditTransaction_unpartitioned";

COMMIT;
