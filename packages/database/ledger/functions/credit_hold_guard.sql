-- "CreditHold" holds exactly the trail's open holds. Its rows are checked against the trail,
-- not against who writes them: a row is added only for a hold row of the trail, with its
-- values, that nothing has closed; removed only once the trail closed that hold, or with its
-- user; never changed. So no UPDATE or DELETE, from anyone, can make a hold never expire, or
-- fake one for the sweeper (an expire row is checked against the trail again anyway).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_hold_guard"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_WHEN <> 'BEFORE' OR TG_RELID <> '"public"."CreditHold"'::regclass THEN
    RAISE EXCEPTION 'credit_hold_guard() runs only as the BEFORE triggers of "CreditHold"'
      USING ERRCODE = 'BC010';
  END IF;
  IF TG_LEVEL = 'ROW' AND TG_OP = 'INSERT' THEN
    -- The user's lock first, as every write of the trail takes it: a closing row written
    -- meanwhile is then committed and seen below (or, from an older REPEATABLE READ
    -- snapshot, taking the lock fails), so a closed hold is never listed again. The
    -- ledger's own insert holds the lock already.
    PERFORM 1 FROM "public"."User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
    IF EXISTS (SELECT 1 FROM "public"."CreditTransaction" t
                WHERE t.id = NEW.id AND t.operation = 'hold' AND "credit_ledger"."credit_tx_is_trail"(t.tableoid::pg_catalog.regclass)
                  AND t.user_id = NEW.user_id AND t.amount = NEW.amount AND t.feature_type = NEW.feature_type
                  AND t.hold_expires_at = NEW.expires_at AND t.created_at = NEW.created_at
                  AND t.covered_by_plan IS NOT DISTINCT FROM NEW.covered_by_plan)
       AND NOT EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                        WHERE c.hold_id = NEW.id AND "credit_ledger"."credit_tx_is_trail"(c.tableoid::pg_catalog.regclass)) THEN
      RETURN NEW;
    END IF;
  ELSIF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM "public"."User" WHERE id = OLD.user_id)
       OR EXISTS (SELECT 1 FROM "public"."CreditTransaction" c
                   WHERE c.hold_id = OLD.id AND "credit_ledger"."credit_tx_is_trail"(c.tableoid::pg_catalog.regclass)) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '"CreditHold" lists the open holds of the credit trail: % is refused', TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Settle, void or expire a hold through the ledger (settleCreditHold, voidCreditHold, expireCreditHolds).';
END;
$$;
