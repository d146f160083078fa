-- A new user's balances are explained by its opening rows. BEFORE INSERT marks how many are
-- due (as a negative ledger_seq, whatever the inserter wrote); AFTER INSERT writes them, so
-- the statement that creates a user also records where its credits came from.
CREATE OR REPLACE FUNCTION "credit_ledger"."user_ledger_open"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR TG_RELID <> '"public"."User"'::regclass THEN
    RAISE EXCEPTION 'user_ledger_open() runs only as the BEFORE INSERT trigger of "User"'
      USING ERRCODE = 'BC010';
  END IF;
  NEW.ledger_seq := -((NEW.free_credits <> 0)::int + (NEW.free_chat_messages <> 0)::int);
  NEW.ledger_hash := NULL;
  RETURN NEW;
END;
$$;
