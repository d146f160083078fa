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

/** Heavy users 1–10 each get every 50th row; user 1 only in the older half (dormant since). */
export const HEAVY_USERS = 10;
const CHUNK = 100_000;
const YEAR_MS = 365 * 24 * 3600 * 1000;
const START = '2025-01-01T00:00:00Z';

/**
 * Seeds "CreditTransaction" set-based with a ledger that verifies: users with a realistic
 * skew (10 heavy users hold 20% of the rows, the rest spread uniformly over one user per 100
 * rows), timestamps in order over one year, as an app writes them. Users are created through
 * the ledger (their opening rows are real, dated the day before the year); the bulk rows are written with the ledger's
 * triggers off but with what the triggers would have written: seq in time order, each
 * balance_after the running balance, and the hash chain (computed for all users at once, one
 * position per round, with the migration's own credit_tx_hash). The table's indexes and
 * foreign keys are dropped while seeding and rebuilt after, from their own definitions, so a
 * 10,000,000-row seed fits on 2 cores; `credits:verify` on the result finds nothing.
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
  // The table's primary and foreign keys, and the foreign keys of other tables that need its
  // primary key ("CreditHold".id, migration 0004): primary key first, then those that need it.
  const constraints = await sql<{ name: string; table: string; def: string }[]>`
    select conname as name, conrelid::regclass::text as table, pg_get_constraintdef(oid) as def
    from pg_constraint
    where (conrelid = '"CreditTransaction"'::regclass and contype in ('p', 'f'))
       or (confrelid = '"CreditTransaction"'::regclass and contype = 'f'
           and conrelid <> '"CreditTransaction"'::regclass)
    order by contype desc, conrelid = '"CreditTransaction"'::regclass desc`;
  await sql`alter table "CreditTransaction" disable trigger user`;
  await sql`alter table "User" disable trigger user`;
  for (const c of [...constraints].reverse())
    await sql.unsafe(`alter table ${c.table} drop constraint "${c.name}"`);
  for (const i of indexes) await sql.unsafe(`drop index "${i.name}"`);
  // The opening rows were dated now by the ledger; the bulk rows go back a year, and
  // credits:verify reports a row dated before the one ahead of it. So the opening rows are
  // dated the day before the first bulk row, and hashed again (seq 1, then seq 2 on it).
  await sql`update "CreditTransaction" set created_at = ${START}::timestamptz - interval '1 day'`;
  await sql`
    update credit_ledger.credit_grant g set created_at = t.created_at
    from "CreditTransaction" t where t.id = g.id`;
  const rehash = (
    prev: postgres.Fragment,
  ) => sql`credit_ledger.credit_tx_hash(${prev}, t.id, t.user_id, t.seq,
    t.operation, t.feature_type, t.amount, t.balance_after, t.created_at, t.idempotency_key,
    t.refund_of, t.metadata, t.hold_id, t.hold_expires_at, jsonb_build_object('source', t.source))`;
  await sql`update "CreditTransaction" t set hash = ${rehash(sql`null`)} where t.seq = 1`;
  await sql`
    update "CreditTransaction" t set hash = ${rehash(sql`p.hash`)}
    from "CreditTransaction" p where p.user_id = t.user_id and p.seq = 1 and t.seq = 2`;
  await sql`
    update "User" u set ledger_hash = t.hash from "CreditTransaction" t
    where t.user_id = u.id and t.seq = u.ledger_seq`;

  await sql`
    create unlogged table bench_row (
      g int, id uuid, user_id uuid, amount int, operation operation_type, feature_type feature_type,
      metadata jsonb, created_at timestamptz(3))`;
  const step = YEAR_MS / options.rows;
  for (let from = 1; from <= options.rows; from += CHUNK) {
    const to = Math.min(options.rows, from + CHUNK - 1);
    await sql`
      insert into bench_row
      select g, gen_random_uuid(), u.id, 1 + g % 5,
        (array['deduct','deduct','deduct','refund','grant'])[1 + g % 5]::operation_type,
        (array['document_generation','workstream_clustering','chat_tool_call','chat_message'])[1 + (g / 5) % 4]::feature_type,
        case when g % 3 = 0 then jsonb_build_object('model', 'gpt-x', 'tokens', g % 4000) end,
        ${START}::timestamptz + (g::float8 * ${step}::float8) * interval '1 millisecond'
      from generate_series(${from}::int, ${to}::int) g
      join bench_user u on u.n = case
        when g % 5 = 0 and not (g > ${options.rows / 2} and (g / 5) % ${HEAVY_USERS} = 0)
          then 1 + (g / 5) % ${HEAVY_USERS}
        else ${HEAVY_USERS + 1} + (hashint4(g) & 2147483647) % ${users - HEAVY_USERS} end`;
    options.onProgress(to);
  }
  // Each user's two opening rows are seq 1 and 2, at 1,000,000,000 each, and are its two
  // opening grants. As the ledger writes them: a deduction takes from the opening grant of
  // its balance (no grant expires, and it is the oldest); a grant is a grant of its own
  // (promotional), and so is a refund (none names a deduction).
  await sql`
    create unlogged table bench_ledger as
    select r.*, 2 + row_number() over (partition by r.user_id order by r.g) as seq,
      1000000000 + sum(case when r.operation = 'deduct' then -r.amount else r.amount end)
        over (partition by r.user_id, r.feature_type = 'chat_message' order by r.g) as balance_after,
      case r.operation when 'grant' then 'promotional'::credit_source when 'refund' then 'refund'::credit_source end as source,
      case when r.operation = 'deduct' then jsonb_build_object(o.id, r.amount) end as allocations,
      null::text as hash
    from bench_row r
    join "CreditTransaction" o on o.user_id = r.user_id and o.seq = case when r.feature_type = 'chat_message' then 2 else 1 end`;
  await sql`create index on bench_ledger (user_id, seq)`;
  await sql`create unlogged table bench_hash (user_id uuid, seq bigint, hash text)`;
  await sql`analyze bench_ledger`;
  // One round per position: a few rows per round for most of them (only heavy users still
  // have rows), so each round must be index lookups, never a scan of the whole table.
  await sql`set enable_hashjoin = off`;
  await sql`set enable_mergejoin = off`;
  await sql`
    with recursive chain as (
      select l.user_id, l.seq, credit_ledger.credit_tx_hash(u.ledger_hash, l.id, l.user_id, l.seq, l.operation,
        l.feature_type, l.amount, l.balance_after::int, l.created_at, null, null, l.metadata, null, null,
        jsonb_strip_nulls(jsonb_build_object('source', l.source, 'allocations', l.allocations))) as hash
      from bench_ledger l join "User" u on u.id = l.user_id where l.seq = 3
      union all
      select l.user_id, l.seq, credit_ledger.credit_tx_hash(c.hash, l.id, l.user_id, l.seq, l.operation,
        l.feature_type, l.amount, l.balance_after::int, l.created_at, null, null, l.metadata, null, null,
        jsonb_strip_nulls(jsonb_build_object('source', l.source, 'allocations', l.allocations)))
      from chain c join bench_ledger l on l.user_id = c.user_id and l.seq = c.seq + 1)
    insert into bench_hash select * from chain`;
  await sql`reset enable_hashjoin`;
  await sql`reset enable_mergejoin`;
  await sql`
    insert into "CreditTransaction"
      (id, user_id, amount, operation, feature_type, metadata, created_at, balance_after, seq, hash,
       source, allocations)
    select l.id, l.user_id, l.amount, l.operation, l.feature_type, l.metadata, l.created_at,
      l.balance_after, l.seq, h.hash, l.source, l.allocations
    from bench_ledger l join bench_hash h on h.user_id = l.user_id and h.seq = l.seq
    order by l.g`;
  // The grants those rows make and take from: one per grant and refund, and the opening
  // grants less what the deductions took.
  await sql`
    insert into credit_ledger.credit_grant (id, user_id, chat, source, amount, remaining, expires_at, created_at, created_seq)
    select l.id, l.user_id, l.feature_type = 'chat_message', l.source, l.amount, l.amount, null, l.created_at, l.seq
    from bench_ledger l where l.source is not null`;
  await sql`
    update credit_ledger.credit_grant g set remaining = g.remaining - d.taken
    from (select (jsonb_each_text(allocations)).key::uuid as grant_id, sum(amount) as taken
            from bench_ledger where allocations is not null group by 1) d
    where g.id = d.grant_id`;
  await sql`
    update "User" u set ledger_seq = h.seq, ledger_hash = h.hash,
      free_credits = coalesce(b.credits, u.free_credits),
      free_chat_messages = coalesce(b.chats, u.free_chat_messages)
    from (select distinct on (user_id) user_id, seq, hash from bench_hash order by user_id, seq desc) h
    left join (
      select user_id,
        (array_agg(balance_after order by seq desc) filter (where feature_type <> 'chat_message'))[1] as credits,
        (array_agg(balance_after order by seq desc) filter (where feature_type = 'chat_message'))[1] as chats
      from bench_ledger group by user_id) b on b.user_id = h.user_id
    where u.id = h.user_id`;
  await sql`drop table bench_row, bench_ledger, bench_hash`;
  const insertMs = performance.now() - started;

  const indexStarted = performance.now();
  await sql`set maintenance_work_mem = '1GB'`;
  for (const c of constraints)
    await sql.unsafe(`alter table ${c.table} add constraint "${c.name}" ${c.def}`);
  for (const i of indexes) await sql.unsafe(i.def);
  await sql`alter table "CreditTransaction" enable trigger user`;
  await sql`alter table "User" enable trigger user`;
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
