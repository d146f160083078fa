-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between
-- "-- ledger:source <file>" and "-- ledger:end <file>" is that source file as it was when this
-- migration was written; db:check fails when a source differs from the latest migration
-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never
-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.

-- ledger:source functions/credit_grant_give_back.sql
-- What giving back `amount` of trail row `taken_by` (a deduction or a settlement being
-- refunded, or a hold being closed) returns to each grant, as allocations: to the grants that
-- row took from (a settlement's charge took what its hold took less what the settlement gave
-- back), each at most what it took from it less what the refunds before gave back to it, the
-- latest-expiring grant first (so what stays spent is what would have lapsed soonest). NULL
-- when the row took from no grant: it was written before credit sources existed (the caller
-- then gives the credits back as a grant of their own). Runs inside credit_tx_prepare, under
-- the user's lock, with its search_path.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_grant_give_back"(taken_by uuid, amount integer) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  taken jsonb;
  target record;
  owed integer := amount;
  given jsonb := '{}';
  g record;
BEGIN
  SELECT t.allocations, t.operation, t.hold_id INTO target FROM "public"."CreditTransaction" t
   WHERE t.id = taken_by AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass);
  taken := target.allocations;
  IF target.operation = 'settle' THEN
    SELECT pg_catalog.jsonb_object_agg(k.key, (h.allocations OPERATOR(pg_catalog.->>) k.key)::integer
             OPERATOR(pg_catalog.-) coalesce((target.allocations OPERATOR(pg_catalog.->>) k.key)::integer, 0))
      INTO taken
      FROM "public"."CreditTransaction" h
     CROSS JOIN LATERAL pg_catalog.jsonb_object_keys(h.allocations) k(key)
     WHERE h.id = target.hold_id AND h.operation = 'hold'
       AND "credit_ledger"."credit_tx_is_trail"(h.tableoid::pg_catalog.regclass);
  END IF;
  IF taken IS NULL THEN
    RETURN NULL;
  END IF;
  FOR g IN SELECT c.id,
                  (taken ->> c.id::text)::integer
                    - coalesce((SELECT sum((r.allocations ->> c.id::text)::integer)
                                  FROM "public"."CreditTransaction" r
                                 WHERE r.refund_of = taken_by
                                   AND "credit_ledger"."credit_tx_is_trail"(r.tableoid::pg_catalog.regclass)), 0) AS open
             FROM "credit_ledger"."credit_grant" c
            WHERE c.id IN (SELECT k::uuid FROM jsonb_object_keys(taken) k)
            ORDER BY c.expires_at DESC NULLS FIRST, c.created_at DESC, c.id DESC LOOP
    EXIT WHEN owed = 0;
    IF g.open > 0 THEN
      given := given || jsonb_build_object(g.id, least(g.open, owed));
      owed := owed - least(g.open, owed);
    END IF;
  END LOOP;
  IF owed > 0 THEN
    RAISE EXCEPTION 'the grants row % took from cannot take back % more', taken_by, owed
      USING ERRCODE = 'BC009', HINT = 'A grant it took from is missing: pnpm credits:verify lists what is wrong.';
  END IF;
  RETURN given;
END;
$$;
-- ledger:end functions/credit_grant_give_back.sql
--> statement-breakpoint
-- ledger:source functions/credit_rule_refund_cap.sql
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
-- ledger:end functions/credit_rule_refund_cap.sql
--> statement-breakpoint
-- ledger:source privileges.sql
-- Who may execute the ledger's functions. Installed after every change of the ledger's
-- sources, since a function created anew gets PUBLIC's EXECUTE and whatever default
-- privileges (ALTER DEFAULT PRIVILEGES … GRANT EXECUTE ON FUNCTIONS, common on hosted
-- platforms) grant to other roles by name, which REVOKE … FROM PUBLIC leaves in place.
--
-- Nobody but the owner may execute a trigger function (attached to a table of its own, say a
-- TEMP table, credit_tx_apply could otherwise be run with any NEW), a rule or a helper, or
-- read or write the ledger's own tables (the limits). The sweeper runs as its caller, so any
-- role may execute it: it can do only what that role's own statements could (so may the
-- grants' sweeper, credit_grants_expire). The plans' audit is readable too: credits:verify
-- reads from it whether a plan was unlimited when a use was covered. Any role may also have a user's due allowance
-- granted (credit_allowance_apply): it grants only what is due, once; and past days' usage
-- summed (credit_usage_roll_up), which only summarises the trail. The plans, the users' current plans and the grants
-- are readable by every role (an app shows its plans, a balance read
-- names the user's, credits:verify compares them with their chains), as the trail is; only
-- the owner changes the plans, and only the ledger the users' plans.
DO $$
DECLARE
  f record;
BEGIN
  FOR f IN
    SELECT DISTINCT p.oid::regprocedure AS fn,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'credit_ledger'::regnamespace AND a.grantee <> p.proowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', f.fn, f.grantee);
  END LOOP;
  FOR f IN
    SELECT DISTINCT c.oid::regclass AS rel,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
      FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
     WHERE c.relnamespace = 'credit_ledger'::regnamespace AND a.grantee <> c.relowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', f.rel, f.grantee);
  END LOOP;
END;
$$;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_holds_expire"(integer, uuid) TO PUBLIC;
--> statement-breakpoint
GRANT SELECT ON "credit_ledger"."credit_plan", "credit_ledger"."user_plan", "credit_ledger"."credit_grant",
  "credit_ledger"."user_allowance", "credit_ledger"."credit_usage_day", "credit_ledger"."credit_usage_day_done",
  "credit_ledger"."credit_plan_audit" TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_usage_roll_up"(date, date) TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_grants_expire"(integer, uuid) TO PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION "credit_ledger"."credit_allowance_apply"(uuid) TO PUBLIC;
-- ledger:end privileges.sql
