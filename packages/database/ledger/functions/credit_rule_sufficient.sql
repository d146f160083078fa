-- Rule (BC001): a balance never goes below zero: a deduction or a hold takes only what is
-- there. A retry of a request that already spent the balance is a replay, not "insufficient
-- credits": it is reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_sufficient"(
  user_id uuid, feature_type "public"."feature_type", amount integer, idempotency_key text, available integer
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  balance text;
BEGIN
  IF available >= amount THEN
    RETURN true;
  END IF;
  IF idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditTransaction" t
        WHERE t.user_id = credit_rule_sufficient.user_id AND t.idempotency_key = credit_rule_sufficient.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  balance := CASE WHEN feature_type = 'chat_message' THEN 'free_chat_messages' ELSE 'free_credits' END;
  RAISE EXCEPTION 'user % has % % but % is required', user_id, available, balance, amount
    USING ERRCODE = 'BC001',
          DETAIL = json_build_object('userId', user_id, 'balance', balance,
            'available', available, 'required', amount)::text;
END;
$$;
