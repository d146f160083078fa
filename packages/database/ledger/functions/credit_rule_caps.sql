-- Rule (BC020): what a user takes for a feature in a period (its deductions and holds dated
-- from the period's start, UTC) stays within every cap of credit_ledger.credit_limit that
-- applies to it: the feature's caps for every plan, and those for the user's plan. A hold
-- counts in full when it is taken: what it gives back later does not make room again, so a
-- cap bounds what could be charged; a use an unlimited plan covers counts too (a cap bounds
-- use, on every plan). The periods are UTC's (a day from midnight, an ISO week from Monday, a
-- calendar month), whatever the session's TimeZone. The user's lock (the caller holds it)
-- serialises the user's writes, so two writes cannot both see the same room, and the plan
-- read here is the one the write runs under (the caller ended a lapsed plan already). A retry
-- of a request that already took the room is a replay, reported as the unique index would
-- report its used key. Called only when the feature has a cap at all.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_caps"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text, at timestamptz
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  plan_name text;
  cap record;
  period_start timestamptz;
  used bigint;
BEGIN
  plan_name := coalesce(
    (SELECT p.plan FROM "credit_ledger"."user_plan" p
      WHERE p.user_id = credit_rule_caps.user_id AND (p.until IS NULL OR p.until > at)),
    (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default));
  FOR cap IN SELECT c.plan, c.period, c.max_amount FROM "credit_ledger"."credit_limit" c
              WHERE c.feature_type = credit_rule_caps.feature_type
                AND (c.plan IS NULL OR c.plan = plan_name)
              ORDER BY CASE c.period WHEN 'day' THEN 1 WHEN 'week' THEN 2 ELSE 3 END, c.plan NULLS LAST LOOP
    period_start := date_trunc(cap.period, at, 'UTC');
    -- credit_tx_user_created_at_idx: this user's rows of the period only.
    SELECT coalesce(sum(t.amount), 0) INTO used FROM "public"."CreditTransaction" t
     WHERE t.user_id = credit_rule_caps.user_id AND t.created_at >= period_start
       AND t.feature_type = credit_rule_caps.feature_type AND t.operation IN ('deduct', 'hold')
       AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
    IF used + amount > cap.max_amount THEN
      ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
      RAISE EXCEPTION 'user % has taken % of its % limit of % for %, so % more would exceed it', user_id, used,
          CASE cap.period WHEN 'day' THEN 'daily' WHEN 'week' THEN 'weekly' ELSE 'monthly' END, cap.max_amount, feature_type, amount
        USING ERRCODE = 'BC020',
              DETAIL = json_build_object('userId', user_id, 'featureType', feature_type, 'period', cap.period,
                'plan', cap.plan, 'limit', cap.max_amount, 'used', used, 'requested', amount,
                'resetsAt', ((period_start AT TIME ZONE 'UTC') + ('1 ' || cap.period)::interval) AT TIME ZONE 'UTC')::text,
              HINT = 'The limit is a row of credit_ledger.credit_limit, changed by the owner in a migration.';
    END IF;
  END LOOP;
  RETURN true;
END;
$$;
