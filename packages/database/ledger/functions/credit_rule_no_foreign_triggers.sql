-- Rule (BC017): no trigger that is not the ledger's runs inside a write with a function the
-- tables' owner does not own. A role with the TRIGGER privilege (GRANT ALL grants it) could
-- otherwise run code of its own in the middle of the write, after the rules were checked:
-- set the balance credit_tx_apply's UPDATE writes, or change a row after credit_tx_prepare
-- hashed it. The owner's own triggers are the owner's to answer for (credits:verify lists
-- every trigger that is not the ledger's); a built-in function (pg_catalog) is nobody's, and
-- counts as foreign. `foreign_count` is not 0 when credit_tx_prepare's census found a
-- trigger that runs inside a write (on the trail or "CreditHold", any; on "User", those that
-- fire on UPDATE) with a function that is not one of the ledger's, or a foreign key it counts
-- above them: the catalog is only read again, for their functions' owners, then.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_no_foreign_triggers"(relid oid, foreign_count bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF foreign_count = 0 THEN
    RETURN true;
  END IF;
  SELECT string_agg(format('%I on %s (function %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc), ', ' ORDER BY t.tgname)
    INTO foreign_list
    FROM pg_trigger t
   WHERE t.tgrelid IN (relid, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)
     AND NOT t.tgisinternal AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0)
     AND NOT EXISTS (SELECT 1 FROM pg_proc p
                      WHERE p.oid = t.tgfoid AND p.pronamespace <> 'pg_catalog'::regnamespace
                        AND p.proowner = (SELECT c.relowner FROM pg_class c
                                           WHERE c.oid = '"public"."CreditTransaction"'::regclass));
  IF foreign_list IS NOT NULL THEN
    RAISE EXCEPTION 'a trigger that is not the ledger''s runs inside ledger writes: %', foreign_list
      USING ERRCODE = 'BC017', DETAIL = json_build_object('triggers', foreign_list)::text,
            HINT = 'Its function could change a balance or a row after the ledger checked it. Drop the trigger, or have the owner of the ledger tables own its function.';
  END IF;
  RETURN true;
END;
$$;
