-- Rule (BC016): the hold columns belong to hold rows (hold_expires_at) and to the rows that
-- close one (hold_id: settle, void, expire), and to no other.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_hold_columns"(
  operation "public"."operation_type", hold_id uuid, hold_expires_at timestamptz
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  closes boolean := operation IN ('settle', 'void', 'expire');
BEGIN
  IF (hold_expires_at IS NOT NULL) <> (operation = 'hold') OR (hold_id IS NOT NULL) <> closes THEN
    RAISE EXCEPTION 'hold_expires_at is set on hold rows only, and hold_id on settle, void and expire rows only'
      USING ERRCODE = 'BC016', DETAIL = json_build_object('field', CASE WHEN closes OR hold_id IS NOT NULL THEN 'holdId' ELSE 'expiresInMs' END,
                                                          'reason', 'is set on hold rows (expiry) or closing rows (hold id) only')::text;
  END IF;
  RETURN true;
END;
$$;
