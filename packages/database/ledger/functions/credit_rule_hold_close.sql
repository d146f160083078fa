-- Rule: a settle, void or expire row closes exactly one open hold of its user and balance, in
-- time, within its amount. The hold is a hold row of this user and feature (BC012), not
-- closed already, and, for a settlement or a void, not past its expiry (BC013); an expiry
-- comes only once it is due (BC015); a settlement charges at most the held amount, and a void
-- or an expiry gives back exactly that (BC014). The user's lock (the caller holds it)
-- serialises every closing of the hold (the hold is this user's); under REPEATABLE READ a
-- closing committed after the snapshot moved the user's head, so taking the lock already
-- failed with a serialization error; credit_tx_hold_close_idx is the last word. Returns the
-- held amount, which a settlement's balance effect needs.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_close"(
  user_id uuid, operation "public"."operation_type", feature_type "public"."feature_type",
  amount integer, hold_id uuid, at timestamptz
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  target "public"."CreditTransaction"%ROWTYPE;
  closing "public"."CreditTransaction"%ROWTYPE;
BEGIN
  -- The hold's row in "CreditHold", which credit_tx_apply deletes, is locked with the read:
  -- here the wait is bounded by the caller's lock_timeout (a role with UPDATE on
  -- "CreditHold" can hold the row), so that credit_tx_apply needs no lock_timeout of its own.
  -- An open hold has that row; without it, the hold row is read alone, to say what is wrong.
  SELECT t.* INTO target FROM "public"."CreditTransaction" t, "public"."CreditHold" h
    WHERE t.id = credit_rule_hold_close.hold_id AND t.user_id = credit_rule_hold_close.user_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass) AND h.id = t.id
    FOR UPDATE OF h;
  IF NOT FOUND THEN
    SELECT * INTO target FROM "public"."CreditTransaction" t
      WHERE t.id = credit_rule_hold_close.hold_id AND t.user_id = credit_rule_hold_close.user_id
        AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  END IF;
  IF NOT FOUND OR target.operation <> 'hold' OR target.feature_type <> credit_rule_hold_close.feature_type THEN
    RAISE EXCEPTION 'hold % is not a % hold of user %', hold_id, feature_type, user_id
      USING ERRCODE = 'BC012',
            DETAIL = json_build_object('holdId', hold_id,
              'reason', CASE WHEN NOT FOUND THEN
                               CASE WHEN EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                                                  WHERE t.id = credit_rule_hold_close.hold_id)
                                    THEN 'other_user' ELSE 'not_found' END
                             WHEN target.operation <> 'hold' THEN 'not_a_hold'
                             ELSE 'other_feature' END)::text;
  END IF;
  SELECT * INTO closing FROM "public"."CreditTransaction" t
    WHERE t.hold_id = credit_rule_hold_close.hold_id
      AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  IF FOUND OR (operation <> 'expire' AND at >= target.hold_expires_at) THEN
    RAISE EXCEPTION 'hold % of user % is % already', hold_id, user_id,
        CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END
      USING ERRCODE = 'BC013',
            DETAIL = json_build_object('holdId', hold_id,
              'outcome', CASE coalesce(closing.operation, 'expire') WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'voided' ELSE 'expired' END,
              'closedBy', closing.id, 'amount', closing.amount, 'held', target.amount,
              'expiresAt', target.hold_expires_at)::text;
  END IF;
  IF operation = 'expire' AND at < target.hold_expires_at THEN
    RAISE EXCEPTION 'hold % of user % expires at %, not yet', hold_id, user_id, target.hold_expires_at
      USING ERRCODE = 'BC015',
            DETAIL = json_build_object('holdId', hold_id, 'expiresAt', target.hold_expires_at)::text;
  END IF;
  IF amount > target.amount OR (operation <> 'settle' AND amount <> target.amount) THEN
    RAISE EXCEPTION '% of % does not fit hold % of %', operation, amount, hold_id, target.amount
      USING ERRCODE = 'BC014',
            DETAIL = json_build_object('holdId', hold_id, 'held', target.amount,
              'requested', amount)::text;
  END IF;
  RETURN target.amount;
END;
$$;
