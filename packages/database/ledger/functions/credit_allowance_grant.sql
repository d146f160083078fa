-- Grants the user its plan's allowance for the period that holds `at`, unless it was granted
-- in this period already: one grant row per balance the plan allows (source 'allowance',
-- expiring at the period's end, metadata naming the plan and the period), each a statement of
-- its own. The plan is the one the user is on at `at` (a plan past its `until` is the default
-- plan). Exactly once per period: user_allowance is moved first, under the user's lock (the
-- caller holds it), so the rows written here see it granted and write no allowance of their
-- own. Returns whether it granted anything. A user who changes plan within a period keeps
-- what that period granted, and is granted the new plan's allowance from the next period on.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_allowance_grant"(user_id uuid, at timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  plan_name text;
  allowance record;
  starts timestamptz;
  ends timestamptz;
BEGIN
  plan_name := coalesce(
    (SELECT p.plan FROM "credit_ledger"."user_plan" p
      WHERE p.user_id = credit_allowance_grant.user_id AND (p.until IS NULL OR p.until > at)),
    (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default));
  SELECT c.allowance_credits AS credits, c.allowance_chat_messages AS chats, c.allowance_period AS period
    INTO allowance FROM "credit_ledger"."credit_plan" c WHERE c.plan = plan_name;
  IF allowance.period IS NULL THEN
    RETURN false;
  END IF;
  starts := date_trunc(allowance.period, at, 'UTC');
  IF EXISTS (SELECT 1 FROM "credit_ledger"."user_allowance" a
              WHERE a.user_id = credit_allowance_grant.user_id AND a.period_start >= starts) THEN
    RETURN false;
  END IF;
  INSERT INTO "credit_ledger"."user_allowance" AS a (user_id, period_start, plan)
    VALUES (credit_allowance_grant.user_id, starts, plan_name)
    ON CONFLICT ON CONSTRAINT user_allowance_pkey DO UPDATE SET period_start = EXCLUDED.period_start, plan = EXCLUDED.plan;
  -- The period's end in UTC, whatever the session's TimeZone (a month is a calendar month).
  ends := ((starts AT TIME ZONE 'UTC') + ('1 ' || allowance.period)::interval) AT TIME ZONE 'UTC';
  IF allowance.credits IS NOT NULL THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, allowance.credits, 'grant', 'none', 'allowance', ends,
              jsonb_build_object('allowance', jsonb_build_object('plan', plan_name, 'period', allowance.period,
                'starts', to_char(starts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))));
  END IF;
  IF allowance.chats IS NOT NULL THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, allowance.chats, 'grant', 'chat_message', 'allowance', ends,
              jsonb_build_object('allowance', jsonb_build_object('plan', plan_name, 'period', allowance.period,
                'starts', to_char(starts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))));
  END IF;
  RETURN true;
END;
$$;
