-- Rule (BC019): no foreign key of a table the ledger's owner does not own references the
-- trail or "CreditHold". REFERENCES (part of GRANT ALL) and CREATE on any schema let a role
-- make one and point it at a victim's hold: the hold could then never be closed, and every
-- write of that user, and the sweeper, would fail on it; one on a trail row keeps its user
-- from being deleted. The owner's own tables may reference them. `foreign_keys` is not 0
-- when credit_tx_prepare's census found a foreign key onto them from a table that is not
-- the ledger's (a foreign key creates internal triggers on the table it references); the
-- census does not look up owners (a join there is paid on every write), so this does, then.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_no_foreign_reference"(relid oid, foreign_keys bigint) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  foreign_list text;
BEGIN
  IF foreign_keys = 0 THEN
    RETURN true;
  END IF;
  SELECT string_agg(DISTINCT format('%I on %s (owner %s, references %s)', k.conname, k.conrelid::regclass,
                                    r.relowner::regrole, k.confrelid::regclass), ', ')
    INTO foreign_list
    FROM pg_trigger t
    JOIN pg_constraint k ON k.oid = t.tgconstraint
    JOIN pg_class r ON r.oid = k.conrelid
   WHERE t.tgrelid IN (relid, '"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass)
     AND t.tgisinternal AND k.contype = 'f' AND k.confrelid = t.tgrelid
     AND r.relowner <> (SELECT c.relowner FROM pg_class c
                         WHERE c.oid = '"public"."CreditTransaction"'::regclass);
  IF foreign_list IS NULL THEN
    RETURN true;
  END IF;
  RAISE EXCEPTION 'a foreign key of a table the ledger''s owner does not own references a ledger table: %', foreign_list
    USING ERRCODE = 'BC019', DETAIL = json_build_object('constraints', foreign_list)::text,
          HINT = 'It could keep a hold from ever closing, or a user from being deleted. Drop the constraint, or have the owner of the ledger tables own its table.';
END;
$$;
