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
