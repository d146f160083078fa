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
