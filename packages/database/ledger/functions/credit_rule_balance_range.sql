-- Rule (22003): a balance stays an int4. A grant or a refund leaves room for the open holds of
-- its balance to come back (`held`, with `counts_holds`): the balance plus what is held never
-- passes the largest int4, so every hold can always be voided or expire. A closing row gives
-- back into exactly that room, so for it `held` is 0.
-- SQL, so that it is inlined into credit_tx_prepare (credit_refuse says why); the feature
-- is compared as text, as in credit_balance_effect.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_balance_range"(
  user_id uuid, feature_type "public"."feature_type", next_balance bigint, held bigint, counts_holds boolean
) RETURNS boolean
LANGUAGE sql
AS $$
  SELECT CASE
    WHEN (next_balance OPERATOR(pg_catalog.+) held) OPERATOR(pg_catalog.>) 2147483647
    THEN "credit_ledger"."credit_refuse"('22003',
      pg_catalog.format('the %s of user %s would exceed 2147483647%s',
        CASE WHEN feature_type::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{chat_message}'::pg_catalog.text[])
             THEN 'free_chat_messages' ELSE 'free_credits' END, user_id,
        CASE WHEN counts_holds THEN ' (with its open holds)' ELSE '' END),
      NULL, NULL)
    ELSE true END
$$;
