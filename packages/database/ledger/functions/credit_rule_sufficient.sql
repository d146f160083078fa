-- Rule (BC001): a balance never goes below zero: a deduction or a hold takes only what is
-- there. A retry of a request that already spent the balance is a replay, not "insufficient
-- credits": it is reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_sufficient"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text, available integer
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  balance text;
BEGIN
  IF available >= amount THEN
    RETURN true;
  END IF;
  ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
  balance := CASE WHEN feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  RAISE EXCEPTION 'user % has % % but % is required', user_id, available, balance, amount
    USING ERRCODE = 'BC001',
          DETAIL = json_build_object('userId', user_id, 'balance', balance,
            'available', available, 'required', amount)::text;
END;
$$;
