-- The usage figures of whole past UTC days, for all users (getCreditUsage): a summary of the
-- trail that never changes once the day is over, since rows are dated by the server's clock as
-- they are written. Filled lazily, one day at a time, by credit_usage_roll_up when a figure
-- asks for a day that ended more than an hour ago (so a write that was still committing at
-- midnight is in it): no cost on any write. `credit_usage_day_done` marks the days summed,
-- with or without rows. Only the ledger writes them; every role may read them. The rows of a
-- user deleted later stay in the days they were summed into: the figures are what was used.
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_usage_day" (
  day date NOT NULL,
  feature_type "public"."feature_type" NOT NULL,
  spent bigint NOT NULL,
  covered bigint NOT NULL,
  granted bigint NOT NULL,
  refunded bigint NOT NULL,
  expired bigint NOT NULL,
  PRIMARY KEY (day, feature_type)
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "credit_ledger"."credit_usage_day_done" (
  day date PRIMARY KEY,
  summed_at timestamptz NOT NULL
);
