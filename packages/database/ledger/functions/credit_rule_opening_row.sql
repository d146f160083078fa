-- Rule (BC008): opening rows are the ones user_ledger_opening writes, and only they. A user
-- inserted by the statement still writing (its head negative: -2 or -1 opening rows due)
-- takes only those, free_credits first, each stating exactly the balance the user was
-- created with, with the opening rows' own feature type and label; and the label support
-- reads as "the balance the user was created with" is theirs alone. Returns the row's seq.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_opening_row"(
  user_id uuid, operation "public"."operation_type", feature_type "public"."feature_type",
  amount integer, metadata jsonb, idempotency_key text, refund_of uuid,
  head bigint, credits integer, chats integer
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  chat boolean := feature_type = 'chat_message';
BEGIN
  IF head >= 0 THEN
    IF metadata @> '{"reason": "opening_balance"}' THEN
      RAISE EXCEPTION 'only the rows written when user % was created are opening rows', user_id
        USING ERRCODE = 'BC008', HINT = 'Give a grant another reason.';
    END IF;
    RETURN head + 1;
  END IF;
  IF operation <> 'grant' OR chat <> (head = -1 AND chats > 0)
     OR feature_type NOT IN ('none', 'chat_message')
     OR metadata IS DISTINCT FROM '{"reason": "opening_balance"}'::jsonb
     OR amount <> (CASE WHEN chat THEN chats ELSE credits END)
     OR idempotency_key IS NOT NULL OR refund_of IS NOT NULL THEN
    RAISE EXCEPTION 'user % was created by this statement and its opening balance is not recorded yet', user_id
      USING ERRCODE = 'BC008', HINT = 'Change the credits of a new user in a later statement.';
  END IF;
  RETURN CASE WHEN head = -1 AND credits > 0 AND chats > 0 THEN 2 ELSE 1 END;
END;
$$;
