-- Rule (BC020): what a user takes for a feature in one UTC day (its deductions and holds
-- dated from midnight UTC) stays within that feature's daily limit, when
-- credit_ledger.credit_limit has one. A hold counts in full when it is taken: what it gives
-- back later does not make room again, so the limit bounds what could be charged. The day is
-- UTC's, whatever the session's TimeZone. The user's lock (the caller holds it) serialises
-- the user's writes, so two writes cannot both see the same room. A retry of a request that
-- already took the room is a replay, reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_daily_limit"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text,
  at timestamptz, max_amount integer
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  day_start timestamptz;
  used bigint;
BEGIN
  IF max_amount IS NULL THEN
    RETURN true;
  END IF;
  day_start := date_trunc('day', at, 'UTC');
  -- credit_tx_user_created_at_idx: this user's rows of the day only.
  SELECT coalesce(sum(t.amount), 0) INTO used FROM "public"."CreditTransaction" t
   WHERE t.user_id = credit_rule_daily_limit.user_id AND t.created_at >= day_start
     AND t.feature_type = credit_rule_daily_limit.feature_type AND t.operation IN ('deduct', 'hold')
     AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF used + amount <= max_amount THEN
    RETURN true;
  END IF;
  ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
  RAISE EXCEPTION 'user % has taken % of its daily limit of % for %, so % more would exceed it', user_id, used, max_amount, feature_type, amount
    USING ERRCODE = 'BC020',
          DETAIL = json_build_object('userId', user_id, 'featureType', feature_type, 'period', 'day',
            'limit', max_amount, 'used', used, 'requested', amount,
            'resetsAt', day_start + interval '24 hours')::text,
          HINT = 'The limit is a row of credit_ledger.credit_limit, changed by the owner in a migration.';
END;
$$;
