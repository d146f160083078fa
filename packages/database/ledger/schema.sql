-- The ledger's functions live in a schema of their own, in which only its owner can create
-- anything. In "public", any role with CREATE there (PUBLIC has it on PostgreSQL 14 and
-- earlier, and pg_upgrade keeps that; many hosted setups grant it) could add an overload of a
-- ledger function: a better match for a call than ours would run that role's code as the
-- owner inside every ledger write, and one with a defaulted extra argument would make every
-- call ambiguous (42725). Here no other role can create an overload, so every call inside
-- the ledger resolves to the ledger's own function.
--
-- A schema of that name created beforehand by another role would carry its objects and its
-- owner's grants with it: the migration refuses it rather than move in. Roles other than the
-- owner get USAGE only (to call the one function meant for them, credit_holds_expire), and
-- any grant of CREATE that default privileges made is taken back.
DO $$
DECLARE
  existing_owner regrole;
  grantee text;
BEGIN
  SELECT nspowner::regrole INTO existing_owner FROM pg_catalog.pg_namespace WHERE nspname = 'credit_ledger';
  IF existing_owner IS NULL THEN
    CREATE SCHEMA credit_ledger;
  ELSIF existing_owner <> current_user::regrole THEN
    RAISE EXCEPTION 'schema credit_ledger exists and belongs to %, not to %, who runs the migrations', existing_owner, current_user
      USING HINT = 'Drop or rename that schema (after checking what it holds), then run the migrations again.';
  END IF;
  FOR grantee IN
    SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
     WHERE n.nspname = 'credit_ledger' AND a.grantee <> n.nspowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA credit_ledger FROM %s', grantee);
  END LOOP;
END;
$$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA credit_ledger TO PUBLIC;
