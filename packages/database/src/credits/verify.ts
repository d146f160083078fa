import { is, sql, TransactionRollbackError } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import { type MigrationFile, readMigrations } from '../migrate/migrations.js';
import { defaultMigrationsFolder } from '../migrate/migrator.js';
import { LedgerVersionMismatchError } from './errors.js';
import {
  RELIED_ON_COLUMNS,
  RELIED_ON_DEFINITIONS,
  readLedgerDefinition,
} from './ledger-definition.js';
import { balanceDeltaSql } from './operations.js';
import { isTransaction, rowsOf } from './prepared.js';
import { onReplica } from './replicas.js';
import { parse, userIdInput } from './validation.js';

/** One thing `verifyLedger` found wrong. */
export interface LedgerViolation {
  /** The user whose trail is wrong; null for the ledger's installation (a trigger, a function). */
  userId: string | null;
  /** The trail row, by its position in the user's trail; null when no one row is meant. */
  seq: number | null;
  /** A stable name for the kind of problem, e.g. `hash_mismatch`, `trigger_disabled`. */
  kind: string;
  /** What is wrong, for people. */
  detail: string;
}

export interface LedgerVerification {
  /** True when nothing is wrong. */
  ok: boolean;
  /** At most `limit` violations, installation first, then by user and seq. */
  violations: LedgerViolation[];
  /** How many there are in all. */
  violationCount: number;
  /** How many there are of each kind, all counted (the list holds some of every kind first). */
  violationsByKind: Record<string, number>;
  users: number;
  rows: number;
  /** With `readHeads`: every user's head and the fingerprint, as the check saw them. */
  heads?: { fingerprint: string; anchors: LedgerAnchor[] };
}

export interface VerifyLedgerOptions {
  /** Check one user's trail only (the installation is always checked). */
  userId?: string;
  /** How many violations to return at most (all are counted). Default 1,000. */
  limit?: number;
  /** Where the migrations that define the ledger are; default the package's own `drizzle/`. */
  migrationsFolder?: string;
  /**
   * Heads saved earlier (`ledgerHeads`), kept outside the database: each must still be in
   * its user's trail with the same hash. Since every hash covers all rows before it, this
   * finds even a rewrite that recomputed the whole chain (the one edit the chain alone cannot
   * show). A user deleted since is not reported: deleting users is allowed.
   */
  anchors?: LedgerAnchor[];
  /**
   * `ledgerFingerprint` saved with the anchors: any change to the catalog rows the ledger is
   * made of since (even one undone: disabling a trigger and enabling it again leaves a new
   * catalog row) is reported, since rows written meanwhile may have bypassed the ledger.
   */
  fingerprint?: string;
  /**
   * Also read every user's head and the ledger's fingerprint, in the same snapshot as the
   * check (for `--write-heads`: what is saved is what was verified).
   */
  readHeads?: boolean;
}

/** A user's trail head: its last row's seq and hash at some moment. */
export interface LedgerAnchor {
  userId: string;
  seq: number;
  hash: string;
}

/**
 * The triggers and functions the migrations define, compared with the database's: missing,
 * disabled, different (a replaced function body, another SECURITY or search_path setting,
 * another event or function on a trigger) and unexpected triggers on the ledger's tables
 * (one could rewrite a row after ours); rules on them (one could turn an INSERT into
 * anything); and the constraints and indexes the ledger relies on.
 */
async function installationViolations(
  tx: Database | Transaction,
  migrations: MigrationFile[],
): Promise<LedgerViolation[]> {
  const expected = readLedgerDefinition(migrations);
  const found: LedgerViolation[] = [];
  const violation = (kind: string, detail: string) =>
    found.push({ userId: null, seq: null, kind, detail });

  const triggers = rowsOf(
    await tx.execute(sql`
      select c.relname as table, t.tgname as name, t.tgtype as type, t.tgenabled as enabled,
             p.proname as function, n.nspname as function_schema,
             t.tgqual is null and t.tgattr::text = '' and t.tgconstraint = 0 and not t.tgdeferrable
               and t.tgnargs = 0 as plain
        from pg_catalog.pg_trigger t
        join pg_catalog.pg_class c on c.oid = t.tgrelid
        join pg_catalog.pg_namespace cn on cn.oid = c.relnamespace
        join pg_catalog.pg_proc p on p.oid = t.tgfoid
        join pg_catalog.pg_namespace n on n.oid = p.pronamespace
       where ((cn.nspname = 'public' and c.relname in ('User', 'CreditTransaction', 'CreditHold', 'CreditPlanChange'))
              or (cn.nspname = 'credit_ledger' and c.relname = 'credit_plan'))
         and not t.tgisinternal`),
  );
  const byKey = new Map(triggers.map((t) => [`${t.table}.${t.name}`, t]));
  for (const want of expected.triggers) {
    const have = byKey.get(`${want.table}.${want.name}`);
    byKey.delete(`${want.table}.${want.name}`);
    if (!have) {
      violation('trigger_missing', `trigger ${want.name} on "${want.table}" is missing`);
    } else if (have.enabled !== 'O' && have.enabled !== 'A') {
      violation('trigger_disabled', `trigger ${want.name} on "${want.table}" is disabled`);
    } else if (
      Number(have.type) !== want.type ||
      have.function !== want.function ||
      have.function_schema !== want.functionSchema ||
      // A WHEN clause, UPDATE OF columns, arguments, or a deferred constraint trigger: each
      // can make the trigger skip the very rows it guards.
      have.plain !== true
    ) {
      violation(
        'trigger_changed',
        `trigger ${want.name} on "${want.table}" is not the one the migrations create`,
      );
    }
  }
  for (const extra of byKey.values()) {
    violation(
      'trigger_unexpected',
      `trigger ${String(extra.name)} on "${String(extra.table)}" is not one of the ledger's`,
    );
  }

  // Every function named like a ledger function, in any schema, and every function of the
  // ledger's schemas: the one a migration defines is compared with it; any other is an
  // overload (in "public" once, a role with CREATE there ran its own code as the owner inside
  // every write with one, or made every call ambiguous with another) or a stranger.
  const names = expected.functions.map((f) => f.name);
  const schemas = [...new Set(expected.functions.map((f) => f.schema))];
  const functions = rowsOf(
    await tx.execute(sql`
      select n.nspname as schema, p.proname as name, p.oid::pg_catalog.regprocedure::pg_catalog.text as signature,
             p.prosrc as body, p.prosecdef as security_definer,
             -- As text, not an array: not every driver (postgres.js without fetched types)
             -- parses a text[] result.
             pg_catalog.array_to_string(coalesce(p.proconfig, '{}'), E'\n') as config,
             p.proowner = (select relowner from pg_catalog.pg_class
                            where oid = 'public."CreditTransaction"'::pg_catalog.regclass) as owned,
             pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE') as public_execute,
             exists (select 1 from pg_catalog.aclexplode(p.proacl) a
                      where a.grantee <> p.proowner and a.privilege_type = 'EXECUTE') as others_execute,
             l.lanname as language, p.provolatile as volatility, p.proisstrict as strict
        from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        join pg_catalog.pg_language l on l.oid = p.prolang
       where p.proname = any(${`{${names.join(',')}}`}::text[])
          or n.nspname = any(${`{${schemas.join(',')}}`}::text[])
       order by 1, 3`),
  );
  const matched = new Set<unknown>();
  for (const want of expected.functions) {
    // The one function a migration defines: its name in its schema, whatever its arguments
    // (a changed signature is a changed function).
    const have = functions.filter((f) => f.schema === want.schema && f.name === want.name);
    const [f] = have;
    if (!f) {
      violation('function_missing', `function ${want.schema}.${want.name} is missing`);
      continue;
    }
    matched.add(f);
    const config = typeof f.config === 'string' && f.config !== '' ? f.config.split('\n') : [];
    if (
      f.body !== want.body ||
      f.security_definer !== want.securityDefiner ||
      config.join('\n') !== want.config.join('\n') ||
      f.language !== want.language ||
      f.volatility !== want.volatility ||
      f.strict !== want.strict
    ) {
      violation(
        'function_changed',
        `function ${want.schema}.${want.name} is not the one the migrations define (body, language, volatility, STRICT, SECURITY or SET differs)`,
      );
    }
    if (f.owned !== true) {
      violation(
        'function_owner',
        `function ${want.schema}.${want.name} is not owned by the trail's owner`,
      );
    }
    if (want.returnsTrigger && (f.public_execute === true || f.others_execute === true)) {
      violation(
        'function_privileges',
        `function ${want.schema}.${want.name} is executable by roles other than its owner: they could attach it to a table of their own`,
      );
    }
  }
  for (const f of functions) {
    if (matched.has(f)) continue;
    if (names.includes(String(f.name))) {
      violation(
        'function_overload',
        `function ${String(f.signature)} has the name of a ledger function: a call could resolve to it instead of the ledger's, or become ambiguous`,
      );
    } else {
      violation(
        'function_unexpected',
        `function ${String(f.signature)} is in the ledger's schema but is not one of the ledger's`,
      );
    }
  }

  // Foreign keys that point at the trail or "CreditHold", other than the ledger's own: one on
  // "CreditHold" keeps the hold it points at from ever closing; one of a table the ledger's
  // owner does not own makes every write refuse (BC019). The owner's own on the trail (a
  // document that references the row that charged for it) is allowed.
  const references = rowsOf(
    await tx.execute(sql`
      select k.conname as name, k.conrelid::pg_catalog.regclass::pg_catalog.text as from_table,
             k.confrelid::pg_catalog.regclass::pg_catalog.text as to_table,
             k.confrelid = 'public."CreditHold"'::pg_catalog.regclass as on_holds,
             r.relowner <> (select relowner from pg_catalog.pg_class
                             where oid = 'public."CreditTransaction"'::pg_catalog.regclass) as foreign_owner
        from pg_catalog.pg_constraint k join pg_catalog.pg_class r on r.oid = k.conrelid
       where k.contype = 'f' and k.conparentid = 0
         and k.confrelid in ('public."CreditTransaction"'::pg_catalog.regclass, 'public."CreditHold"'::pg_catalog.regclass)
         and not (k.conrelid = 'public."CreditHold"'::pg_catalog.regclass and k.conname = 'CreditHold_id_CreditTransaction_id_fk')
       order by 1`),
  );
  for (const ref of references) {
    if (ref.foreign_owner === true || ref.on_holds === true) {
      violation(
        'foreign_key_reference',
        `foreign key ${String(ref.name)} of ${String(ref.from_table)} references ${String(ref.to_table)}${ref.foreign_owner === true ? " from a table the ledger's owner does not own: every ledger write refuses while it exists" : ': the holds it points at can never close'}`,
      );
    }
  }

  const rules = rowsOf(
    await tx.execute(sql`
      select tablename, rulename from pg_catalog.pg_rules
       where schemaname = 'public' and tablename in ('User', 'CreditTransaction', 'CreditHold')`),
  );
  for (const rule of rules) {
    violation(
      'rule_unexpected',
      `rule ${String(rule.rulename)} on "${String(rule.tablename)}" could rewrite ledger writes`,
    );
  }

  // Tables that inherit from the trail (other than its partitions) hold rows its triggers
  // never see; row-level security forced on either table can hide rows from every check.
  const tables = rowsOf(
    await tx.execute(sql`
      select c.relname as name, c.relforcerowsecurity as forced, c.relrowsecurity as enabled,
        (select pg_catalog.count(*) from pg_catalog.pg_inherits i
           join pg_catalog.pg_class k on k.oid = i.inhrelid
          where i.inhparent = c.oid and not k.relispartition) as children,
        (select pg_catalog.count(*) from pg_catalog.pg_inherits i where i.inhrelid = c.oid) as parents
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relname in ('User', 'CreditTransaction', 'CreditHold')`),
  );
  for (const table of tables) {
    if (Number(table.children) > 0)
      violation(
        'inheritance_child',
        `"${String(table.name)}" has tables inheriting from it: their rows bypass the ledger`,
      );
    if (Number(table.parents) > 0)
      violation(
        'inheritance_parent',
        `"${String(table.name)}" inherits from another table: statements on that one reach its rows`,
      );
    // Enabled without being forced, row security binds the app role only: on "CreditHold" it
    // would hide holds from its balance reads and sweeps, while the owner's checks see them.
    if (table.name === 'CreditHold' && table.enabled === true && table.forced !== true)
      violation(
        'row_security_enabled',
        `"CreditHold" has row-level security enabled: it can hide open holds from the roles that read balances and sweep`,
      );
    if (table.forced === true)
      violation(
        'row_security_forced',
        `"${String(table.name)}" forces row-level security on its owner: rows could be hidden from the ledger`,
      );
  }

  const columns = new Map(
    rowsOf(
      await tx.execute(sql`
        select c.relname || '.' || a.attname as name,
               pg_catalog.format_type(a.atttypid, a.atttypmod) as type
          from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
         where c.oid in ('public."User"'::pg_catalog.regclass, 'public."CreditTransaction"'::pg_catalog.regclass,
                         'public."CreditHold"'::pg_catalog.regclass, 'public."CreditPlanChange"'::pg_catalog.regclass)
           and a.attnum > 0 and not a.attisdropped`),
    ).map((r) => [String(r.name), String(r.type)]),
  );
  for (const [name, type] of Object.entries(RELIED_ON_COLUMNS)) {
    const have = columns.get(name);
    if (have !== type)
      violation('column_changed', `column ${name} is ${have ?? 'missing'}, not ${type}`);
  }

  const definitions = new Map(
    rowsOf(
      await tx.execute(sql`
        select conname as name, pg_catalog.pg_get_constraintdef(oid) as definition
          from pg_catalog.pg_constraint
         where conrelid in ('public."User"'::pg_catalog.regclass, 'public."CreditTransaction"'::pg_catalog.regclass,
                            'public."CreditHold"'::pg_catalog.regclass, 'public."CreditPlanChange"'::pg_catalog.regclass)
           and convalidated and contype <> 'u'
        union all
        select i.relname, pg_catalog.pg_get_indexdef(i.oid)
          from pg_catalog.pg_index x join pg_catalog.pg_class i on i.oid = x.indexrelid
         where x.indrelid in ('public."CreditTransaction"'::pg_catalog.regclass, 'public."CreditPlanChange"'::pg_catalog.regclass)
           and x.indisunique
           and x.indisvalid and not x.indisprimary`),
    ).map((r) => [String(r.name), String(r.definition)]),
  );
  for (const [name, definition] of Object.entries(RELIED_ON_DEFINITIONS)) {
    const have = definitions.get(name);
    if (have === undefined)
      violation('constraint_missing', `constraint or index ${name} is missing`);
    else if (have !== definition)
      violation('constraint_changed', `${name} is "${have}", not "${definition}"`);
  }
  return found;
}

/**
 * The definitions verify compares with are those of the package's migrations folder: a
 * database that has not applied all of them, or has applied others, is refused in one line
 * rather than reported as tampered with (or failing on a column it does not have yet). A
 * database without drizzle's table (built by another tool), or whose table the verifying role
 * may not read, is compared as it is.
 */
async function refuseOtherVersion(tx: Database | Transaction, files: MigrationFile[]) {
  // From the catalog, which every role reads: a verifying role may have no USAGE on the
  // schema "drizzle" (then it cannot read the table either, and the check is skipped).
  const [table] = rowsOf(
    await tx.execute(sql`
      select pg_catalog.has_table_privilege(c.oid, 'SELECT') as readable
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'drizzle' and c.relname = '__drizzle_migrations'
         and pg_catalog.has_schema_privilege(n.oid, 'USAGE')`),
  );
  if (table?.readable !== true) return;
  const applied = new Set(
    rowsOf(await tx.execute(sql`select created_at from drizzle.__drizzle_migrations`)).map((r) =>
      Number(r.created_at),
    ),
  );
  const known = new Set(files.map((f) => f.folderMillis));
  const pending = files.filter((f) => !applied.has(f.folderMillis)).map((f) => f.name);
  const unknown = [...applied].filter((key) => !known.has(key)).length;
  if (pending.length > 0 || unknown > 0) throw new LedgerVersionMismatchError(pending, unknown);
}

/**
 * Every row and every user checked in one pass over the trail in (user_id, seq) order
 * (credit_tx_user_seq_idx): each row's seq is its position (no gap, no duplicate); its hash
 * is sha256 of the previous row's hash and its own fields (recomputed here with this file's
 * own copy of the formula in migration 0003, so a replaced hash function hides nothing);
 * its balance_after is the signed sum of its balance's rows up to it; its amount is
 * positive. Then per user: the trail ends at the user's head (ledger_seq, ledger_hash), so a
 * trail cut short is found; the balances are the sums of the trail; and refunds stay within
 * their deduction.
 */
/** The plan chains (credit_plan_change_prepare's formula), beside the trail. */
const planCtes = (userId: string | null) => sql`
    -- The plan changes, checked as the trail is (credit_plan_change_prepare's formula).
    plan_chain as (
      select c.user_id, c.seq, c.id, c.from_plan, c.plan, c.until, c.reason, c.actor,
             c.idempotency_key, c.trail_seq, c.created_at, c.hash,
             row_number() over pw as position, lag(c.plan) over pw as prev_plan,
             lag(c.until) over pw as prev_until, lag(c.trail_seq) over pw as prev_trail_seq,
             pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
               coalesce(lag(c.hash) over pw, '') || pg_catalog.jsonb_build_array(
                 c.id, c.user_id, c.seq, c.from_plan, c.plan, (extract(epoch from c.until) * 1000)::bigint,
                 c.reason, c.actor, c.idempotency_key, c.trail_seq,
                 (extract(epoch from c.created_at) * 1000)::bigint)::text, 'UTF8')), 'hex') as expected_hash
        from public."CreditPlanChange" c
       where ${userId}::uuid is null or c.user_id = ${userId}::uuid
      window pw as (partition by c.user_id order by c.seq, c.id)
    ),
    plan_heads as (
      select distinct on (user_id) user_id, position, hash, plan, until
        from plan_chain order by user_id, seq desc, id desc
    ),
`;

/**
 * What is wrong with the plan chains, and with the rows an unlimited plan covered: union
 * arms of `found`.
 */
const planFindings = (userId: string | null) => sql`
      union all
      -- A covered row names the plan the user was on when it was written: the last plan change
      -- made before it in the user's order (trail_seq below the row's seq), not ended by then.
      select t.user_id, t.seq, 'covered_plan_mismatch',
             format('row %s (%s) says plan %s covered it, but the user was on %s then',
                    t.id, t.operation, t.covered_by_plan,
                    coalesce(pc.plan || case when pc.until <= t.created_at then ' (ended at ' || pc.until || ')' else '' end,
                             'the default plan'))
        from trail t
        left join lateral (
          select c.plan, c.until from public."CreditPlanChange" c
           where c.user_id = t.user_id and c.trail_seq < t.seq
           order by c.seq desc limit 1) pc on true
       where t.covered_by_plan is not null and t.operation in ('deduct', 'hold')
         and (pc.until <= t.created_at
              or t.covered_by_plan is distinct from coalesce(pc.plan,
                   (select d.plan from credit_ledger.credit_plan d where d.is_default)))
      union all
      -- The plan that covered a use was unlimited when it did: as credit_ledger.credit_plan
      -- says now, unless its audit records a change since (then as the first one's old row).
      select t.user_id, t.seq, 'covered_plan_not_unlimited',
             format('row %s (%s) says plan %s covered it, but that plan was not unlimited at %s', t.id, t.operation, t.covered_by_plan, t.created_at)
        from trail t
       where t.covered_by_plan is not null and t.operation in ('deduct', 'hold')
         and not coalesce(
           (select (a.old_row ->> 'unlimited')::boolean from credit_ledger.credit_plan_audit a
             where a.old_row ->> 'plan' = t.covered_by_plan and a.changed_at > t.created_at
             order by a.id limit 1),
           (select c.unlimited from credit_ledger.credit_plan c where c.plan = t.covered_by_plan),
           false)
      union all
      -- An allowance is granted once a period (credit_rule_allowance_grant lets only the
      -- ledger's own through): two for one period and balance, or a period recorded as granted
      -- before it started (which would skip the allowances until then), are edits.
      select d.user_id, null, 'allowance_twice',
             format('the allowance of %s for the period from %s was granted %s times', d.balance, d.starts, d.n)
        from (select t.user_id, case when t.feature_type = 'chat_message' then 'chat messages' else 'credits' end as balance,
                     t.metadata #>> '{allowance,starts}' as starts, count(*) as n
                from trail t where t.source = 'allowance' group by 1, 2, 3 having count(*) > 1) d
      union all
      select coalesce(a.user_id, g.user_id), null, 'allowance_record',
             case when a.period_start > pg_catalog.clock_timestamp()
                  then format('the allowance of plan %s is recorded as granted for the period from %s, which has not started', a.plan, a.period_start)
                  else format('the allowance was granted for the period from %s, but is recorded as granted up to %s', g.starts, coalesce(a.period_start::text, 'no period')) end
        from (select * from credit_ledger.user_allowance a
               where ${userId}::uuid is null or a.user_id = ${userId}::uuid) a
        full join (select t.user_id, max((t.metadata #>> '{allowance,starts}')::timestamptz) as starts
                     from trail t where t.source = 'allowance' group by 1) g on g.user_id = a.user_id
       where a.period_start > pg_catalog.clock_timestamp() or g.starts > coalesce(a.period_start, '-infinity')
      union all
      select user_id, seq, 'plan_seq_gap',
             format('plan change %s is at position %s of the user''s plan changes: one is missing or doubled', id, position)
        from plan_chain where seq <> position
      union all
      select user_id, seq, 'plan_hash_mismatch',
             format('plan change %s does not hash to its stored hash with the change before it: it or an earlier change was edited', id)
        from plan_chain where hash is distinct from expected_hash
      union all
      select user_id, seq, 'plan_from_mismatch',
             format('plan change %s says the user was on %s, but the change before it set %s', id, from_plan, prev_plan)
        from plan_chain where position > 1 and from_plan is distinct from prev_plan
      union all
      select user_id, seq, 'plan_lapse_missing',
             format('plan change %s was made at %s, after the plan before it ended (%s), but is not that plan''s lapse', id, created_at, prev_until)
        from plan_chain
       where prev_until <= created_at
         and not (reason = 'lapsed' and until is null and actor is null and idempotency_key is null)
      union all
      select user_id, seq, 'plan_order',
             format('plan change %s follows trail row %s, before the change ahead of it (trail row %s)', id, trail_seq, prev_trail_seq)
        from plan_chain where trail_seq < prev_trail_seq
      union all
      select coalesce(h.user_id, s.user_id), null, 'plan_head_mismatch',
             format('the user''s plan changes end at seq %s (%s) but its current plan says seq %s (%s)',
                    coalesce(h.position::text, 'none'), coalesce(h.plan, 'none'),
                    coalesce(s.seq::text, 'none'), coalesce(s.plan, 'none'))
        from plan_heads h
        full join (select * from credit_ledger.user_plan s
                    where ${userId}::uuid is null or s.user_id = ${userId}::uuid) s on s.user_id = h.user_id
       where h.user_id is null or s.user_id is null
          or (h.position, h.hash, h.plan, h.until) is distinct from (s.seq, s.hash, s.plan, s.until)
`;

// An allocation's amount as a number, NULL when it is not one (an owner's edit): never a
// cast that fails the whole check.
const AMOUNT = sql.raw(
  `(case when pg_catalog.jsonb_typeof(a.value) = 'number' then (a.value #>> '{}')::numeric end)`,
);
/** What the row aliased `row` allocated to grant a.key, when that is a number. */
const allocated = (row: string) =>
  `(case when pg_catalog.jsonb_typeof(${row}.allocations -> a.key) = 'number' then (${row}.allocations ->> a.key)::numeric end)`;
const TAKEN = sql.raw(allocated('o'));
// What a settlement's charge took from a grant: what its hold (h) took, less what the
// settlement gave back (its refunds give back to the grants that charge came from).
const CHARGED = sql.raw(`(${allocated('h')} - coalesce(${allocated('o')}, 0))`);

/**
 * The grants each balance is made of, against the trail (union arms of `found`): each grant's
 * remaining is what it was granted less what rows took from it plus what they gave back; a
 * user's balance is the sum of its grants' remaining; each grant is the one its trail row
 * (or, carried over, the balance at its trail head) says; each row's allocations add up to
 * what it moved, name grants of its own user and balance, take nothing from an expired grant,
 * and give back no more than was taken.
 */
const grantFindings = (userId: string | null) => sql`
      union all
      select user_id, seq, 'allocations_invalid',
             format('row %s (%s) has allocations that are not an object of grant ids and positive amounts', id, operation)
        from public."CreditTransaction" t
       where t.allocations is not null and (${userId}::uuid is null or t.user_id = ${userId}::uuid)
         and (pg_catalog.jsonb_typeof(t.allocations) <> 'object'
              or exists (select 1 from pg_catalog.jsonb_each(t.allocations) a
                          where a.key !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                             or not coalesce(${AMOUNT} > 0 and ${AMOUNT} = trunc(${AMOUNT}), false)))
      union all
      select t.user_id, t.seq, 'allocations_sum',
             format('row %s (%s of %s) moves %s to or from grants', t.id, t.operation, t.amount, s.total)
        from trail t
        cross join lateral (select sum(${AMOUNT}) as total
                              from pg_catalog.jsonb_each(t.allocations) a) s
       where pg_catalog.jsonb_typeof(t.allocations) = 'object'
         and s.total is distinct from case when t.operation = 'settle' then t.held - t.amount else t.amount end
      union all
      select t.user_id, t.seq, 'allocations_foreign',
             format('row %s (%s) names grant %s, which is not a grant of this user and balance', t.id, t.operation, a.key)
        from trail t
        cross join lateral pg_catalog.jsonb_object_keys(case when pg_catalog.jsonb_typeof(t.allocations) = 'object' then t.allocations else '{}' end) a(key)
        left join credit_ledger.credit_grant g on g.id::text = a.key
       where g.id is null or g.user_id <> t.user_id or g.chat <> (t.feature_type = 'chat_message')
      union all
      select t.user_id, t.seq, 'grant_spent_expired',
             format('row %s (%s at %s) takes from grant %s, which expired at %s', t.id, t.operation, t.created_at, g.id, g.expires_at)
        from trail t
        cross join lateral pg_catalog.jsonb_object_keys(case when pg_catalog.jsonb_typeof(t.allocations) = 'object' then t.allocations else '{}' end) a(key)
        join credit_ledger.credit_grant g on g.id::text = a.key
       where (t.operation in ('deduct', 'hold') and g.expires_at <= t.created_at)
          or (t.operation = 'expire_grant' and not (g.expires_at <= t.created_at))
      union all
      -- What rows give back to a grant for one deduction or settlement (its refunds) or one
      -- hold (its closing row) never passes what that row took from it.
      select r.user_id, null, 'allocations_exceed_taken',
             format('rows giving back for %s return %s to grant %s, which it took %s from', r.source_row, r.returned, r.grant_id, coalesce(r.taken, 0))
        from (select t.user_id, coalesce(t.refund_of, t.hold_id) as source_row, a.key as grant_id,
                     sum(${AMOUNT}) as returned,
                     max(case when h.id is null then ${TAKEN} else ${CHARGED} end) as taken
                from trail t
                cross join lateral pg_catalog.jsonb_each(case when pg_catalog.jsonb_typeof(t.allocations) = 'object' then t.allocations else '{}' end) a
                left join public."CreditTransaction" o on o.id = coalesce(t.refund_of, t.hold_id)
                      and (pg_catalog.jsonb_typeof(o.allocations) = 'object' or o.operation = 'settle')
                left join public."CreditTransaction" h on t.refund_of is not null and o.operation = 'settle'
                      and h.id = o.hold_id and h.operation = 'hold'
                      and pg_catalog.jsonb_typeof(h.allocations) = 'object'
               where t.operation in ('refund', 'settle', 'void', 'expire')
               group by 1, 2, 3) r
       where r.returned > coalesce(r.taken, 0)
      union all
      select coalesce(g.user_id, m.user_id), null, 'grant_remaining',
             format('grant %s has %s remaining, but was granted %s and the trail moved %s', coalesce(g.id::text, m.grant_id),
                    coalesce(g.remaining::text, 'none'), coalesce(g.amount::text, 'none'), coalesce(m.net, 0))
        from (select * from credit_ledger.credit_grant g
               where ${userId}::uuid is null or g.user_id = ${userId}::uuid) g
        full join (select t.user_id, a.key as grant_id,
                          sum(case when t.operation in ('deduct', 'hold', 'expire_grant') then -1 else 1 end
                              * ${AMOUNT}) as net
                     from trail t
                     cross join lateral pg_catalog.jsonb_each(case when pg_catalog.jsonb_typeof(t.allocations) = 'object' then t.allocations else '{}' end) a
                    group by 1, 2) m on m.grant_id = g.id::text
       where g.id is null or g.remaining is distinct from g.amount + coalesce(m.net, 0)
      union all
      select u.id, null, 'grants_balance',
             format('the user''s grants hold %s credits and %s chat messages, but its balances are %s and %s',
                    coalesce(s.credits, 0), coalesce(s.chats, 0), u.free_credits, u.free_chat_messages)
        from public."User" u
        left join (select g.user_id, sum(g.remaining) filter (where not g.chat) as credits,
                          sum(g.remaining) filter (where g.chat) as chats
                     from credit_ledger.credit_grant g group by 1) s on s.user_id = u.id
       where (${userId}::uuid is null or u.id = ${userId}::uuid)
         and (coalesce(s.credits, 0) <> u.free_credits or coalesce(s.chats, 0) <> u.free_chat_messages)
      union all
      -- A grant is what the row that created it says; one carried over is the balance the
      -- trail had at its head.
      select coalesce(g.user_id, t.user_id), t.seq, 'grant_origin',
             format('grant %s is not the one %s', coalesce(g.id, t.id),
                    case when g.id is null then 'its row (' || t.operation || ', source ' || t.source || ') creates: it is missing'
                         when g.source = 'carried_over' then 'the balance at trail row ' || g.created_seq || ' carries over'
                         else 'its trail row creates' end)
        from (select * from credit_ledger.credit_grant g
               where ${userId}::uuid is null or g.user_id = ${userId}::uuid) g
        full join (select * from trail where source is not null) t on t.id = g.id
        left join lateral (
          select b.balance_after from trail b
           where g.source = 'carried_over' and b.user_id = g.user_id and b.seq <= g.created_seq
             and (b.feature_type = 'chat_message') = g.chat
           order by b.seq desc limit 1) carried on true
       where case when g.id is null then true
                  when g.source = 'carried_over' then t.id is not null or carried.balance_after is distinct from g.amount
                  else t.id is null
                       or (t.user_id, (t.feature_type = 'chat_message'), t.source, t.grant_expires_at, t.created_at, t.seq,
                           case when t.operation = 'settle' then t.held - t.amount else t.amount end)
                          is distinct from (g.user_id, g.chat, g.source, g.expires_at, g.created_at, g.created_seq, g.amount) end
`;

function dataViolationsQuery(userId: string | null, limit: number, withPlans: boolean) {
  return sql`
    with trail as (
      select t.user_id, t.seq, t.amount, t.operation, t.feature_type, t.balance_after, t.hash,
             t.refund_of, t.id, t.hold_id, t.hold_expires_at, t.covered_by_plan,
             t.source, t.grant_expires_at, t.allocations, t.metadata,
             hr.user_id as hold_user, hr.operation as hold_operation, hr.feature_type as hold_feature,
             hr.amount as held, hr.seq as hold_seq, hr.hold_expires_at as hold_expiry,
             hr.covered_by_plan as hold_covered,
             row_number() over w as position,
             lag(t.hash) over w as prev_hash,
             t.created_at, lag(t.created_at) over w as prev_created_at,
             coalesce(sum(d.delta) filter (where t.feature_type = 'chat_message') over w, 0) as chats,
             coalesce(sum(d.delta) filter (where t.feature_type <> 'chat_message') over w, 0) as credits,
             pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
               coalesce(lag(t.hash) over w, '') || (pg_catalog.jsonb_build_array(
                 t.id, t.user_id, t.seq, t.operation::text, t.feature_type::text, t.amount,
                 t.balance_after, (extract(epoch from t.created_at) * 1000)::bigint,
                 t.idempotency_key, t.refund_of, t.metadata)
               || case when t.hold_id is null and t.hold_expires_at is null then '[]'::jsonb
                       else pg_catalog.jsonb_build_array(t.hold_id,
                              (extract(epoch from t.hold_expires_at) * 1000)::bigint) end
               -- The columns added since, without the NULL ones: an older row hashes as before.
               || case when x.extension = '{}'::jsonb then '[]'::jsonb
                       else pg_catalog.jsonb_build_array(x.extension) end
               )::text, 'UTF8')), 'hex') as expected_hash
        from public."CreditTransaction" t
        -- The hold a settle, void or expire row closes (looked up for those rows only).
        left join lateral (
          select h.user_id, h.operation, h.feature_type, h.amount, h.seq, h.hold_expires_at, h.covered_by_plan
            from public."CreditTransaction" h
           where t.hold_id is not null and h.id = t.hold_id) hr on true
        cross join lateral (
          select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'covered_by_plan', t.covered_by_plan, 'actor', t.actor, 'source', t.source,
                   'grant_expires_at', (extract(epoch from t.grant_expires_at) * 1000)::bigint,
                   'allocations', t.allocations)) as extension) x
        -- The row's change to its balance (operations.ts): a hold takes its amount, a
        -- settlement gives back what it did not charge, a void or an expiry gives back the
        -- whole hold. A settlement whose hold is missing counts as charging all of it
        -- (hold_invalid reports it).
        cross join lateral (
          select ${balanceDeltaSql('t.operation', 't.amount', 'coalesce(hr.amount, t.amount)', 't.covered_by_plan')} as delta) d
       where ${userId}::uuid is null or t.user_id = ${userId}::uuid
      window w as (partition by t.user_id order by t.seq, t.id)
    ),
    heads as (
      select distinct on (user_id) user_id, position, hash, chats, credits
        from trail order by user_id, seq desc, id desc
    ),
${withPlans ? planCtes(userId) : sql``}    found as (
      select user_id, seq, 'seq_gap' as kind,
             format('row %s is at position %s of the trail: a row is missing or doubled', id, position) as detail
        from trail where seq <> position
      union all
      select user_id, seq, 'hash_mismatch',
             format('row %s does not hash to its stored hash with the row before it: it or an earlier row was edited', id)
        from trail where hash is distinct from expected_hash
      union all
      select user_id, seq, 'balance_chain',
             format('row %s says balance_after %s, but its balance''s rows add up to %s', id, balance_after,
                    case when feature_type = 'chat_message' then chats else credits end)
        from trail
       where balance_after is distinct from case when feature_type = 'chat_message' then chats else credits end
      union all
      select user_id, seq, 'amount_not_positive', format('row %s has amount %s', id, amount)
        from trail where amount <= 0
      union all
      select user_id, seq, 'created_at_order',
             format('row %s is dated %s, before the row ahead of it in the trail (%s): it was dated by hand, or the server''s clock stepped back',
                    id, created_at, prev_created_at)
        from trail where created_at < prev_created_at
      union all
      select u.id, null, 'head_mismatch',
             format('the user''s trail ends at seq %s (hash %s) but its head says seq %s (hash %s)',
                    coalesce(h.position, 0), coalesce(left(h.hash, 12), 'none'), u.ledger_seq,
                    coalesce(left(u.ledger_hash, 12), 'none'))
        from public."User" u left join heads h on h.user_id = u.id
       where (${userId}::uuid is null or u.id = ${userId}::uuid)
         and (coalesce(h.position, 0) <> u.ledger_seq or h.hash is distinct from u.ledger_hash)
      union all
      select u.id, null, 'balance_mismatch',
             format('balances are %s free_credits and %s free_chat_messages, but the trail adds up to %s and %s',
                    u.free_credits, u.free_chat_messages, coalesce(h.credits, 0), coalesce(h.chats, 0))
        from public."User" u left join heads h on h.user_id = u.id
       where (${userId}::uuid is null or u.id = ${userId}::uuid)
         and (u.free_credits <> coalesce(h.credits, 0) or u.free_chat_messages <> coalesce(h.chats, 0))
      union all
      select user_id, seq, 'hold_columns',
             format('row %s (%s) has hold_id %s and hold_expires_at %s: hold_id belongs on settle, void and expire rows, hold_expires_at on hold rows',
                    id, operation, coalesce(hold_id::text, 'none'), coalesce(hold_expires_at::text, 'none'))
        from trail
       where (hold_id is not null) <> (operation in ('settle', 'void', 'expire'))
          or (hold_expires_at is not null) <> (operation = 'hold')
      union all
      select user_id, seq, 'hold_invalid',
             format('row %s closes %s, which is not an earlier hold of this user and balance', id, hold_id)
        from trail
       where hold_id is not null
         and not (hold_operation is not distinct from 'hold' and hold_user = user_id
                  and hold_feature = feature_type and hold_seq < seq)
      union all
      select user_id, seq, 'hold_amount',
             format('row %s (%s) is for %s of hold %s, which held %s', id, operation, amount, hold_id, held)
        from trail
       where hold_operation = 'hold'
         and ((operation = 'settle' and amount > held) or (operation in ('void', 'expire') and amount <> held))
      union all
      select user_id, seq, 'hold_expiry',
             format('row %s (%s) is dated %s, but hold %s expires at %s', id, operation, created_at, hold_id, hold_expiry)
        from trail
       where hold_operation = 'hold'
         and ((operation = 'expire' and created_at < hold_expiry)
              or (operation in ('settle', 'void') and created_at >= hold_expiry))
      union all
      select user_id, seq, 'hold_expiry',
             format('hold %s taken at %s expires at %s: not within 24 hours after it was taken', id, created_at, hold_expires_at)
        from trail
       where operation = 'hold'
         and (hold_expires_at <= created_at or hold_expires_at > created_at + interval '24 hours 1 minute')
      union all
      select user_id, null, 'hold_closed_twice',
             format('hold %s is closed by %s rows', hold_id, count(*))
        from trail where hold_id is not null
       group by user_id, hold_id having count(*) > 1
      union all
      -- "CreditHold" lists exactly the trail's open holds: one missing would never expire.
      select coalesce(o.user_id, c.user_id), null, 'open_holds_mismatch',
             case when c.id is null then format('hold %s is open in the trail but not listed in "CreditHold": it would never expire', o.id)
                  when o.id is null then format('"CreditHold" lists %s, which is not an open hold of the trail', c.id)
                  else format('"CreditHold" lists hold %s with other values than its trail row', o.id) end
        from (select t.id, t.user_id, t.amount, t.feature_type, t.hold_expires_at, t.created_at, t.covered_by_plan
                from trail t
               where t.operation = 'hold' and not exists (select 1 from trail c where c.hold_id = t.id)) o
        full join (select * from public."CreditHold" h
                    where ${userId}::uuid is null or h.user_id = ${userId}::uuid) c on c.id = o.id
       where o.id is null or c.id is null
          or (o.user_id, o.amount, o.feature_type, o.hold_expires_at, o.created_at, o.covered_by_plan)
             is distinct from (c.user_id, c.amount, c.feature_type, c.expires_at, c.created_at, c.covered_by_plan)
      union all
      select user_id, seq, 'covered_columns',
             format('row %s (%s) has covered_by_plan %s, but only deductions and holds an unlimited plan covered, and the rows that close such a hold, have it',
                    id, operation, coalesce(covered_by_plan, 'none'))
        from trail
       where (covered_by_plan is not null and operation not in ('deduct', 'hold', 'settle', 'void', 'expire'))
          or (hold_id is not null and covered_by_plan is distinct from hold_covered)
${withPlans ? planFindings(userId) : sql``}
${withPlans ? grantFindings(userId) : sql``}
      union all
      select r.user_id, null, 'refund_exceeds_deduction',
             format('refunds of charge %s add up to %s, more than its %s (or it is not a deduction or settlement of this user and balance)',
                    r.refund_of, sum(r.amount), max(d.amount))
        from public."CreditTransaction" r
        left join public."CreditTransaction" d
          on d.id = r.refund_of and d.user_id = r.user_id and d.operation in ('deduct', 'settle')
         and (d.feature_type = 'chat_message') = (r.feature_type = 'chat_message')
         and d.covered_by_plan is null
       where r.refund_of is not null and (${userId}::uuid is null or r.user_id = ${userId}::uuid)
       group by r.user_id, r.refund_of
      having sum(r.amount) > coalesce(max(d.amount), 0)
    )
    -- One row at least, carrying the counts, so that they cost no second pass over the trail.
    -- The rows listed are taken from every kind in turn (the first of each kind, then the
    -- second…), so a thousand of one kind cannot push the only one of another past the limit;
    -- each kind's count comes with them.
    select s.rows, s.users, s.kinds, f.user_id, f.seq, f.kind, f.detail, f.total
      from (select (select count(*) from trail) as rows,
                   (select count(*) from public."User" u
                     where ${userId}::uuid is null or u.id = ${userId}::uuid) as users,
                   (select pg_catalog.json_object_agg(k.kind, k.n)::text
                      from (select kind, count(*) as n from found group by kind) k) as kinds) s
      left join (select user_id, seq, kind, detail, count(*) over () as total
                   from (select *, row_number() over (partition by kind order by user_id, seq nulls first) as nth
                           from found) ranked
                  order by nth, kind, user_id, seq nulls first
                  limit ${limit}) f on true
     order by f.user_id, f.seq nulls first, f.kind`;
}

/**
 * Checks that the ledger is installed as its migrations define it and that every trail
 * explains its balances, untampered. Read-only: it runs in one REPEATABLE READ, READ ONLY
 * transaction, so it sees one consistent moment while writes go on.
 */
export async function verifyLedger(
  db: Database | Transaction,
  options: VerifyLedgerOptions = {},
): Promise<LedgerVerification> {
  db = onReplica(db);
  const userId = options.userId === undefined ? null : parse(userIdInput, options.userId, 'userId');
  const limit = options.limit ?? 1000;
  const run = async (tx: Database | Transaction): Promise<LedgerVerification> => {
    // The folder is read once, for both the version check and the definitions.
    const migrations = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
    await refuseOtherVersion(tx, migrations);
    const installation = await installationViolations(tx, migrations);
    // A database without the plans' tables (built by drizzle-kit push, or migrated only up to
    // before them) is reported as such, and its trail checked without them.
    const [plans] = rowsOf(
      await tx.execute(sql`
        select pg_catalog.to_regclass('credit_ledger.user_plan') is not null
           and pg_catalog.to_regclass('credit_ledger.credit_plan') is not null
           and pg_catalog.to_regclass('credit_ledger.credit_grant') is not null
           and pg_catalog.to_regclass('credit_ledger.user_allowance') is not null
           and pg_catalog.to_regclass('credit_ledger.credit_plan_audit') is not null
           and pg_catalog.to_regclass('public."CreditPlanChange"') is not null as present`),
    );
    const withPlans = plans?.present === true;
    if (!withPlans)
      installation.push({
        userId: null,
        seq: null,
        kind: 'table_missing',
        detail:
          'the tables of plans and grants (credit_ledger.credit_plan, user_plan, credit_grant, "CreditPlanChange") are missing: run the migrations',
      });
    const rows = rowsOf(await tx.execute(dataViolationsQuery(userId, limit, withPlans)));
    const anchored: LedgerViolation[] = options.anchors?.length
      ? rowsOf(
          await tx.execute(sql`
            select a."userId" as user_id, a.seq, pg_catalog.format(
                'the trail held hash %s at seq %s when it was anchored, now %s: rows up to there were rewritten (or the user was deleted and created again under the same id)',
                pg_catalog.left(a.hash, 12), a.seq, coalesce(pg_catalog.left(t.hash, 12), 'no row')) as detail
              from pg_catalog.jsonb_to_recordset(${JSON.stringify(options.anchors)}::jsonb)
                     as a("userId" uuid, seq bigint, hash text)
              join public."User" u on u.id = a."userId"
              left join public."CreditTransaction" t on t.user_id = a."userId" and t.seq = a.seq
             where (${userId}::uuid is null or a."userId" = ${userId}::uuid)
               and t.hash is distinct from a.hash
             order by 1, 2`),
        ).map((r) => ({
          userId: String(r.user_id),
          seq: Number(r.seq),
          kind: 'anchor_mismatch',
          detail: String(r.detail),
        }))
      : [];
    const counts = rows[0];
    const data = rows
      .filter((r) => r.kind != null)
      .map((r) => ({
        userId: String(r.user_id),
        seq: r.seq == null ? null : Number(r.seq),
        kind: String(r.kind),
        detail: String(r.detail),
      }));
    const fingerprint =
      options.fingerprint !== undefined || options.readHeads
        ? await ledgerFingerprint(tx)
        : undefined;
    if (options.fingerprint !== undefined && fingerprint !== options.fingerprint) {
      anchored.unshift({
        userId: null,
        seq: null,
        kind: 'ledger_altered',
        detail:
          "the ledger's catalog rows (triggers, functions, tables, indexes, constraints, enum labels) changed since the heads were saved, if only for a moment: rows written since may have bypassed it",
      });
    }
    const violationCount = installation.length + anchored.length + Number(counts?.total ?? 0);
    const violationsByKind: Record<string, number> = {};
    for (const v of [...installation, ...anchored])
      violationsByKind[v.kind] = (violationsByKind[v.kind] ?? 0) + 1;
    for (const [kind, n] of Object.entries(
      JSON.parse(typeof counts?.kinds === 'string' ? counts.kinds : '{}') as Record<string, number>,
    ))
      violationsByKind[kind] = (violationsByKind[kind] ?? 0) + Number(n);
    const heads =
      options.readHeads && fingerprint !== undefined
        ? { fingerprint, anchors: await ledgerHeads(tx) }
        : undefined;
    return {
      ok: violationCount === 0,
      violations: [...installation, ...anchored, ...data].slice(0, limit),
      violationCount,
      violationsByKind,
      users: Number(counts?.users ?? 0),
      rows: Number(counts?.rows ?? 0),
      ...(heads ? { heads } : {}),
    };
  };
  // Every name the checks use is qualified, and the session's own search_path (which could
  // put an operator of its own before pg_catalog's) is replaced for the checks' duration; with
  // row_security off, a policy that would hide rows makes the check fail instead.
  const checked = async (tx: Database | Transaction) => {
    await tx.execute(sql`select pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true),
      pg_catalog.set_config('row_security', 'off', true),
      pg_catalog.set_config('TimeZone', 'UTC', true), pg_catalog.set_config('DateStyle', 'ISO, YMD', true),
      pg_catalog.set_config('IntervalStyle', 'postgres', true)`);
    return run(tx);
  };
  if (!isTransaction(db)) {
    return db.transaction(checked, { isolationLevel: 'repeatable read', accessMode: 'read only' });
  }
  // Inside the caller's transaction: in a savepoint rolled back after, so the settings above
  // do not outlive the check.
  let result: LedgerVerification | undefined;
  await db
    .transaction(async (savepoint) => {
      result = await checked(savepoint);
      savepoint.rollback();
    })
    .catch((error: unknown) => {
      if (!is(error, TransactionRollbackError)) throw error;
    });
  if (!result) throw new Error('verifyLedger: the check returned nothing');
  return result;
}

/**
 * Every user's head now (users with no rows have none), to keep outside the database and
 * pass back later as `anchors`.
 */
export async function ledgerHeads(db: Database | Transaction): Promise<LedgerAnchor[]> {
  db = onReplica(db);
  const rows = rowsOf(
    await db.execute(sql`
      select id, ledger_seq, ledger_hash from public."User"
       where ledger_seq > 0 and ledger_hash is not null order by id`),
  );
  return rows.map((r) => ({
    userId: String(r.id),
    seq: Number(r.ledger_seq),
    hash: String(r.ledger_hash),
  }));
}

/**
 * A digest of the catalog rows the ledger relies on, with their transaction ids (oids and
 * xmins, the same whatever the session's search_path): its triggers, the functions and tables
 * of credit_ledger, the row types of its three tables (a rename changes them), the
 * constraints and unique indexes RELIED_ON_DEFINITIONS names, foreign keys onto the trail or
 * "CreditHold", rules on and inheritance of the three tables, and the enum labels the rules
 * name (every operation; the chat and opening features). It changes with any DDL on those,
 * even DDL undone later in the same transaction (disabling a trigger and enabling it again,
 * renaming a table and back), and with nothing else: not with an app's own column, index or
 * function, a GRANT, or a new feature type (a dump and restore changes it: save new heads
 * then). It cannot show an object created and dropped again in between: see the README.
 */
export async function ledgerFingerprint(db: Database | Transaction): Promise<string> {
  const relied = `{${Object.keys(RELIED_ON_DEFINITIONS).join(',')}}`;
  const [row] = rowsOf(
    await db.execute(sql`
      with ledger_tables(oid) as (
        values ('public."User"'::pg_catalog.regclass), ('public."CreditTransaction"'::pg_catalog.regclass),
               ('public."CreditHold"'::pg_catalog.regclass), ('public."CreditPlanChange"'::pg_catalog.regclass))
      select pg_catalog.md5(pg_catalog.string_agg(entry, ',' order by entry)) as fingerprint
        from (select 't:' || t.oid::pg_catalog.text || ':' || t.xmin::pg_catalog.text as entry
                from pg_catalog.pg_trigger t
               where t.tgrelid in (select oid from ledger_tables) and not t.tgisinternal
              union all
              select 'f:' || p.oid::pg_catalog.text || ':' || p.xmin::pg_catalog.text
                from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'credit_ledger'
              union all
              select 'r:' || c.oid::pg_catalog.text || ':' || c.xmin::pg_catalog.text
                from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'credit_ledger'
                  or (c.relname = any(${relied}::pg_catalog.text[]) and c.relkind = 'i'
                      and c.oid in (select indexrelid from pg_catalog.pg_index
                                     where indrelid in (select oid from ledger_tables)))
              union all
              select 'y:' || ty.oid::pg_catalog.text || ':' || ty.xmin::pg_catalog.text
                from pg_catalog.pg_type ty join pg_catalog.pg_class c on c.reltype = ty.oid
               where c.oid in (select oid from ledger_tables)
              union all
              select 'c:' || k.oid::pg_catalog.text || ':' || k.xmin::pg_catalog.text
                from pg_catalog.pg_constraint k
               where (k.conrelid in (select oid from ledger_tables) and k.conname = any(${relied}::pg_catalog.text[]))
                  or (k.contype = 'f' and k.confrelid in ('public."CreditTransaction"'::pg_catalog.regclass,
                                                          'public."CreditHold"'::pg_catalog.regclass))
              union all
              select 'w:' || w.oid::pg_catalog.text || ':' || w.xmin::pg_catalog.text
                from pg_catalog.pg_rewrite w where w.ev_class in (select oid from ledger_tables)
              union all
              select 'p:' || i.inhrelid::pg_catalog.text || ':' || i.inhparent::pg_catalog.text || ':' || i.xmin::pg_catalog.text
                from pg_catalog.pg_inherits i
               where i.inhparent in (select oid from ledger_tables) or i.inhrelid in (select oid from ledger_tables)
              union all
              select 'e:' || e.oid::pg_catalog.text || ':' || e.xmin::pg_catalog.text
                from pg_catalog.pg_enum e
               where e.enumtypid = 'public.operation_type'::pg_catalog.regtype
                  or (e.enumtypid = 'public.feature_type'::pg_catalog.regtype
                      and e.enumlabel in ('chat_message', 'document_generation'))) e`),
  );
  return String(row?.fingerprint ?? '');
}
