import type postgres from 'postgres';

export interface SeedOptions {
  rows: number;
  /** Called after each chunk with the rows written so far. */
  onProgress: (done: number) => void;
}

export interface SeedResult {
  rows: number;
  users: number;
  heavyUsers: number;
  insertMs: number;
  indexMs: number;
  rowsPerSecond: number;
  tableBytes: number;
  indexBytes: number;
}

export const HEAVY_USERS = 10;
const CHUNK = 100_000;
const YEAR_MS = 365 * 24 * 3600 * 1000;
const START = '2025-01-01T00:00:00Z';

/**
 * Seeds "CreditTransaction" set-based: users with a realistic skew (10 heavy users hold 20%
 * of the rows, the rest spread uniformly over one user per 100 rows), timestamps in order
 * over one year, as an app writes them. The table's indexes and foreign keys are dropped
 * while seeding and rebuilt after, from their own definitions, and the ledger trigger is
 * off (the balances are not what is measured), so a 10,000,000-row seed fits on 2 cores.
 */
export async function seedTrail(sql: postgres.Sql, options: SeedOptions): Promise<SeedResult> {
  const users = Math.max(HEAVY_USERS + 1, Math.round(options.rows / 100));
  const started = performance.now();
  await sql`
    create table bench_user as
    select n, gen_random_uuid() as id from generate_series(1, ${users}) n`;
  await sql`alter table bench_user add primary key (n)`;
  await sql`
    insert into "User" (id, email, free_credits, free_chat_messages)
    select id, 'bench-' || n || '@example.com', 1000000000, 1000000000 from bench_user`;

  const indexes = await sql<{ name: string; def: string }[]>`
    select i.relname as name, pg_get_indexdef(i.oid) as def
    from pg_index x join pg_class i on i.oid = x.indexrelid
    left join pg_constraint c on c.conindid = i.oid
    where x.indrelid = '"CreditTransaction"'::regclass and c.oid is null`;
  const constraints = await sql<{ name: string; def: string }[]>`
    select conname as name, pg_get_constraintdef(oid) as def from pg_constraint
    where conrelid = '"CreditTransaction"'::regclass and contype in ('p', 'f')
    order by contype desc`; // primary key first, then the foreign keys that may need it
  await sql`alter table "CreditTransaction" disable trigger credit_tx_apply`;
  for (const c of [...constraints].reverse())
    await sql.unsafe(`alter table "CreditTransaction" drop constraint "${c.name}"`);
  for (const i of indexes) await sql.unsafe(`drop index "${i.name}"`);

  const step = YEAR_MS / options.rows;
  for (let from = 1; from <= options.rows; from += CHUNK) {
    const to = Math.min(options.rows, from + CHUNK - 1);
    await sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, metadata, created_at, balance_after)
      select u.id, 1 + g % 5,
        (array['deduct','deduct','deduct','refund','grant'])[1 + g % 5]::operation_type,
        (array['document_generation','workstream_clustering','chat_tool_call','chat_message'])[1 + (g / 5) % 4]::feature_type,
        case when g % 3 = 0 then jsonb_build_object('model', 'gpt-x', 'tokens', g % 4000) end,
        ${START}::timestamptz + (g::float8 * ${step}::float8) * interval '1 millisecond',
        1000
      from generate_series(${from}::int, ${to}::int) g
      join bench_user u on u.n = case
        when g % 5 = 0 then 1 + (g / 5) % ${HEAVY_USERS}
        else ${HEAVY_USERS + 1} + (hashint4(g) & 2147483647) % ${users - HEAVY_USERS} end`;
    options.onProgress(to);
  }
  const insertMs = performance.now() - started;

  const indexStarted = performance.now();
  await sql`set maintenance_work_mem = '1GB'`;
  for (const c of constraints)
    await sql.unsafe(`alter table "CreditTransaction" add constraint "${c.name}" ${c.def}`);
  for (const i of indexes) await sql.unsafe(i.def);
  await sql`alter table "CreditTransaction" enable trigger credit_tx_apply`;
  // VACUUM too, so that autovacuum has nothing left to do on the fresh rows while the reads
  // are measured (it would compete for the 2 cores), and index-only scans see all-visible pages.
  await sql`vacuum (analyze) "User"`;
  await sql`vacuum (analyze) "CreditTransaction"`;
  const indexMs = performance.now() - indexStarted;
  const [size] = await sql<{ table: string; indexes: string }[]>`
    select pg_table_size('"CreditTransaction"') as table, pg_indexes_size('"CreditTransaction"') as indexes`;
  return {
    tableBytes: Number(size?.table),
    indexBytes: Number(size?.indexes),
    rows: options.rows,
    users,
    heavyUsers: HEAVY_USERS,
    insertMs,
    indexMs,
    rowsPerSecond: options.rows / ((insertMs + indexMs) / 1000),
  };
}
