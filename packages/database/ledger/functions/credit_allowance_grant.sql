-- Grants the user its plan's allowance for the period that holds `at`, unless it was granted
-- in this period already: one grant row per balance the plan allows (source 'allowance',
-- expiring at the period's end, metadata naming the plan and the period), each a statement of
-- its own. The plan is the one the user is on at `at` (a plan past its `until` is the default
-- plan). Exactly once per period: user_allowance is moved first, under the user's lock (the
-- caller holds it), so the rows written here see it granted and write no allowance of their
-- own. Returns whether it granted anything. A user who changes plan within a period keeps
-- what that period granted, and is granted the new plan's allowance from the next period on.
-- A balance that, with its open holds, has less room than the allowance below the largest
-- int4 is granted what fits (nothing when nothing does): a grant past it would be refused, and
-- with it every write and balance read of the user. The rows are inserted as the owner (also
-- for credit_allowance_apply, whoever calls it): no trigger of another role may run inside
-- them (BC017), since one named to fire first would run as the owner.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_allowance_grant"(user_id uuid, at timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  plan_name text;
  allowance record;
  starts timestamptz;
  ends timestamptz;
  room record;
  tag jsonb;
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
  PERFORM "credit_ledger"."credit_rule_no_foreign_triggers"('"public"."CreditTransaction"'::regclass, 1);
  INSERT INTO "credit_ledger"."user_allowance" AS a (user_id, period_start, plan)
    VALUES (credit_allowance_grant.user_id, starts, plan_name)
    ON CONFLICT ON CONSTRAINT user_allowance_pkey DO UPDATE SET period_start = EXCLUDED.period_start, plan = EXCLUDED.plan;
  -- The period's end in UTC, whatever the session's TimeZone (a month is a calendar month).
  ends := ((starts AT TIME ZONE 'UTC') + ('1 ' || allowance.period)::interval) AT TIME ZONE 'UTC';
  tag := jsonb_build_object('allowance', jsonb_build_object('plan', plan_name, 'period', allowance.period,
    'starts', to_char(starts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
  SELECT 2147483647::int8 - u.free_credits - coalesce((SELECT sum(h.amount) FROM "public"."CreditHold" h
           WHERE h.user_id = u.id AND h.feature_type <> 'chat_message' AND h.covered_by_plan IS NULL), 0) AS credits,
         2147483647::int8 - u.free_chat_messages - coalesce((SELECT sum(h.amount) FROM "public"."CreditHold" h
           WHERE h.user_id = u.id AND h.feature_type = 'chat_message' AND h.covered_by_plan IS NULL), 0) AS chats
    INTO room FROM "public"."User" u WHERE u.id = credit_allowance_grant.user_id;
  IF allowance.credits IS NOT NULL AND least(allowance.credits, room.credits) > 0 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, least(allowance.credits, room.credits), 'grant', 'none', 'allowance', ends, tag);
  END IF;
  IF allowance.chats IS NOT NULL AND least(allowance.chats, room.chats) > 0 THEN
    INSERT INTO "public"."CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      VALUES (credit_allowance_grant.user_id, least(allowance.chats, room.chats), 'grant', 'chat_message', 'allowance', ends, tag);
  END IF;
  RETURN true;
END;
$$;
