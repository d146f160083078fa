-- Rule (22003): a balance stays an int4. A grant or a refund leaves room for the open holds of
-- its balance to come back (`held`, with `counts_holds`): the balance plus what is held never
-- passes the largest int4, so every hold can always be voided or expire. A closing row gives
-- back into exactly that room, so for it `held` is 0.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_balance_range"(
  user_id uuid, feature_type "public"."feature_type", next_balance bigint, held bigint, counts_holds boolean
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF next_balance + held > 2147483647 THEN
    RAISE EXCEPTION 'the % of user % would exceed 2147483647%',
        CASE WHEN feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END, user_id,
        CASE WHEN counts_holds THEN ' (with its open holds)' ELSE '' END
      USING ERRCODE = 'numeric_value_out_of_range';
  END IF;
  RETURN true;
END;
$$;
