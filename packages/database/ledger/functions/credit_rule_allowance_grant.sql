-- Rule (BC016): a grant of source 'allowance' is the ledger's own, written by
-- credit_allowance_grant: for the period user_allowance says was just granted (its metadata
-- names that period's start and plan), expiring at that period's end, at most the plan's
-- allowance, and the first of its balance in the period. So no other insert can pass for an
-- allowance (support, the figures and credits:verify can tell them apart), nor be one twice.
-- Called only for such grants.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_allowance_grant"(
  user_id uuid, feature_type "public"."feature_type", amount integer, expires_at timestamptz, metadata jsonb
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  granted record;
  allowed integer;
BEGIN
  SELECT a.period_start, a.plan, c.allowance_period AS period,
         CASE WHEN credit_rule_allowance_grant.feature_type = 'chat_message' THEN c.allowance_chat_messages ELSE c.allowance_credits END AS amount
    INTO granted
    FROM "credit_ledger"."user_allowance" a JOIN "credit_ledger"."credit_plan" c ON c.plan = a.plan
   WHERE a.user_id = credit_rule_allowance_grant.user_id;
  allowed := granted.amount;
  IF granted.period_start IS NULL
     OR metadata IS DISTINCT FROM jsonb_build_object('allowance', jsonb_build_object('plan', granted.plan,
          'period', granted.period, 'starts', to_char(granted.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
     OR expires_at IS DISTINCT FROM ((granted.period_start AT TIME ZONE 'UTC') + ('1 ' || granted.period)::interval) AT TIME ZONE 'UTC'
     OR allowed IS NULL OR credit_rule_allowance_grant.amount > allowed
     OR EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                 WHERE t.user_id = credit_rule_allowance_grant.user_id AND t.created_at >= granted.period_start
                   AND t.source = 'allowance'
                   AND (t.feature_type = 'chat_message') = (credit_rule_allowance_grant.feature_type = 'chat_message')
                   AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass)) THEN
    RAISE EXCEPTION 'a grant of source allowance is the ledger''s own, once a period'
      USING ERRCODE = 'BC016',
            DETAIL = json_build_object('field', 'source', 'reason', 'allowance is granted by the ledger, once a period')::text;
  END IF;
  RETURN true;
END;
$$;
