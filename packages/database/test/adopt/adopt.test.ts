import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../../src/client.js';
import { deductCredits, getCreditBalance, verifyLedger } from '../../src/credits/index.js';
import { adopt, migrate } from '../../src/migrate/index.js';
import { fillSeedDatabase, SEED_SCHEMA } from './seed-database.js';

// A live database built the seed plan's way, with a year and a half of data, taken over by
// db:adopt and db:migrate: every balance and every log row is compared before and after.

let database: TestDatabase;
let sql: postgres.Sql;
const log = () => {};

// Snapshots taken before adoption, each in the terms the ledger keeps it in.
let usersBefore: Map<string, Record<string, unknown>>;
interface LogRow {
  id: string;
  user_id: string;
  amount: number;
  operation: string;
  feature_type: string;
  metadata: unknown;
  /** The row's time read as UTC, at the ledger's milliseconds (PostgreSQL rounds). */
  at: Date;
  /** The row's time read as UTC, to the microsecond the log kept (Date keeps milliseconds). */
  exact: Date;
}
let logBefore: Map<string, LogRow>;
let stripeBefore: string;
let adoption: Awaited<ReturnType<typeof adopt>>;

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  sql = postgres(database.url, { max: 2, onnotice: () => {} });
  await sql.unsafe(SEED_SCHEMA);
  await fillSeedDatabase(sql, { users: 400, logRows: 20_000 });
  // Three users whose trails are known exactly (times in UTC, as the seed's column holds them).
  await sql`
    insert into "User" (id, email, free_credits, free_chat_messages, created_at)
    values (${known.addsUp}, 'adds-up@example.com', 7, 0, '2025-03-01 10:00:00'),
           (${known.short}, 'short@example.com', 7, null, '2025-03-01 10:00:00'),
           (${known.dips}, 'dips@example.com', 3, 0, '2025-03-01 10:00:00')`;
  await sql`
    insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at)
    values (${known.addsUp}, 10, 'grant', 'document_generation', '2025-03-01 10:00:01'),
           (${known.addsUp}, 3, 'deduct', 'chat_tool_call', '2025-03-02 09:00:00'),
           (${known.short}, 1, 'deduct', 'document_generation', '2025-03-02 09:00:00'),
           (${known.dips}, 5, 'deduct', 'document_generation', '2025-03-02 09:00:00'),
           (${known.dips}, 5, 'refund', 'document_generation', '2025-03-03 09:00:00')`;
  usersBefore = new Map(
    (await sql`select id, to_jsonb(u) as row from "User" u`).map((r) => [r.id, r.row]),
  );
  // What each row should become: its time read as UTC, at milliseconds; its metadata marked.
  logBefore = new Map(
    (
      await sql<LogRow[]>`
        select id, user_id, amount, operation::text, feature_type::text, metadata,
               (created_at at time zone 'UTC')::timestamptz(3) as at,
               (created_at at time zone 'UTC') as exact
          from "CreditTransaction"`
    ).map((r) => [r.id, r]),
  );
  stripeBefore = JSON.stringify(await sql`select * from "StripeEvent" order by id`);
  adoption = await adopt(database.url, { log });
  await migrate(database.url, { log });
}, 180_000);

afterAll(async () => {
  await sql.end();
  await database.close();
});

const known = {
  addsUp: '00000000-0000-4000-8000-0000000000a1',
  short: '00000000-0000-4000-8000-0000000000a2',
  dips: '00000000-0000-4000-8000-0000000000a3',
};

const appColumns = (row: Record<string, unknown>) => {
  const { free_credits, free_chat_messages, ledger_seq, ledger_hash, ...rest } = row;
  return rest;
};

describe('db:adopt and db:migrate on a seed-built database', () => {
  it('passes credits:verify: every balance is explained by its trail', async () => {
    const { db, close } = createDatabase(database.url, { max: 1 });
    try {
      const result = await verifyLedger(db);
      expect(result.violations).toEqual([]);
      expect(result.ok).toBe(true);
    } finally {
      await close();
    }
  });

  it('keeps every balance, and a NULL one becomes the default (10 credits, 20 chat messages)', async () => {
    const after = new Map(
      (await sql`select id, free_credits, free_chat_messages from "User"`).map((r) => [r.id, r]),
    );
    expect(after.size).toBe(usersBefore.size);
    let nulls = 0;
    for (const [id, before] of usersBefore) {
      if (before.free_credits === null || before.free_chat_messages === null) nulls++;
      expect(after.get(id)).toEqual({
        id,
        free_credits: before.free_credits ?? 10,
        free_chat_messages: before.free_chat_messages ?? 20,
      });
    }
    expect(nulls).toBeGreaterThan(0);
    expect(adoption.nullBalancesDefaulted).toBe(nulls);
  });

  it("leaves the app's own columns and table as they were", async () => {
    const after = await sql`select id, to_jsonb(u) as row from "User" u`;
    for (const { id, row } of after) {
      expect(appColumns(row)).toEqual(appColumns(usersBefore.get(id) ?? {}));
    }
    const [email] = await sql`
      select format_type(atttypid, atttypmod) as type from pg_attribute
       where attrelid = '"User"'::regclass and attname = 'email'`;
    expect(email?.type).toBe('character varying(64)');
    expect(JSON.stringify(await sql`select * from "StripeEvent" order by id`)).toBe(stripeBefore);
  });

  it('keeps every log row of a positive amount in the trail with its values, its time read as UTC to the millisecond, and its metadata marked adopted_from_log', async () => {
    const trail = new Map(
      (
        await sql`
          select id, user_id, amount, operation::text, feature_type::text, metadata, created_at
            from "CreditTransaction"`
      ).map((r) => [r.id, r]),
    );
    let kept = 0;
    for (const [id, before] of logBefore) {
      if (before.amount <= 0) {
        expect(trail.has(id)).toBe(false);
        continue;
      }
      kept++;
      const row = trail.get(id);
      expect(row, `log row ${id}`).toBeDefined();
      const original = before.metadata;
      const marked =
        original === null
          ? { adopted_from_log: true }
          : typeof original === 'object' &&
              !Array.isArray(original) &&
              !('adopted_from_log' in original)
            ? { ...original, adopted_from_log: true }
            : { adopted_from_log: true, value: original };
      expect(row).toEqual({
        id,
        user_id: before.user_id,
        amount: before.amount,
        operation: before.operation,
        feature_type: before.feature_type,
        metadata: marked,
        created_at: before.at,
      });
    }
    expect(adoption.logRows).toBe(kept);
    const [marked] = await sql`
      select count(*)::int as n from "CreditTransaction" where metadata ? 'adopted_from_log'`;
    expect(marked?.n).toBe(kept);
  });

  it('writes each trail as the log explains it: no opening row when the log adds up, an opening row for what it does not explain, and a reconciliation row when the log dips below zero in time order', async () => {
    const trail = async (id: string) =>
      (
        await sql`
          select seq::int, operation::text, feature_type::text, amount, balance_after,
                 metadata->>'reason' as reason, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as at
            from "CreditTransaction" where user_id = ${id} order by seq`
      ).map((r) => [r.seq, r.operation, r.feature_type, r.amount, r.balance_after, r.reason, r.at]);
    expect(await trail(known.addsUp)).toEqual([
      [1, 'grant', 'document_generation', 10, 10, null, '2025-03-01 10:00:01'],
      [2, 'deduct', 'chat_tool_call', 3, 7, null, '2025-03-02 09:00:00'],
    ]);
    // 7 credits and NULL chat messages (→ 20): the log explains -1 of the 7.
    expect(await trail(known.short)).toEqual([
      [1, 'grant', 'document_generation', 8, 8, 'opening_balance', '2025-03-01 10:00:00'],
      [2, 'grant', 'chat_message', 20, 20, 'opening_balance', '2025-03-01 10:00:00'],
      [3, 'deduct', 'document_generation', 1, 7, null, '2025-03-02 09:00:00'],
    ]);
    // Net 0, but 5 was spent before the refund: the opening is the least that keeps the
    // balance at or above 0 in time order (5), and a reconciliation row ends at 3.
    const dips = await trail(known.dips);
    expect(dips.slice(0, 3)).toEqual([
      [1, 'grant', 'document_generation', 5, 5, 'opening_balance', '2025-03-01 10:00:00'],
      [2, 'deduct', 'document_generation', 5, 0, null, '2025-03-02 09:00:00'],
      [3, 'refund', 'document_generation', 5, 5, null, '2025-03-03 09:00:00'],
    ]);
    expect(dips[3]?.slice(0, 6)).toEqual([
      4,
      'deduct',
      'document_generation',
      2,
      3,
      'reconciliation',
    ]);
    expect(dips).toHaveLength(4);
  });

  it('adds only opening and reconciliation rows beside them, and orders each trail by time', async () => {
    const extra = await sql`
      select metadata->>'reason' as reason, count(*)::int as n from "CreditTransaction"
       where not metadata ? 'adopted_from_log' group by 1 order by 1`;
    expect(extra.map((r) => r.reason)).toEqual(['opening_balance', 'reconciliation']);
    const [disorder] = await sql`
      select count(*)::int as n from (
        select created_at < lag(created_at) over (partition by user_id order by seq) as back,
               metadata->>'reason' as reason
          from "CreditTransaction") r
       where back and reason is distinct from 'reconciliation'`;
    expect(disorder?.n).toBe(0);
  });

  it('keeps each row of amount 0 or less in drizzle.adoption_skipped_log_row with its values, and counts them', async () => {
    const skipped = await sql`
      select id, user_id, amount, operation, feature_type, metadata, created_at, reason
        from drizzle.adoption_skipped_log_row`;
    const expected = [...logBefore.values()].filter((r) => r.amount <= 0);
    expect(expected.length).toBeGreaterThan(0);
    expect(adoption.skippedRows).toBe(expected.length);
    expect(skipped.length).toBe(expected.length);
    for (const row of skipped) {
      const before = logBefore.get(row.id);
      expect(row).toEqual({
        id: row.id,
        user_id: before?.user_id,
        amount: before?.amount,
        operation: before?.operation,
        feature_type: before?.feature_type,
        metadata: before?.metadata,
        created_at: before?.exact,
        reason: 'amount_not_positive',
      });
    }
    const [record] = await sql`select * from drizzle.adoption`;
    expect(record).toMatchObject({
      log_time_zone: 'UTC',
      users: usersBefore.size,
      log_rows: String(adoption.logRows),
      skipped_rows: String(expected.length),
    });
  });

  it("leaves no trace of the conversion on the trail: its trigger is dropped and its storage is the migrations' again", async () => {
    const [trail] = await sql`
      select reloptions, (select count(*)::int from pg_trigger
                           where tgrelid = c.oid and tgname = 'credit_tx_adoption_mark') as marks
        from pg_class c where oid = '"CreditTransaction"'::regclass`;
    expect(trail).toEqual({ reloptions: null, marks: 0 });
    const [mark] = await sql`select to_regprocedure('drizzle.adoption_mark()') as fn`;
    expect(mark?.fn).toBeNull();
  });

  it('changes nothing when run again, and says the database is managed already', async () => {
    const fingerprint = async () =>
      JSON.stringify(
        await sql`
          select (select count(*) from "CreditTransaction") as rows,
                 (select string_agg(ledger_hash, '' order by id) from "User") as heads,
                 (select count(*) from drizzle.__drizzle_migrations) as migrations,
                 (select count(*) from drizzle.adoption) as adoptions`,
      );
    const before = await fingerprint();
    const lines: string[] = [];
    const again = await adopt(database.url, { log: (line) => lines.push(line) });
    expect(again.adopted).toBe(false);
    expect(lines.join('\n')).toMatch(
      /managed by db:migrate already \(adopted .*\): nothing to adopt/,
    );
    expect(await fingerprint()).toBe(before);
  });

  it('lets the package spend an adopted balance, on top of the adopted trail', async () => {
    const { db, close } = createDatabase(database.url, { max: 1 });
    try {
      const [rich] = await sql`select id from "User" where free_credits >= 3 order by id limit 1`;
      const before = await getCreditBalance(db, rich?.id);
      await deductCredits(db, { userId: rich?.id, amount: 3, featureType: 'document_generation' });
      expect((await getCreditBalance(db, rich?.id)).freeCredits).toBe(before.freeCredits - 3);
      expect((await verifyLedger(db)).violations).toEqual([]);
    } finally {
      await close();
    }
  });
});
