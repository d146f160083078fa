-- BEFORE INSERT on "CreditPlanChange": lock the user, check, number, date and hash the plan
-- change. The inserter chooses the plan, its end (`until`), the reason, the actor and the
-- idempotency key; the ledger sets everything else: from which plan (the user's current one),
-- the position in the user's chain, the trail head it follows, the time and the hash.
--
-- It takes the user's lock first, as every trail write does, so that a plan change is
-- entirely before or after each credit operation of the user, and the trail head it records
-- (trail_seq) orders the two chains exactly. A time-bound plan past its end is ended first
-- by its own row (credit_plan_lapse), unless this row is that lapse.
--
-- SQLSTATEs (src/credits/errors.ts): BC002 unknown user, BC022 unknown plan (or no default
-- plan), BC023 an end that is not in the future, or an end on the default plan.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_plan_change_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
AS $$
DECLARE
  head bigint;
  state record;
  default_plan text;
  at timestamptz;
  ok boolean;
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."CreditPlanChange"'::regclass THEN
    RAISE EXCEPTION 'credit_plan_change_prepare() runs only as the BEFORE INSERT trigger of "CreditPlanChange"'
      USING ERRCODE = 'BC010';
  END IF;
  -- credit_plan_change_apply runs as the owner and touches "User": no other role's trigger may
  -- run inside it (credit_rule_no_foreign_triggers says why), on this table or on "User".
  ok := "credit_ledger"."credit_rule_no_foreign_triggers"(TG_RELID, 1);
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  END IF;

  SELECT u.ledger_seq INTO head FROM "public"."User" u WHERE u.id = NEW.user_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  -- A retry of a change already made is reported as the unique index would report its key
  -- (the package then returns the first change), before any rule could refuse the retry:
  -- its `until` may have passed since the first attempt.
  IF NEW.idempotency_key IS NOT NULL AND EXISTS (
       SELECT 1 FROM "public"."CreditPlanChange" c
        WHERE c.user_id = NEW.user_id AND c.idempotency_key = NEW.idempotency_key) THEN
    RAISE EXCEPTION 'idempotency key "%" of user % was already used', NEW.idempotency_key, NEW.user_id
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'credit_plan_change_user_idempotency_key_idx';
  END IF;

  SELECT d.plan INTO default_plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default;
  IF default_plan IS NULL THEN
    RAISE EXCEPTION 'no plan of credit_ledger.credit_plan is the default'
      USING ERRCODE = 'BC022', DETAIL = json_build_object('plan', NULL, 'reason', 'no_default_plan')::text,
            HINT = 'Mark one plan is_default in a migration: users without a plan change are on it, and time-bound plans lapse to it.';
  END IF;
  at := date_trunc('milliseconds', clock_timestamp());
  SELECT s.plan, s.until, s.seq, s.hash INTO state FROM "credit_ledger"."user_plan" s WHERE s.user_id = NEW.user_id;
  IF state.until <= at
     AND NOT (NEW.plan = default_plan AND NEW.until IS NULL AND NEW.reason = 'lapsed'
              AND NEW.actor IS NULL AND NEW.idempotency_key IS NULL) THEN
    default_plan := "credit_ledger"."credit_plan_lapse"(NEW.user_id);
    at := date_trunc('milliseconds', clock_timestamp());
    SELECT s.plan, s.until, s.seq, s.hash INTO state FROM "credit_ledger"."user_plan" s WHERE s.user_id = NEW.user_id;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM "credit_ledger"."credit_plan" c WHERE c.plan = NEW.plan) THEN
    RAISE EXCEPTION 'plan "%" is not a plan of credit_ledger.credit_plan', NEW.plan
      USING ERRCODE = 'BC022',
            DETAIL = json_build_object('plan', NEW.plan, 'reason', 'not_found',
              'plans', (SELECT json_agg(c.plan ORDER BY c.plan) FROM "credit_ledger"."credit_plan" c))::text;
  END IF;
  IF NEW.until IS NOT NULL AND NEW.until <= at THEN
    RAISE EXCEPTION 'plan "%" would end at %, which is not after now (%)', NEW.plan, NEW.until, at
      USING ERRCODE = 'BC023', DETAIL = json_build_object('field', 'until', 'reason', 'is not in the future')::text;
  END IF;
  IF NEW.until IS NOT NULL AND NEW.plan = default_plan THEN
    RAISE EXCEPTION 'plan "%" is the default plan, which does not end', NEW.plan
      USING ERRCODE = 'BC023', DETAIL = json_build_object('field', 'until', 'reason', 'the default plan does not end')::text;
  END IF;

  NEW.seq := coalesce(state.seq, 0) + 1;
  NEW.from_plan := coalesce(state.plan, default_plan);
  NEW.trail_seq := greatest(head, 0);
  NEW.created_at := at;
  NEW.hash := encode(sha256(convert_to(coalesce(state.hash, '') || jsonb_build_array(
    NEW.id, NEW.user_id, NEW.seq, NEW.from_plan, NEW.plan,
    (extract(epoch FROM NEW.until) * 1000)::int8, NEW.reason, NEW.actor, NEW.idempotency_key,
    NEW.trail_seq, (extract(epoch FROM NEW.created_at) * 1000)::int8)::text, 'UTF8')), 'hex');
  RETURN NEW;
END;
$$;
