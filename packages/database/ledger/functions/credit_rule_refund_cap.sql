-- Rule: the refunds of a charge never add up to more than it. A refund with refund_of names a
-- charge of its user and feature (BC004): a deduction, or a settlement, whose amount is what
-- a reservation charged; one that took credits (one an unlimited plan covered took none, so
-- there is nothing to give back); and with the refunds before it stays within that charge (BC003); it cannot run under REPEATABLE READ (BC007), whose snapshot
-- would not see a refund committed after it was taken, so two refunds could both pass. The
-- user's lock, which the caller holds, serialises the refunds of the deduction (it is the
-- same user's): each one here sees those committed before it. Only trail rows count, not
-- rows of a table that inherits from it. A retry of the refund that used the deduction up is
-- a replay, not an excess: it is reported as the unique index would report its used key.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_refund_cap"(
  user_id uuid, feature_type "public"."feature_type", amount integer, refund_of uuid, idempotency_key text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  ok boolean;
  target "public"."CreditTransaction"%ROWTYPE;
  refunded bigint;
BEGIN
  IF current_setting('transaction_isolation') = 'repeatable read' THEN
    RAISE EXCEPTION 'a refund of a deduction cannot run under REPEATABLE READ'
      USING ERRCODE = 'BC007', HINT = 'Use READ COMMITTED (the default) or SERIALIZABLE.';
  END IF;
  SELECT * INTO target FROM "public"."CreditTransaction" t
    WHERE t.id = credit_rule_refund_cap.refund_of AND t.user_id = credit_rule_refund_cap.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF NOT FOUND OR target.operation::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ('{deduct,settle}'::pg_catalog.text[]) OR target.feature_type <> credit_rule_refund_cap.feature_type
     OR target.covered_by_plan IS NOT NULL THEN
    RAISE EXCEPTION 'refund_of % is not a % deduction or settlement of user %', refund_of, feature_type, user_id
      USING ERRCODE = 'BC004',
            DETAIL = json_build_object('refundOf', refund_of,
              'reason', CASE WHEN NOT FOUND THEN
                               CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                                                  WHERE t.id = credit_rule_refund_cap.refund_of)
                                    THEN 'other_user' ELSE 'not_found' END
                             WHEN target.operation::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ('{deduct,settle}'::pg_catalog.text[]) THEN 'not_a_deduction'
                             WHEN target.covered_by_plan IS NOT NULL THEN 'covered_by_plan'
                             ELSE 'other_feature' END)::text;
  END IF;
  SELECT coalesce(sum(t.amount), 0) INTO refunded FROM "public"."CreditTransaction" t
    WHERE t.refund_of = credit_rule_refund_cap.refund_of AND t.user_id = credit_rule_refund_cap.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF refunded + amount > target.amount THEN
    ok := "credit_ledger"."credit_rule_key_unused"(user_id, idempotency_key);
    RAISE EXCEPTION 'refund of % would exceed deduction % (% deducted, % refunded already)',
        amount, refund_of, target.amount, refunded
      USING ERRCODE = 'BC003',
            DETAIL = json_build_object('refundOf', refund_of, 'deducted', target.amount,
              'refunded', refunded, 'requested', amount)::text;
  END IF;
  RETURN true;
END;
$$;
