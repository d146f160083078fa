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
