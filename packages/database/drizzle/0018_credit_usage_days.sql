-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source tables/credit_usage_day.sql
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
-- ledger:end tables/credit_usage_day.sql
--> statement-breakpoint
-- ledger:source functions/credit_usage_roll_up.sql
-- Sums the usage figures of each UTC day in [from_day, to_day) that ended more than an hour
-- ago and is not summed yet (at most 400 days a call) into credit_usage_day, with the same
-- definitions as getCreditUsage's query over the trail (src/credits/usage.ts; a test compares
-- them), and returns how many days it summed. Any role may call it: it only summarises the
-- trail, and a day is summed once (concurrent calls for one day write the same rows; the
-- primary keys keep one). As the owner, since only the ledger writes the summaries. JIT off:
-- it costs more than it saves on a day's rows.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_usage_roll_up"(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET jit = off
AS $$
DECLARE
  d date;
  summed integer := 0;
  closed_before date := ((clock_timestamp() - interval '1 hour') AT TIME ZONE 'UTC')::date;
BEGIN
  FOR d IN SELECT g::date FROM generate_series(from_day::timestamp, (least(to_day, closed_before) - 1)::timestamp, interval '1 day') g
            WHERE NOT EXISTS (SELECT 1 FROM "credit_ledger"."credit_usage_day_done" x WHERE x.day = g::date)
            ORDER BY 1 LOOP
    EXIT WHEN summed >= 400;
    INSERT INTO "credit_ledger"."credit_usage_day" (day, feature_type, spent, covered, granted, refunded, expired)
      SELECT d, t.feature_type,
             coalesce(sum(t.amount) FILTER (WHERE t.covered_by_plan IS NULL AND t.operation IN ('deduct', 'settle')), 0)
               - coalesce(sum(t.amount) FILTER (WHERE t.operation = 'refund'), 0),
             coalesce(sum(t.amount) FILTER (WHERE t.covered_by_plan IS NOT NULL AND t.operation IN ('deduct', 'settle')), 0),
             coalesce(sum(t.amount) FILTER (WHERE t.operation = 'grant'), 0),
             coalesce(sum(t.amount) FILTER (WHERE t.operation = 'refund'), 0),
             coalesce(sum(t.amount) FILTER (WHERE t.operation = 'expire_grant'), 0)
        FROM "public"."CreditTransaction" t
       WHERE t.created_at >= d::timestamp AT TIME ZONE 'UTC'
         AND t.created_at < (d + 1)::timestamp AT TIME ZONE 'UTC'
       GROUP BY t.feature_type
      ON CONFLICT DO NOTHING;
    INSERT INTO "credit_ledger"."credit_usage_day_done" (day, summed_at) VALUES (d, clock_timestamp())
      ON CONFLICT DO NOTHING;
    summed := summed + 1;
  END LOOP;
  RETURN summed;
END;
$$;
-- ledger:end functions/credit_usage_roll_up.sql
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
-- role may execute it: it can do only what that role's own statements could (so may the
-- grants' sweeper, credit_grants_expire). Any role may also have a user's due allowance
-- granted (credit_allowance_apply): it grants only what is due, once; and past days' usage
-- summed (credit_usage_roll_up), which only summarises the trail. The plans, the users' current plans and the grants
-- are readable by every role (an app shows its plans, a balance read
-- names the user's, credits:verify compares them with their chains), as the trail is; only
-- the owner changes the plans, and only the ledger the users' plans.
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
--> statement-breakpoint
GRANT SELECT ON "credit_ledger"."credit_plan", "credit_ledger"."user_plan", "credit_ledger"."credit_grant",
  "credit_ledger"."user_allowance", "credit_ledger"."credit_usage_day", "credit_ledger"."credit_usage_day_done" TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_usage_roll_up"(date, date) TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_grants_expire"(integer, uuid) TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_allowance_apply"(uuid) TO PUBLIC;
-- ledger:end privileges.sql
