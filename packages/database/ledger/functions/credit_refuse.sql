-- Raises the error a rule refuses a write with. Rules that need no table are SQL functions
-- of the form `CASE WHEN <refused> THEN credit_refuse(…) ELSE true END`, which PostgreSQL
-- inlines where they are called, so that a write that passes them pays no function call
-- (a PL/pgSQL call costs a write ~10–30 µs); this is the call made only when one refuses.
-- `detail` is the JSON the typed errors read (src/credits/errors.ts), or NULL for none.
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_refuse"(
  code text, message text, detail text, hint text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
  IF detail IS NULL AND hint IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
  ELSIF hint IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail;
  ELSIF detail IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, HINT = hint;
  END IF;
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail, HINT = hint;
END;
$$;
