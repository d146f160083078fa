import type postgres from 'postgres';
import { AdoptionRefusedError } from './errors.js';

/**
 * What `db:adopt` takes over: a database built the way the seed plan builds it. Its
 * "CreditTransaction" has the seed's seven columns and enums (values may be appended), and
 * its "User" a uuid id and the two counters; everything else on them is the app's. This
 * reads the catalog and the data (nothing else) and refuses, in one line naming what
 * differs and what to do, anything the conversion could not take over whole.
 */

/** The seed's enum values, in the seed's order; an app may have appended more. */
export const SEED_OPERATIONS = ['deduct', 'refund', 'grant'] as const;
export const SEED_FEATURES = [
  'document_generation',
  'workstream_clustering',
  'chat_tool_call',
  'chat_message',
] as const;

// Values the package's later migrations append (0004): an app's own value of that name would
// make them fail half-way through the ledger's installation.
const LEDGER_OPERATIONS = ['hold', 'settle', 'void', 'expire'];

// Names the package's migrations create: taken already, they would fail after adoption.
const LEDGER_RELATIONS = [
  'public."CreditHold"',
  'public.credit_tx_user_idempotency_key_idx',
  'public.credit_tx_refund_of_idx',
  'public.credit_tx_user_seq_idx',
];
const LEDGER_COLUMNS: Record<string, string[]> = {
  User: ['ledger_seq', 'ledger_hash'],
  CreditTransaction: [
    'balance_after',
    'idempotency_key',
    'refund_of',
    'seq',
    'hash',
    'hold_id',
    'hold_expires_at',
  ],
};

export interface Column {
  name: string;
  /** `format_type`, e.g. `integer`, `timestamp without time zone`. */
  type: string;
  typeOid: number;
  notNull: boolean;
  hasDefault: boolean;
}

export interface SeedShape {
  userColumns: Column[];
  logColumns: Column[];
  /** The log's created_at is `timestamp without time zone` (read in the chosen zone). */
  logTimeWithoutZone: boolean;
  constraintRenames: { table: string; from: string; to: string }[];
  users: number;
  usersWithNullBalance: number;
  logRows: number;
}

type Sql = postgres.Sql | postgres.TransactionSql;

async function columns(sql: Sql, table: string): Promise<Column[]> {
  const rows = await sql<Column[]>`
    select a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
           a.atttypid::int as "typeOid", a.attnotnull as "notNull", a.atthasdef as "hasDefault"
      from pg_attribute a
     where a.attrelid = ${`public."${table}"`}::regclass and a.attnum > 0 and not a.attisdropped
     order by a.attnum`;
  return rows;
}

async function enumLabels(sql: Sql, type: string): Promise<string[] | undefined> {
  const [found] = await sql<{ oid: number | null }[]>`
    select to_regtype(${`public.${type}`})::oid::int as oid`;
  if (!found?.oid) return undefined;
  const rows = await sql<{ label: string }[]>`
    select enumlabel as label from pg_enum where enumtypid = ${found.oid} order by enumsortorder`;
  return rows.map((r) => r.label);
}

/**
 * A text[] literal: the migrator's connections do not read the server's types (connect()),
 * so an array goes as text and is cast in the SQL.
 */
function textArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replace(/["\\]/g, '\\$&')}"`).join(',')}}`;
}

function refuse(what: string, next: string): never {
  throw new AdoptionRefusedError(`${what}: ${next}.`);
}

/**
 * Reads the database and returns its seed shape, or throws AdoptionRefusedError.
 * `logTimeZone`: the zone a `timestamp without time zone` log time is read in.
 */
export async function readSeedShape(sql: Sql, logTimeZone: string): Promise<SeedShape> {
  const [tables] = await sql<{ user: boolean; log: boolean }[]>`
    select to_regclass('public."User"') is not null as user,
           to_regclass('public."CreditTransaction"') is not null as log`;
  if (!tables?.user || !tables.log) {
    const missing = [!tables?.user && '"User"', !tables?.log && '"CreditTransaction"']
      .filter(Boolean)
      .join(' and ');
    refuse(
      `This database has no ${missing} table, so it was not built the seed plan's way`,
      'db:adopt takes over only such a database; an empty one needs only pnpm db:migrate',
    );
  }

  const [owner] = await sql<{ name: string | null }[]>`
    select string_agg(format('%s (owner %I)', c.oid::regclass, pg_get_userbyid(c.relowner)), ', ') as name
      from pg_class c
     where c.oid in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)
       and not pg_has_role(current_user, c.relowner, 'USAGE')`;
  if (owner?.name) {
    refuse(
      `The role ${await currentUser(sql)} does not own ${owner.name}`,
      "run db:adopt with a DATABASE_URL of the tables' owner (or a role that is a member of it)",
    );
  }

  const userColumns = await columns(sql, 'User');
  const logColumns = await columns(sql, 'CreditTransaction');
  const userColumn = (name: string) => userColumns.find((c) => c.name === name);
  const logColumn = (name: string) => logColumns.find((c) => c.name === name);

  // "User": a uuid primary key `id` and two integer counters; the rest is the app's.
  if (userColumn('id')?.type !== 'uuid') {
    refuse(
      `"User".id is ${userColumn('id')?.type ?? 'missing'}, not uuid`,
      'the ledger keys every trail row by a uuid user id; db:adopt takes over only a "User" with one',
    );
  }
  for (const name of ['free_credits', 'free_chat_messages']) {
    const type = userColumn(name)?.type;
    if (type !== 'integer') {
      refuse(
        `"User".${name} is ${type ?? 'missing'}, not integer`,
        "db:adopt takes over the seed plan's integer counters only; make it integer (or add it) first",
      );
    }
  }
  for (const name of ['created_at', 'updated_at']) {
    const type = userColumn(name)?.type;
    if (type !== undefined && !type.startsWith('timestamp')) {
      refuse(
        `"User".${name} is ${type}, not a timestamp`,
        'the ledger dates opening rows by "User".created_at and sets updated_at on every change; rename the app\'s column first',
      );
    }
  }
  const primaryKey = await keyColumns(sql, 'User');
  if (primaryKey.join(',') !== 'id') {
    refuse(
      `"User"'s primary key is (${primaryKey.join(', ') || 'none'}), not (id)`,
      'the trail references "User"(id); make id the primary key first',
    );
  }

  // "CreditTransaction": the seed's seven columns, exactly typed; more columns are the app's.
  const [operationType, featureType] = await sql<{ oid: number | null }[]>`
    select to_regtype('public.operation_type')::oid::int as oid
    union all select to_regtype('public.feature_type')::oid::int`;
  const expected: [string, (c: Column) => boolean, string][] = [
    ['id', (c) => c.type === 'uuid', 'uuid'],
    ['user_id', (c) => c.type === 'uuid' && c.notNull, 'uuid not null'],
    ['amount', (c) => c.type === 'integer' && c.notNull, 'integer not null'],
    [
      'operation',
      (c) => c.typeOid === operationType?.oid && c.notNull,
      'public.operation_type not null',
    ],
    [
      'feature_type',
      (c) => c.typeOid === featureType?.oid && c.notNull,
      'public.feature_type not null',
    ],
    ['metadata', (c) => c.type === 'jsonb', 'jsonb'],
    [
      'created_at',
      (c) => c.type.startsWith('timestamp') && c.notNull,
      'timestamp not null (with or without time zone)',
    ],
  ];
  for (const [name, ok, want] of expected) {
    const column = logColumn(name);
    if (!column || !ok(column)) {
      refuse(
        `"CreditTransaction".${name} is ${column ? `${column.type}${column.notNull ? ' not null' : ''}` : 'missing'}, the seed's is ${want}`,
        "db:adopt takes over only the seed plan's log; make the column match first",
      );
    }
  }
  if ((await keyColumns(sql, 'CreditTransaction')).join(',') !== 'id') {
    refuse(
      '"CreditTransaction" has no primary key on (id)',
      'every trail row is found by its id; make id the primary key first',
    );
  }
  for (const [table, taken] of Object.entries(LEDGER_COLUMNS)) {
    const clash = (table === 'User' ? userColumns : logColumns).find((c) => taken.includes(c.name));
    if (clash) {
      refuse(
        `"${table}".${clash.name} exists already, a column the ledger's migrations add`,
        "this database was partly migrated: if it was built by this package's migrations, use pnpm db:baseline; else rename the app's column",
      );
    }
  }
  const known = new Set(expected.map(([name]) => name));
  const required = logColumns.find((c) => !known.has(c.name) && c.notNull && !c.hasDefault);
  if (required) {
    refuse(
      `"CreditTransaction".${required.name} is the app's, not null and without a default`,
      'the ledger writes rows without it; give it a default or make it nullable first',
    );
  }

  const operations = await enumLabels(sql, 'operation_type');
  const features = await enumLabels(sql, 'feature_type');
  if (!startsWith(operations, SEED_OPERATIONS)) {
    refuse(
      `public.operation_type is (${operations?.join(', ')}), not the seed's (${SEED_OPERATIONS.join(', ')}) with values appended`,
      "db:adopt takes over only the seed plan's enums",
    );
  }
  const clashing = operations?.find((v) => LEDGER_OPERATIONS.includes(v));
  if (clashing) {
    refuse(
      `public.operation_type has a value "${clashing}", which the ledger's migrations add`,
      "rename the app's value first (ALTER TYPE … RENAME VALUE)",
    );
  }
  if (!startsWith(features, SEED_FEATURES)) {
    refuse(
      `public.feature_type is (${features?.join(', ')}), not the seed's (${SEED_FEATURES.join(', ')}) with values appended`,
      "db:adopt takes over only the seed plan's enums",
    );
  }

  await refuseWhatTheConversionCannotRewrite(sql);
  const constraintRenames = await foreignKeys(sql);

  const [taken] = await sql<{ names: string | null }[]>`
    select string_agg(name, ', ') as names
      from unnest(${textArray(LEDGER_RELATIONS)}::text[]) name where to_regclass(name) is not null`;
  const [ledgerSchema] = await sql<{ exists: boolean }[]>`
    select to_regnamespace('credit_ledger') is not null as exists`;
  if (taken?.names || ledgerSchema?.exists) {
    refuse(
      `${taken?.names ?? 'schema credit_ledger'} exists already, a name the ledger's migrations create`,
      "if this database was built by this package's migrations, use pnpm db:baseline; else rename the app's object first",
    );
  }

  const [negative] = await sql<{ n: number; example: string | null }[]>`
    select count(*)::int as n, min(id::text) as example from "public"."User"
     where free_credits < 0 or free_chat_messages < 0`;
  if (negative && negative.n > 0) {
    refuse(
      `${negative.n} user(s) have a negative free_credits or free_chat_messages (${negative.example}${negative.n > 1 ? ', …' : ''})`,
      'a balance cannot be below 0 in the ledger; correct them to what they should be, and run again',
    );
  }
  if (userColumn('created_at')) {
    const [undated] = await sql<{ n: number }[]>`
      select count(*)::int as n from "public"."User" where created_at is null`;
    if (undated && undated.n > 0) {
      refuse(
        `${undated.n} user(s) have no created_at`,
        "the ledger dates a user's opening rows by it; set it (to the sign-up time, or the first log row's) and run again",
      );
    }
  }

  // The ledger dates each new row by the clock and keeps each trail in time order: a time
  // after now (a log written in local time read as UTC, a skewed clock) would come after
  // the rows written next.
  const logTimeWithoutZone = logColumn('created_at')?.type.includes('without time zone') ?? false;
  const [future] = await sql<{ n: number; latest: string | null }[]>`
    select count(*)::int as n, max(at)::text as latest from (
      select case when ${logTimeWithoutZone} then created_at::timestamp at time zone ${logTimeZone}
                  else created_at::timestamptz end as at
        from "public"."CreditTransaction") t
     where at > clock_timestamp()`;
  if (future && future.n > 0) {
    refuse(
      `${future.n} log row(s) are dated after now (the latest ${future.latest}, its time read as ${logTimeZone})`,
      'if the log was written in another zone, pass it as --log-time-zone; else correct those times, and run again',
    );
  }
  const userTime = userColumn('created_at')?.type;
  if (userTime) {
    const [early] = await sql<{ n: number }[]>`
      select count(*)::int as n from "public"."User"
       where case when ${userTime.includes('without time zone')}
                  then created_at::timestamp at time zone 'UTC' else created_at::timestamptz end > clock_timestamp()`;
    if (early && early.n > 0) {
      refuse(
        `${early.n} user(s) have a created_at after now (read as UTC)`,
        "the ledger dates a user's opening rows by it; correct those times, and run again",
      );
    }
  }

  const [counts] = await sql<{ users: number; nulls: number; log: number }[]>`
    select (select count(*)::int from "public"."User") as users,
           (select count(*)::int from "public"."User" where free_credits is null or free_chat_messages is null) as nulls,
           (select count(*)::int from "public"."CreditTransaction") as log`;
  return {
    userColumns,
    logColumns,
    logTimeWithoutZone,
    constraintRenames,
    users: counts?.users ?? 0,
    usersWithNullBalance: counts?.nulls ?? 0,
    logRows: counts?.log ?? 0,
  };
}

async function currentUser(sql: Sql): Promise<string> {
  const [row] = await sql<{ name: string }[]>`select current_user as name`;
  return row?.name ?? 'unknown';
}

async function keyColumns(sql: Sql, table: string): Promise<string[]> {
  const rows = await sql<{ name: string }[]>`
    select a.attname as name
      from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
     where i.indrelid = ${`public."${table}"`}::regclass and i.indisprimary
     order by a.attnum`;
  return rows.map((r) => r.name);
}

function startsWith(values: string[] | undefined, prefix: readonly string[]): boolean {
  return !!values && prefix.every((value, i) => values[i] === value);
}

/**
 * The log's reference to "User" must be the seed's (user_id → "User"(id), on delete cascade:
 * a user leaves with its trail), and nothing may reference the log: the conversion moves the
 * rows the ledger cannot hold out of it, and the ledger refuses another role's reference to
 * its trail. The primary keys and the user reference get the names the migrations give them.
 */
async function foreignKeys(sql: Sql): Promise<SeedShape['constraintRenames']> {
  const references = await sql<{ name: string; from: string }[]>`
    select conname as name, conrelid::regclass::text as from from pg_constraint
     where contype = 'f' and confrelid = 'public."CreditTransaction"'::regclass
       and conrelid <> 'public."CreditTransaction"'::regclass`;
  if (references[0]) {
    refuse(
      `${references[0].from} references "CreditTransaction" (constraint ${references[0].name})`,
      'the conversion moves log rows the ledger cannot hold out of the log, and the ledger refuses references to its trail; drop the constraint first',
    );
  }
  const [userKey] = await sql<{ name: string; cascade: boolean }[]>`
    select c.conname as name, c.confdeltype = 'c' as cascade
      from pg_constraint c
     where c.contype = 'f' and c.conrelid = 'public."CreditTransaction"'::regclass
       and c.confrelid = 'public."User"'::regclass
       and c.conkey = array[(select attnum from pg_attribute
                              where attrelid = c.conrelid and attname = 'user_id')]
       and c.confkey = array[(select attnum from pg_attribute
                               where attrelid = c.confrelid and attname = 'id')]`;
  if (!userKey?.cascade) {
    refuse(
      `"CreditTransaction".user_id ${userKey ? 'references "User"(id) without on delete cascade' : 'has no foreign key to "User"(id)'}`,
      "the ledger deletes a user's trail with the user; add the seed's reference (on delete cascade) first",
    );
  }
  const renames: SeedShape['constraintRenames'] = [];
  if (userKey.name !== 'CreditTransaction_user_id_User_id_fk') {
    renames.push({
      table: 'CreditTransaction',
      from: userKey.name,
      to: 'CreditTransaction_user_id_User_id_fk',
    });
  }
  const keys = await sql<{ table: string; name: string }[]>`
    select conrelid::regclass::text as table, conname as name from pg_constraint
     where contype = 'p' and conrelid in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)`;
  for (const key of keys) {
    const table = key.table.replace(/^(public\.)?"?|"$/g, '');
    if (key.name !== `${table}_pkey`) renames.push({ table, from: key.name, to: `${table}_pkey` });
  }
  return renames;
}

/**
 * Refuses a log whose trail could not be built: 0003 opens each balance with what the log
 * does not explain and keeps a running balance in an integer, so an opening or a running
 * balance above 2147483647 would fail db:migrate on every run, after the adoption. It reads
 * the whole log (a sort by user and time), so it runs once, before the tables are locked:
 * rows the app logs after it are not checked (ADOPTING.md says so).
 */
export async function checkBalancesFit(
  sql: Sql,
  settings: {
    nullCredits: number;
    nullChatMessages: number;
    logTimeZone: string;
    /** The shape's: the log's time is `timestamp without time zone`. */
    logTimeWithoutZone: boolean;
  },
): Promise<void> {
  // Each row's time as 0003 will order it: the instant it meant, at milliseconds (rows of
  // one millisecond then go by id, as there).
  const withoutZone = settings.logTimeWithoutZone;
  const [over] = await sql<{ n: number; example: string | null }[]>`
    with d as (
      select user_id, feature_type::text = 'chat_message' as chat,
             case when operation::text = 'deduct' then -amount::bigint else amount::bigint end as delta,
             (case when ${withoutZone} then created_at::timestamp at time zone ${settings.logTimeZone}
                   else created_at::timestamptz end)::timestamptz(3) as created_at, id
        from "public"."CreditTransaction"
       where amount > 0 and operation::text = any(${textArray(SEED_OPERATIONS)}::text[])
    ), r as (
      select user_id, chat, delta,
             sum(delta) over (partition by user_id, chat order by created_at, id) as run
        from d
    ), a as (
      select user_id, chat, min(run) as low, max(run) as high, sum(delta) as net
        from r group by user_id, chat
    )
    select count(*)::int as n, min(u.id::text) as example
      from a join "public"."User" u on u.id = a.user_id
     where greatest(0, -least(a.low, 0),
                    (case when a.chat then coalesce(u.free_chat_messages, ${settings.nullChatMessages})
                          else coalesce(u.free_credits, ${settings.nullCredits}) end) - a.net)
           + greatest(a.high, 0) > 2147483647`;
  if (over && over.n > 0) {
    refuse(
      `${over.n} user(s) (${over.example}${over.n > 1 ? ', …' : ''}) would need a balance above 2147483647 at some point of their trail`,
      'the ledger keeps balances in an integer; correct the balance or the log rows that make it so, and run again',
    );
  }
}

// Constraint names the conversion and 0001 add to the two tables.
const LEDGER_CONSTRAINTS = [
  'credit_tx_amount_positive',
  'credit_tx_balance_after_non_negative',
  'credit_tx_refund_of_only_on_refunds',
  'CreditTransaction_refund_of_CreditTransaction_id_fk',
  'user_free_credits_non_negative',
  'user_free_chat_messages_non_negative',
];
const SEED_INDEXES = [
  'credit_tx_user_id_idx',
  'credit_tx_created_at_idx',
  'credit_tx_user_created_at_idx',
];

/**
 * What would make the conversion fail half-way with a raw error, or change what it must
 * not: a partitioned or inherited table (the rewrite and the ledger's triggers act on one
 * plain table), a view on the log (its columns' types change), a seed index name on
 * something else (the log is clustered by it), a constraint name the migrations add, row
 * security forced on the owner (the conversion must see every row), and a trigger of the
 * app's on either table: it would run inside the backfill's writes (changing the app's own
 * tables from 0003's rows), and credits:verify reports every trigger that is not the
 * ledger's on its tables, so the ledger could never verify.
 */
async function refuseWhatTheConversionCannotRewrite(sql: Sql): Promise<void> {
  const tables = await sql<{ name: string; kind: string; forced: boolean; inherits: boolean }[]>`
    select c.oid::regclass::text as name, c.relkind::text as kind, c.relforcerowsecurity as forced,
           exists (select 1 from pg_inherits i where i.inhrelid = c.oid or i.inhparent = c.oid) as inherits
      from pg_class c
     where c.oid in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)
     order by 1`;
  for (const table of tables) {
    if (table.kind !== 'r' || table.inherits) {
      refuse(
        `${table.name} is ${table.kind === 'p' ? 'partitioned' : table.kind !== 'r' ? 'not a plain table' : 'in an inheritance tree'}`,
        "db:adopt takes over plain tables only (the ledger's triggers act on one table); make it one first",
      );
    }
    if (table.forced) {
      refuse(
        `row level security is forced on ${table.name}`,
        "the conversion must see every row, as the ledger's functions do; ALTER TABLE … NO FORCE ROW LEVEL SECURITY first",
      );
    }
  }
  const [trigger] = await sql<{ name: string; table: string }[]>`
    select t.tgname as name, t.tgrelid::regclass::text as table from pg_trigger t
     where t.tgrelid in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)
       and not t.tgisinternal
     order by 2, 1 limit 1`;
  if (trigger) {
    refuse(
      `the app's trigger ${trigger.name} on ${trigger.table} would run inside the ledger's writes`,
      'credits:verify reports every trigger on the ledger\'s tables that is not the ledger\'s, so it could never pass; drop it first (the ledger sets "User".updated_at itself)',
    );
  }
  const [rule] = await sql<{ name: string; table: string }[]>`
    select rulename as name, ev_class::regclass::text as table from pg_rewrite
     where ev_class in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)
       and rulename <> '_RETURN'
     order by 2, 1 limit 1`;
  if (rule) {
    refuse(
      `the app's rule ${rule.name} on ${rule.table} would rewrite the ledger's writes`,
      "credits:verify reports every rule on the ledger's tables, so it could never pass; drop it first",
    );
  }
  const [view] = await sql<{ name: string }[]>`
    select distinct r.ev_class::regclass::text as name
      from pg_depend d join pg_rewrite r on r.oid = d.objid
     where d.classid = 'pg_rewrite'::regclass and d.refobjid = 'public."CreditTransaction"'::regclass
       and r.ev_class <> 'public."CreditTransaction"'::regclass
     order by 1 limit 1`;
  if (view) {
    refuse(
      `the view ${view.name} reads "CreditTransaction"`,
      "the conversion changes the log's column types, which a view prevents; drop it first and create it again after db:migrate",
    );
  }
  const [index] = await sql<{ name: string }[]>`
    select c.relname as name from pg_class c join pg_index i on i.indexrelid = c.oid
     where c.relnamespace = 'public'::regnamespace and c.relname = any(${textArray(SEED_INDEXES)}::text[])
       and (i.indrelid <> 'public."CreditTransaction"'::regclass or i.indpred is not null
            or i.indexprs is not null)
     limit 1`;
  if (index) {
    refuse(
      `the index public.${index.name} is not the seed's (on another table, partial or on an expression)`,
      "the conversion lays the log out by the seed's indexes; rename it first",
    );
  }
  const [constraint] = await sql<{ name: string; table: string }[]>`
    select conname as name, conrelid::regclass::text as table from pg_constraint
     where conrelid in ('public."User"'::regclass, 'public."CreditTransaction"'::regclass)
       and conname = any(${textArray(LEDGER_CONSTRAINTS)}::text[])
     limit 1`;
  if (constraint) {
    refuse(
      `${constraint.table} has a constraint named ${constraint.name} already, a name the conversion and the ledger's migrations give their own`,
      "rename the app's constraint first",
    );
  }
}
