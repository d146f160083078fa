-- Range-partitions "CreditTransaction" by created_at (one partition per month), in place,
-- on a database migrated to 0003. docs/SCALING.md explains each step;
-- packages/database/test/scaling/partitioning.test.ts runs this file and checks the claims.
-- It runs in one transaction and takes an ACCESS EXCLUSIVE lock on the trail while it
-- copies: on a large table, create the new table first and backfill in batches instead.

BEGIN;

ALTER TABLE "CreditTransaction" RENAME TO "CreditTransaction_unpartitioned";
-- The old table keeps its constraints and indexes under their names; free the names.
ALTER INDEX credit_tx_user_id_idx RENAME TO credit_tx_user_id_idx_old;
ALTER INDEX credit_tx_created_at_idx RENAME TO credit_tx_created_at_idx_old;
ALTER INDEX credit_tx_user_created_at_idx RENAME TO credit_tx_user_created_at_idx_old;
ALTER INDEX credit_tx_user_idempotency_key_idx RENAME TO credit_tx_user_idempotency_key_idx_old;
ALTER INDEX credit_tx_refund_of_idx RENAME TO credit_tx_refund_of_idx_old;
ALTER INDEX credit_tx_user_seq_idx RENAME TO credit_tx_user_seq_idx_old;

CREATE TABLE "CreditTransaction" (
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES "User"(id) ON DELETE CASCADE,
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
  FOR EACH ROW EXECUTE FUNCTION credit_tx_append_only();
CREATE TRIGGER credit_idempotency_key_no_truncate BEFORE TRUNCATE ON credit_idempotency_key
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();

CREATE FUNCTION credit_tx_claim_idempotency_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.idempotency_key IS NOT NULL THEN
    INSERT INTO "public".credit_idempotency_key (user_id, idempotency_key, transaction_id)
    VALUES (NEW.user_id, NEW.idempotency_key, NEW.id);
  END IF;
  RETURN NULL;
END;
$$;

-- Monthly partitions; a job creates next month's ahead of time. The default partition
-- catches anything outside them, so an insert never fails for want of a partition.
CREATE TABLE "CreditTransaction_2026_10" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE "CreditTransaction_2026_11" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE "CreditTransaction_2026_12" PARTITION OF "CreditTransaction"
  FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
CREATE TABLE "CreditTransaction_default" PARTITION OF "CreditTransaction" DEFAULT;

-- Row triggers on the parent are cloned to every partition (PostgreSQL 13+). The key is
-- claimed AFTER INSERT, like the balance is applied: only for a row that was really written
-- (ON CONFLICT DO NOTHING skips a row after its BEFORE triggers). Either failing undoes the
-- whole INSERT.
CREATE TRIGGER credit_tx_prepare BEFORE INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_prepare();
CREATE TRIGGER credit_tx_apply AFTER INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_apply();
CREATE TRIGGER credit_tx_claim_idempotency_key AFTER INSERT ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_claim_idempotency_key();
CREATE TRIGGER credit_tx_append_only BEFORE UPDATE OR DELETE ON "CreditTransaction"
  FOR EACH ROW EXECUTE FUNCTION credit_tx_append_only();
-- A statement trigger fires only for the table a statement names, so TRUNCATE is refused
-- on the parent and on each partition (the partition job adds it to new partitions).
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_10"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_11"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_2026_12"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();
CREATE TRIGGER credit_tx_no_truncate BEFORE TRUNCATE ON "CreditTransaction_default"
  FOR EACH STATEMENT EXECUTE FUNCTION credit_tx_append_only();

-- Move the rows over with the triggers of the new table off (the balances already include
-- them, and their seq and hash stay as they are), and their idempotency keys with them.
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_prepare;
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_apply;
ALTER TABLE "CreditTransaction" DISABLE TRIGGER credit_tx_claim_idempotency_key;
INSERT INTO "CreditTransaction"
  (id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, idempotency_key, refund_of, seq, hash)
SELECT id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, idempotency_key, refund_of, seq, hash
FROM "CreditTransaction_unpartitioned";
INSERT INTO credit_idempotency_key (user_id, idempotency_key, transaction_id)
SELECT user_id, idempotency_key, id FROM "CreditTransaction_unpartitioned" WHERE idempotency_key IS NOT NULL;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_prepare;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_apply;
ALTER TABLE "CreditTransaction" ENABLE TRIGGER credit_tx_claim_idempotency_key;

-- The old table is append-only too: its triggers go first, then the table.
DROP TRIGGER credit_tx_append_only ON "CreditTransaction_unpartitioned";
DROP TRIGGER credit_tx_no_truncate ON "CreditTransaction_unpartitioned";
DROP TABLE "CreditTransaction_unpartitioned";

COMMIT;
