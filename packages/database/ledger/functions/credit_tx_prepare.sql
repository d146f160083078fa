-- BEFORE INSERT on the trail: lock the user, check, number, date and hash the row. No side
-- effect here may survive the row being skipped (ON CONFLICT) or refused, so this only reads,
-- locks and writes the expire rows of the user's due holds (statements of their own, undone
-- with this one). Each rule is a function of its own (credit_rule_*), with its error code and
-- the reason it exists; this one reads what they need under the user's lock and calls them in
-- order, each when a cheap test says it may refuse or has work to do. A rule returns true or
-- raises, so that it is called as an expression (a PERFORM costs more).
--
-- SQLSTATEs of class BC (src/credits/errors.ts maps each to a typed error; the README lists them):
--   BC001 insufficient balance       BC002 unknown user            BC003 refund exceeds its deduction
--   BC004 invalid refund target      BC007 capped refund under REPEATABLE READ
--   BC008 write out of the user's trail order, or an opening row out of place
--   BC009 ledger not installed (a ledger trigger is missing, disabled or changed)
--   BC010 run other than as its own trigger
--   BC012–BC016 holds: not found, closed already, amount, not due, hold columns or expiry
--   BC017 a foreign trigger runs inside the write    BC018 TRIGGER held by another role (REPEATABLE READ)
--   BC019 another role's foreign key references a ledger table
--   BC020 a cap of credit_ledger.credit_limit (per plan, feature and period) would be exceeded
--   BC021 more due holds than one write gives back (credit_expire_due_holds)
--   BC022, BC023 plans (credit_plan_change_prepare)
--   BC024 an expire_grant row that does not expire one due grant whole
--
-- lock_timeout bounds every lock wait inside the write: a role with UPDATE on "User" or
-- "CreditHold" can hold a user's row lock (SELECT … FOR UPDATE in a transaction it keeps
-- open), and the user's writes would otherwise wait for as long as it likes. They fail with
-- 55P03 instead, which the package reports as LEDGER_LOCK_TIMEOUT (retryable).
CREATE OR REPLACE FUNCTION "credit_ledger"."credit_tx_prepare"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET row_security = off
SET lock_timeout = '5s'
AS $$
DECLARE
  chat boolean := NEW.feature_type = 'chat_message';
  census record;
  credits integer;
  chats integer;
  head bigint;
  head_hash text;
  available integer;
  held integer;
  next_balance bigint;
  at timestamptz;
  expired_at timestamptz;
  plan_until timestamptz;
  grant_id uuid;
  grant_chat boolean;
  grant_remaining integer;
  grant_expires timestamptz;
  allocated bigint;
  ok boolean;
BEGIN
  -- Only as the trail's own trigger: the owner could attach this function to a table of its own.
  IF TG_WHEN <> 'BEFORE' OR TG_OP <> 'INSERT' OR TG_LEVEL <> 'ROW' OR NOT "credit_ledger"."credit_tx_is_trail"(TG_RELID::pg_catalog.regclass) THEN
    RAISE EXCEPTION 'credit_tx_prepare() runs only as the BEFORE INSERT trigger of "CreditTransaction"'
      USING ERRCODE = 'BC010';
  END IF;

  -- No trigger can be added to "User" or "CreditHold" from here to the end of the transaction
  -- (CREATE TRIGGER takes a lock this one conflicts with; the trail's own is held since the
  -- INSERT began), so the census of triggers below stays true for the whole write. With only
  -- the row lock, a trigger created while this write waited after the census (for a
  -- refund_of row another session locked, say) fired in credit_tx_apply's UPDATE. It comes
  -- before the statement below, whose snapshot (READ COMMITTED) then sees every trigger
  -- committed before it.
  LOCK TABLE "public"."User", "public"."CreditHold" IN ROW EXCLUSIVE MODE;

  -- Every write of one user takes this lock first, so they apply one at a time, in seq order.
  -- One statement also reads what the rules need, one round of the executor: the census of
  -- triggers and foreign keys, the feature's daily limit, when this user's next open hold
  -- is due, and, for a deduction or a hold, the user's plan and whether it is unlimited. Its
  -- subqueries and join read the statement's snapshot, which may be older than the row the
  -- lock returns (a write or plan change of this user that committed while this one waited:
  -- both update the user's row); `stale` says the row in that snapshot is another version,
  -- so the hold and plan figures may be stale and are read again.
  -- The census reads pg_trigger alone, with no join or subquery on the common path (each is
  -- set up again on every write, ~5–15 µs): the rules read more only when it is not 10.
  SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash,
         -- The census, one pass over the three tables' triggers summed into one number, since
         -- each aggregate, subquery and expression here is set up again on every write:
         --   1 for each of the ledger's triggers (table, name, function, pg_trigger.tgtype)
         --     present, enabled and plain (credit_rule_ledger_triggers); adding one is one line;
         --   1024 for each trigger that runs inside a write (on the trail or "CreditHold", any;
         --     on "User", those firing on UPDATE) with a function that is not the ledger's
         --     (credit_rule_no_foreign_triggers);
         --   1048576 for each foreign key onto the trail or "CreditHold" from another table
         --     (credit_rule_no_foreign_reference, which looks up that table's owner): such a
         --     key has internal triggers on the table it references, whose tgconstrrelid is
         --     the referencing table.
         -- So it is 10 exactly when nothing needs a closer look.
         (SELECT coalesce(sum(CASE
                  WHEN t.tgisinternal THEN
                    CASE WHEN t.tgrelid <> '"public"."User"'::regclass
                          AND t.tgconstrrelid NOT IN ('"public"."CreditTransaction"'::regclass, '"public"."CreditHold"'::regclass, '"public"."User"'::regclass, TG_RELID)
                         THEN 1048576 ELSE 0 END
                  WHEN CASE t.tgname
                  WHEN 'credit_tx_prepare' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_prepare"()'::regprocedure AND t.tgtype = 7
                  WHEN 'credit_tx_apply' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_apply"()'::regprocedure AND t.tgtype = 5
                  WHEN 'credit_tx_append_only' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_append_only"()'::regprocedure AND t.tgtype = 27
                  WHEN 'credit_tx_no_truncate' THEN t.tgrelid = TG_RELID AND t.tgfoid = '"credit_ledger"."credit_tx_append_only"()'::regprocedure AND t.tgtype = 34
                  WHEN 'user_ledger_guard' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_guard"()'::regprocedure AND t.tgtype = 19
                  WHEN 'user_ledger_open' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_open"()'::regprocedure AND t.tgtype = 7
                  WHEN 'user_ledger_opening' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_opening"()'::regprocedure AND t.tgtype = 5
                  WHEN 'user_ledger_delete' THEN t.tgrelid = '"public"."User"'::regclass AND t.tgfoid = '"credit_ledger"."user_ledger_delete"()'::regprocedure AND t.tgtype = 11
                  WHEN 'credit_hold_guard' THEN t.tgrelid = '"public"."CreditHold"'::regclass AND t.tgfoid = '"credit_ledger"."credit_hold_guard"()'::regprocedure AND t.tgtype = 31
                  WHEN 'credit_hold_no_truncate' THEN t.tgrelid = '"public"."CreditHold"'::regclass AND t.tgfoid = '"credit_ledger"."credit_hold_guard"()'::regprocedure AND t.tgtype = 34
                         ELSE false END
                   AND t.tgenabled IN ('O', 'A') AND t.tgqual IS NULL AND NOT t.tgdeferrable
                   AND t.tgnargs = 0 AND pg_catalog.cardinality(t.tgattr::int2[]) = 0 THEN 1
                  WHEN t.tgfoid NOT IN ('"credit_ledger"."credit_tx_prepare"()'::regprocedure, '"credit_ledger"."credit_tx_apply"()'::regprocedure,
                                        '"credit_ledger"."credit_tx_append_only"()'::regprocedure, '"credit_ledger"."user_ledger_guard"()'::regprocedure,
                                        '"credit_ledger"."credit_hold_guard"()'::regprocedure)
                   AND (t.tgrelid = TG_RELID OR t.tgrelid <> '"public"."CreditTransaction"'::regclass)
                   AND (t.tgrelid <> '"public"."User"'::regclass OR t.tgtype & 16 <> 0) THEN 1024
                  ELSE 0 END), 0)
            FROM pg_trigger t
           WHERE t.tgrelid IN (TG_RELID, '"public"."CreditTransaction"'::regclass, '"public"."User"'::regclass, '"public"."CreditHold"'::regclass)) AS triggers,
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           EXISTS (SELECT 1 FROM "credit_ledger"."credit_limit" l WHERE l.feature_type = NEW.feature_type) END AS capped,
         (SELECT min(h.expires_at) FROM "public"."CreditHold" h WHERE h.user_id = NEW.user_id) AS next_expiry,
         (SELECT min(g.expires_at) FROM "credit_ledger"."credit_grant" g
           WHERE g.user_id = NEW.user_id AND g.remaining > 0) AS next_grant_expiry,
         (SELECT s.xmin FROM "public"."User" s WHERE s.id = NEW.user_id) IS DISTINCT FROM u.xmin AS stale,
         p.until AS plan_until,
         -- The period of the plan's allowance, and the last period it was granted in.
         (SELECT c.allowance_period FROM "credit_ledger"."credit_plan" c
           WHERE c.plan = coalesce(p.plan, (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default))) AS allowance_period,
         (SELECT a.period_start FROM "credit_ledger"."user_allowance" a WHERE a.user_id = NEW.user_id) AS allowance_start,
         -- The unlimited plan that covers a deduction or hold: the user's plan (the default
         -- plan without one), when it is unlimited.
         CASE WHEN NEW.operation IN ('deduct', 'hold') THEN
           (SELECT c.plan FROM "credit_ledger"."credit_plan" c
             WHERE c.unlimited AND c.plan = coalesce(p.plan,
                     (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default))) END AS covering
    INTO census FROM "public"."User" u LEFT JOIN "credit_ledger"."user_plan" p ON p.user_id = u.id
   WHERE u.id = NEW.user_id FOR NO KEY UPDATE OF u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', NEW.user_id
      USING ERRCODE = 'BC002', DETAIL = json_build_object('userId', NEW.user_id)::text;
  END IF;
  credits := census.free_credits;
  chats := census.free_chat_messages;
  head := census.ledger_seq;
  head_hash := census.ledger_hash;

  -- A PL/pgSQL rule is called when its first, cheap test says it may refuse or has work to
  -- do: a call costs a write ~10–30 µs, and a plain deduction would otherwise pay for each.
  -- Past 10, each rule gets what is above its own unit (so a count too large for its field,
  -- carried into the next, still makes the rule look), and reads the catalog itself.
  IF census.triggers <> 10 THEN
    ok := "credit_ledger"."credit_rule_ledger_triggers"(10 - census.triggers % 1024);
    ok := "credit_ledger"."credit_rule_no_foreign_triggers"(TG_RELID, census.triggers / 1024);
    ok := "credit_ledger"."credit_rule_no_foreign_reference"(TG_RELID, census.triggers / 1048576);
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    ok := "credit_ledger"."credit_rule_snapshot_sees_triggers"(TG_RELID);
  END IF;
  -- An SQL rule, inlined here, is called on every write (it costs no call when it passes).
  ok := "credit_ledger"."credit_rule_hold_columns"(NEW.operation, NEW.hold_id, NEW.hold_expires_at);
  -- A source and an expiry are a grant's (BC016); which grants a row takes from or gives back
  -- to is the ledger's to say: only an expire_grant row names one, which is checked below.
  IF (NEW.source IS NOT NULL OR NEW.grant_expires_at IS NOT NULL) AND NEW.operation <> 'grant' THEN
    RAISE EXCEPTION 'source and grant_expires_at are set on grant rows only'
      USING ERRCODE = 'BC016',
            DETAIL = json_build_object('field', CASE WHEN NEW.source IS NOT NULL THEN 'source' ELSE 'expiresAt' END,
              'reason', 'is set on grants only')::text;
  END IF;
  IF NEW.operation <> 'expire_grant' THEN
    NEW.allocations := NULL;
  END IF;

  -- The user's due holds are given back first (credit_expire_due_holds), as of this row's
  -- time. Open holds change only with a write of their user, which moves its head: with the
  -- head the same in the snapshot as under the lock, `next_expiry` is exact, and when it is
  -- not due (the common case: no open hold at all) nothing is scanned. An expire row expires
  -- nothing itself.
  at := date_trunc('milliseconds', clock_timestamp());
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.next_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_holds"(NEW.user_id, NEW.hold_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  -- Then the allowance of the period, at the user's first write in it (credit_allowance_grant:
  -- once per period, whatever the plan; its rows are written before this one). The census's
  -- plan may be stale or past its end: the function reads the plan again, and decides. Before
  -- the grants' expiries below, which then expire what is due by the time it moved `at` to.
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.plan_until <= at
          OR (census.allowance_period IS NOT NULL
              AND coalesce(census.allowance_start < date_trunc(census.allowance_period, at, 'UTC'), true))) THEN
    IF "credit_ledger"."credit_allowance_grant"(NEW.user_id, at) THEN
      at := date_trunc('milliseconds', clock_timestamp());
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  -- Then what remains of the user's grants past their expiry comes off (credit_expire_due_
  -- grants), so this row never spends or counts it. Grants change only with a write of their
  -- user, as holds do: `next_grant_expiry` is exact unless the row is stale.
  IF head >= 0 AND NEW.operation NOT IN ('expire', 'expire_grant')
     AND (census.stale OR census.next_grant_expiry <= at) THEN
    expired_at := "credit_ledger"."credit_expire_due_grants"(NEW.user_id, at);
    IF expired_at IS NOT NULL THEN
      at := expired_at;
      SELECT u.free_credits, u.free_chat_messages, u.ledger_seq, u.ledger_hash
        INTO credits, chats, head, head_hash
        FROM "public"."User" u WHERE u.id = NEW.user_id;
    END IF;
  END IF;
  available := CASE WHEN chat THEN chats ELSE credits END;

  -- An expire_grant row takes off all that remains of one grant of this user and balance,
  -- due by now (BC024): whoever inserts it (the ledger, the sweeper, anyone) can expire
  -- nothing else, and nothing twice (the grant's row is locked and read again here).
  IF NEW.operation = 'expire_grant' THEN
    IF jsonb_typeof(NEW.allocations) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(NEW.allocations)) = 1 THEN
      SELECT c.id, c.chat, c.remaining, c.expires_at INTO grant_id, grant_chat, grant_remaining, grant_expires
        FROM "credit_ledger"."credit_grant" c
       WHERE c.id::text = (SELECT k FROM jsonb_object_keys(NEW.allocations) k) AND c.user_id = NEW.user_id
       FOR UPDATE;
    END IF;
    IF grant_id IS NULL OR grant_chat IS DISTINCT FROM chat OR NOT coalesce(grant_expires <= at, false)
       OR grant_remaining IS DISTINCT FROM NEW.amount
       OR NEW.allocations ->> grant_id::text IS DISTINCT FROM NEW.amount::text
       OR NEW.feature_type NOT IN ('none', 'chat_message') THEN
      RAISE EXCEPTION 'an expire_grant row takes off all that remains of one due grant of its user and balance'
        USING ERRCODE = 'BC024',
              DETAIL = json_build_object('userId', NEW.user_id, 'grantId', grant_id,
                'remaining', grant_remaining, 'expiresAt', grant_expires)::text;
    END IF;
    NEW.allocations := jsonb_build_object(grant_id, NEW.amount);
  END IF;

  -- Which plan covers a deduction or a hold, read under the lock: a plan change is entirely
  -- before or after this row. A time-bound plan past its end at this row's time is ended
  -- first, by its own plan change (credit_plan_lapse). Only the ledger sets covered_by_plan.
  NEW.covered_by_plan := NULL;
  IF NEW.operation IN ('deduct', 'hold') THEN
    NEW.covered_by_plan := census.covering;
    plan_until := census.plan_until;
    IF census.stale THEN
      SELECT p.until INTO plan_until FROM "credit_ledger"."user_plan" p WHERE p.user_id = NEW.user_id;
    END IF;
    IF plan_until <= at THEN
      PERFORM "credit_ledger"."credit_plan_lapse"(NEW.user_id);
    END IF;
    IF census.stale OR plan_until <= at THEN
      NEW.covered_by_plan := (SELECT c.plan FROM "credit_ledger"."credit_plan" c
        WHERE c.unlimited AND c.plan = coalesce(
          (SELECT p.plan FROM "credit_ledger"."user_plan" p WHERE p.user_id = NEW.user_id),
          (SELECT d.plan FROM "credit_ledger"."credit_plan" d WHERE d.is_default)));
    END IF;
  END IF;

  IF head >= 0 AND NEW.metadata IS NULL THEN
    NEW.seq := head + 1;
  ELSE
    NEW.seq := "credit_ledger"."credit_rule_opening_row"(NEW.user_id, NEW.operation, NEW.feature_type,
      NEW.amount, NEW.metadata, NEW.idempotency_key, NEW.refund_of, head, credits, chats);
  END IF;
  IF head < 0 THEN
    -- An opening row: the grant of a new user's balance, which never expires.
    IF NEW.grant_expires_at IS NOT NULL THEN
      RAISE EXCEPTION 'the opening rows of user % do not expire', NEW.user_id
        USING ERRCODE = 'BC008', HINT = 'Grant expiring credits in a later statement.';
    END IF;
    NEW.source := 'opening';
    NEW.balance_after := NEW.amount;
  ELSE
    IF NEW.operation = 'refund' AND NEW.refund_of IS NOT NULL THEN
      ok := "credit_ledger"."credit_rule_refund_cap"(NEW.user_id, NEW.feature_type, NEW.amount,
        NEW.refund_of, NEW.idempotency_key);
      -- Back to the grants the deduction took from (credit_grant_give_back); one from before
      -- credit sources existed took from none, and its refund is a grant of its own.
      NEW.allocations := "credit_ledger"."credit_grant_give_back"(NEW.refund_of, NEW.amount);
      IF NEW.allocations IS NULL THEN
        NEW.source := 'refund';
      END IF;
    ELSIF NEW.hold_id IS NOT NULL THEN
      held := "credit_ledger"."credit_rule_hold_close"(NEW.user_id, NEW.operation, NEW.feature_type,
        NEW.amount, NEW.hold_id, at);
      -- A hold an unlimited plan covered is closed as it was taken: moving no balance.
      NEW.covered_by_plan := (SELECT h.covered_by_plan FROM "public"."CreditHold" h WHERE h.id = NEW.hold_id);
      -- What the hold gives back (all of it, or what a settlement did not charge) goes back to
      -- the grants it took from; a hold from before credit sources existed took from none.
      IF NEW.covered_by_plan IS NULL AND (held - (CASE WHEN NEW.operation = 'settle' THEN NEW.amount ELSE 0 END)) > 0 THEN
        NEW.allocations := "credit_ledger"."credit_grant_give_back"(NEW.hold_id,
          held - CASE WHEN NEW.operation = 'settle' THEN NEW.amount ELSE 0 END);
        IF NEW.allocations IS NULL THEN
          NEW.source := 'refund';
        END IF;
      END IF;
    ELSIF NEW.operation = 'hold' THEN
      ok := "credit_ledger"."credit_rule_hold_expiry"(NEW.hold_expires_at, at);
    ELSIF NEW.operation = 'grant' THEN
      -- Where the credits came from (promotional when the inserter does not say), and when
      -- what remains of them expires: after this row, if ever.
      NEW.source := coalesce(NEW.source, 'promotional');
      IF NEW.source = 'allowance' THEN
        ok := "credit_ledger"."credit_rule_allowance_grant"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.grant_expires_at, NEW.metadata);
      END IF;
      IF NEW.source IN ('opening', 'refund', 'carried_over') THEN
        RAISE EXCEPTION 'a grant''s source % is the ledger''s to set', NEW.source
          USING ERRCODE = 'BC016',
                DETAIL = json_build_object('field', 'source', 'reason', 'opening, refund and carried_over are set by the ledger')::text;
      END IF;
      IF NEW.grant_expires_at IS NOT NULL AND (NEW.grant_expires_at <= at OR NOT isfinite(NEW.grant_expires_at)) THEN
        RAISE EXCEPTION 'a grant expires after it is made, at a finite time, not at %', NEW.grant_expires_at
          USING ERRCODE = 'BC016',
                DETAIL = json_build_object('field', 'expiresAt', 'reason', 'must be a finite time in the future')::text;
      END IF;
    ELSIF NEW.operation = 'refund' THEN
      -- A refund that names no deduction gives its credits back as a grant of its own.
      NEW.source := 'refund';
    END IF;
    -- A row an unlimited plan covers records the use and its cost, and moves no balance.
    next_balance := available::bigint + CASE WHEN NEW.covered_by_plan IS NULL
      THEN "credit_ledger"."credit_balance_effect"(NEW.operation, NEW.amount, held) ELSE 0 END;
    IF next_balance IS NULL THEN
      RAISE EXCEPTION 'the credits ledger does not know what operation % does to a balance', NEW.operation
        USING ERRCODE = 'BC009', HINT = 'Add it to credit_ledger.credit_balance_effect (ledger/functions/credit_balance_effect.sql) and run pnpm db:ledger.';
    END IF;
    IF NEW.covered_by_plan IS NOT NULL THEN
      -- A covered use still counts against the caps: a cap bounds use, on every plan.
      IF census.capped THEN
        ok := "credit_ledger"."credit_rule_caps"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at);
      END IF;
    ELSIF next_balance < available THEN
      IF next_balance < 0 THEN
        ok := "credit_ledger"."credit_rule_sufficient"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, available);
      END IF;
      IF census.capped THEN
        ok := "credit_ledger"."credit_rule_caps"(NEW.user_id, NEW.feature_type, NEW.amount,
          NEW.idempotency_key, at);
      END IF;
      -- A deduction or a hold takes from the user's live grants of this balance, the
      -- soonest-expiring first (never-expiring last), then the oldest; their remaining amounts
      -- add up to the balance, so the balance covering the amount means they do. An
      -- expire_grant row took its allocations above.
      IF NEW.operation IN ('deduct', 'hold') THEN
        SELECT jsonb_object_agg(g.id, least(g.remaining, NEW.amount - (g.running - g.remaining))),
               coalesce(sum(least(g.remaining, NEW.amount - (g.running - g.remaining))), 0)
          INTO NEW.allocations, allocated
          FROM (SELECT c.id, c.remaining,
                       sum(c.remaining) OVER (ORDER BY c.expires_at, c.created_at, c.id) AS running
                  FROM "credit_ledger"."credit_grant" c
                 WHERE c.user_id = NEW.user_id AND c.chat = (NEW.feature_type = 'chat_message')
                   AND c.remaining > 0) g
         WHERE g.running - g.remaining < NEW.amount;
        IF allocated <> NEW.amount THEN
          RAISE EXCEPTION 'the live grants of user % cover % of the % % it has', NEW.user_id, allocated,
              available, CASE WHEN chat THEN 'free_chat_messages' ELSE 'free_credits' END
            USING ERRCODE = 'BC009', HINT = 'Its grants and its balance disagree: pnpm credits:verify lists what is wrong.';
        END IF;
      END IF;
    ELSE
      ok := "credit_ledger"."credit_rule_balance_range"(NEW.user_id, NEW.feature_type, next_balance,
        CASE WHEN NEW.hold_id IS NULL
             THEN (SELECT coalesce(sum(h.amount), 0) FROM "public"."CreditHold" h
                    WHERE h.user_id = NEW.user_id AND (h.feature_type = 'chat_message') = chat
                      AND h.covered_by_plan IS NULL)
             ELSE 0 END,
        NEW.hold_id IS NULL);
    END IF;
    NEW.balance_after := next_balance;
  END IF;

  -- Server-set, under the user's lock: the inserter chooses none of these.
  NEW.created_at := at;
  NEW.hash := "credit_ledger"."credit_tx_hash"(head_hash, NEW.id, NEW.user_id, NEW.seq, NEW.operation,
    NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at, NEW.idempotency_key,
    NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at,
    jsonb_strip_nulls(jsonb_build_object('covered_by_plan', NEW.covered_by_plan, 'actor', NEW.actor,
      'source', NEW.source, 'grant_expires_at', (extract(epoch FROM NEW.grant_expires_at) * 1000)::int8,
      'allocations', NEW.allocations)));
  RETURN NEW;
END;
$$;
