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
