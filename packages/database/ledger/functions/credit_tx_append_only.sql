-- The trail is append-only. Rows leave it only with their user: the ON DELETE CASCADE from
-- "User" deletes them after the user row is gone, which is what this checks (in the real
-- "User", whatever TEMP table a session creates under that name; with row_security off, so
-- that a policy hiding the user makes this fail, never pass). Attached to another table with
-- a user_id (docs/scaling's idempotency key claims) it keeps that one append-only too.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_append_only"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW'
     AND NOT EXISTS (SELECT 1 FROM "public"."User" WHERE id = OLD.user_id) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only: % is refused', format('%I', TG_TABLE_NAME), TG_OP
    USING ERRCODE = 'BC005',
          HINT = 'Correct a balance with a new grant, deduct or refund row; rows are removed only by deleting their user.';
END;
$$;
