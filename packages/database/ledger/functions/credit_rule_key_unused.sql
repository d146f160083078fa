-- Rule (23505, the unique index's own): a write that another rule is about to refuse, but
-- whose idempotency key this user already used, is a retry of a request that was applied:
-- it is reported as credit_tx_user_idempotency_key_idx would report the used key, so the
-- package replays the first row, rather than as the refusal (a retried deduction would
-- otherwise read "insufficient credits" once the first attempt had spent them). Called by
-- the rules that refuse on what earlier writes did (credit_rule_sufficient,
-- credit_rule_refund_cap, credit_rule_caps) just before they raise.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_key_unused"(user_id uuid, idempotency_key text) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditTransaction" t
        WHERE t.user_id = credit_rule_key_unused.user_id AND t.idempotency_key = credit_rule_key_unused.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', idempotency_key, user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_tx_user_idempotency_key_idx';
  END IF;
  RETURN true;
END;
$$;
