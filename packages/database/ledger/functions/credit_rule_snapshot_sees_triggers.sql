-- Rule (BC018): under REPEATABLE READ or SERIALIZABLE, no role but the owner holds TRIGGER on
-- the ledger's tables. There the census of triggers reads the catalog as of the
-- transaction's snapshot, while the executor fires the triggers the catalog has now: a
-- trigger created after the snapshot was taken is not in pg_trigger, and runs (one on "User"
-- set a balance after the guard approved it). PL/pgSQL has no fresher view of the catalog to
-- read; what can be seen is who could have created one. (A grant made after the snapshot is
-- the owner's act, which credits:verify is for.)
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_snapshot_sees_triggers"(relid oid) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  trigger_holders text;
BEGIN
  IF current_setting('transaction_isolation') = 'read committed' THEN
    RETURN true;
  END IF;
  SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
    INTO trigger_holders
    FROM pg_class c, aclexplode(c.relacl) a
   WHERE c.oid IN (relid, '"public"."CreditTransaction"'::regclass, '"public"."User"'::regclass,
                   '"public"."CreditHold"'::regclass)
     AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner;
  IF trigger_holders IS NOT NULL THEN
    RAISE EXCEPTION 'under %, a ledger write cannot see a trigger created after its snapshot, and % may create one (TRIGGER on the ledger''s tables)',
        upper(current_setting('transaction_isolation')), trigger_holders
      USING ERRCODE = 'BC018', DETAIL = json_build_object('roles', trigger_holders)::text,
            HINT = 'Write at READ COMMITTED (the default), or REVOKE TRIGGER ON "User", "CreditTransaction", "CreditHold" FROM those roles.';
  END IF;
  RETURN true;
END;
$$;
