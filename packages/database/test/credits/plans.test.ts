import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { rangeQuery, userHistoryQuery } from '../../src/credits/history.js';
import { listCreditTransactions, listCreditTransactionsInRange } from '../../src/credits/index.js';
import { explainNodes, indexesUsed, type PlanNode, seqScansOf } from '../explain.js';

const USERS = 1_000;
const ROWS = 200_000;
const firstPage = { operation: false, featureType: false, cursor: false };

let db: Database;
let sql: postgres.Sql;
let close: () => Promise<void>;
/** Every 10th row, all through the table. */
let heavyUser: string;
/** Every 10th row too, but only in the older half of the table: inactive since. */
let dormantUser: string;
/** About 160 rows, spread over the year. */
let typicalUser: string;

beforeAll(async () => {
  const testDb = await createTestDatabase({ connect: (url) => createDatabase(url, { max: 2 }) });
  ({ db, close } = testDb);
  sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  await sql`
    insert into "User" (email, free_credits, free_chat_messages)
    select 'plan-user-' || g || '@example.com', 0, 0 from generate_series(1, ${USERS}) g`;
  // Seeded in SQL, set-based, in time order, with the ledger's triggers off (the plans, not
  // the balances, are the point here): seq numbers each user's rows in that order.
  await sql.begin(async (tx) => {
    await tx`alter table "CreditTransaction" disable trigger user`;
    await tx`
      with u as (select id, row_number() over (order by email) as n from "User"),
      g as (
        select g, case
          when g % 10 = 0 then 1
          when g % 10 = 5 and g <= ${ROWS / 2} then 2
          else 3 + (hashint4(g) & 2147483647) % ${USERS - 2} end as n
        from generate_series(1, ${ROWS}) g)
      insert into "CreditTransaction"
        (user_id, amount, operation, feature_type, created_at, balance_after, seq, hash)
      select u.id, 1 + (g % 5), (array['deduct','refund','grant'])[1 + g % 3]::operation_type,
        (array['document_generation','workstream_clustering','chat_tool_call','chat_message'])[1 + g % 4]::feature_type,
        timestamptz '2026-01-01' + (g * interval '157 seconds'), 100,
        row_number() over (partition by u.id order by g), 'seed'
      from g join u on u.n = g.n`;
    await tx`alter table "CreditTransaction" enable trigger user`;
  });
  await sql`analyze "User"`;
  await sql`analyze "CreditTransaction"`;
  const ids = await sql<{ id: string }[]>`
    select id from (select id, row_number() over (order by email) as n from "User") u
    where n in (1, 2, 500) order by n`;
  [heavyUser, dormantUser, typicalUser] = ids.map((r) => r.id) as [string, string, string];
}, 120_000);
afterAll(async () => {
  await sql.end();
  await close();
});

/** Every node that read "CreditTransaction" rows, with how many it read and threw away. */
const scans = (plan: PlanNode[]) => plan.filter((n) => n['Relation Name'] === 'CreditTransaction');

describe(`query plans with ${ROWS.toLocaleString('en')} rows over ${USERS.toLocaleString('en')} users`, () => {
  it('seeded the users it claims: heavy, dormant since mid-table, typical', async () => {
    const rows = await sql`
      select user_id, count(*)::int as n, max(created_at) < timestamptz '2026-01-01' + ${ROWS / 2} * interval '157 seconds' as dormant
      from "CreditTransaction" where user_id in (${heavyUser}, ${dormantUser}, ${typicalUser}) group by 1`;
    const by = new Map(rows.map((r) => [r.user_id, r]));
    expect(by.get(heavyUser)).toMatchObject({ n: ROWS / 10, dormant: false });
    expect(by.get(dormantUser)).toMatchObject({ n: ROWS / 20, dormant: true });
    expect(by.get(typicalUser)?.n).toBeGreaterThan(50);
  });

  for (const [who, user, pageOnly] of [
    ['a heavy user', () => heavyUser, true],
    ['a heavy user dormant for the newer half of the table', () => dormantUser, true],
    ['a typical user', () => typicalUser, false],
  ] as const) {
    it(`the first page of ${who}'s history reads that user's rows only${pageOnly ? ', one page of them, through credit_tx_user_seq_idx' : ''}`, async () => {
      const plan = await explainNodes(
        sql,
        userHistoryQuery(db, firstPage),
        { userId: user(), limit: 51 },
        { analyze: true },
      );
      expect(seqScansOf(plan, 'CreditTransaction')).toEqual([]);
      expect(scans(plan).length).toBeGreaterThan(0);
      for (const scan of scans(plan)) {
        // An index condition on user_id, nothing thrown away: no other user's row is read.
        expect(scan['Index Cond']).toContain('user_id');
        expect(scan['Rows Removed by Filter'] ?? 0).toBe(0);
        // For a heavy user, the index is walked from the newest row for 51 rows and stops;
        // a typical user's ~160 rows may be read through credit_tx_user_id_idx and sorted.
        if (pageOnly) {
          expect(scan['Index Name']).toBe('credit_tx_user_seq_idx');
          expect(scan['Actual Rows']).toBe(51);
        }
      }
    });
  }

  it('a deep page of the heavy user history starts at its cursor in the same index', async () => {
    let cursor: string | undefined;
    for (let i = 0; i < 20; i++) {
      cursor =
        (
          await listCreditTransactions(db, {
            userId: heavyUser,
            limit: 200,
            ...(cursor ? { cursor } : {}),
          })
        ).nextCursor ?? undefined;
    }
    const [deep] = await sql`
      select seq from "CreditTransaction" where user_id = ${heavyUser} order by seq desc offset 3999 limit 1`;
    const plan = await explainNodes(
      sql,
      userHistoryQuery(db, { ...firstPage, cursor: true }),
      { userId: heavyUser, limit: 51, seq: Number(deep?.seq) },
      { analyze: true },
    );
    expect(indexesUsed(plan)).toEqual(['credit_tx_user_seq_idx']);
    for (const scan of scans(plan)) expect(scan['Actual Rows']).toBe(51);
  });

  it("a filtered history (one operation) reads only the user's rows, throwing away the others of that user", async () => {
    const plan = await explainNodes(
      sql,
      userHistoryQuery(db, { ...firstPage, operation: true }),
      { userId: dormantUser, limit: 51, operation: 'grant' },
      { analyze: true },
    );
    expect(seqScansOf(plan, 'CreditTransaction')).toEqual([]);
    for (const scan of scans(plan)) {
      expect(scan['Index Cond']).toContain('user_id');
      // Each row it read and threw away is the same user's (the index condition says so).
      expect(
        (scan['Actual Rows'] ?? 0) + (scan['Rows Removed by Filter'] ?? 0),
      ).toBeLessThanOrEqual(ROWS / 20);
    }
  });

  it('the range query uses credit_tx_created_at_idx, with no Seq Scan', async () => {
    const from = new Date('2026-03-01T00:00:00Z');
    const to = new Date('2026-03-01T01:00:00Z');
    const plan = await explainNodes(sql, rangeQuery(db, { cursor: false }), {
      from,
      to,
      limit: 51,
    });
    expect(indexesUsed(plan)).toContain('credit_tx_created_at_idx');
    expect(seqScansOf(plan, 'CreditTransaction')).toEqual([]);
    const page = await listCreditTransactionsInRange(db, { from, to, limit: 50 });
    expect(page.items.length).toBeGreaterThan(0);
  });

  it("a whole heavy user's history walks page by page, every row once", async () => {
    const seen = new Set<string>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await listCreditTransactions(db, {
        userId: heavyUser,
        limit: 500,
        ...(cursor ? { cursor } : {}),
      });
      for (const item of page.items) seen.add(item.id);
      cursor = page.nextCursor ?? undefined;
      pages++;
    } while (cursor);
    expect(seen.size).toBe(ROWS / 10);
    expect(pages).toBe(ROWS / 10 / 500);
  }, 60_000);
});
