import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { decodeCursor } from '../../src/credits/cursor.js';
import { rangeQuery, userHistoryQuery } from '../../src/credits/history.js';
import { listCreditTransactions, listCreditTransactionsInRange } from '../../src/credits/index.js';
import { explainNodes, indexesUsed, seqScansOf } from '../explain.js';

const USERS = 1_000;
const firstPage = { operation: false, featureType: false, cursor: false };
const ROWS = 200_000;

let db: Database;
let sql: postgres.Sql;
let close: () => Promise<void>;
let heavyUser: string;

beforeAll(async () => {
  const testDb = await createTestDatabase({ connect: (url) => createDatabase(url, { max: 2 }) });
  ({ db, close } = testDb);
  sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  // Seeded in SQL, set-based: users with a skew (user 1 is heavy), a year of timestamps.
  // The ledger trigger is off while seeding: balances are not what this test is about.
  await sql.begin(async (tx) => {
    await tx`alter table "CreditTransaction" disable trigger credit_tx_apply`;
    await tx`
      insert into "User" (email, free_credits)
      select 'plan-user-' || g || '@example.com', 1000000 from generate_series(1, ${USERS}) g`;
    await tx`
      with u as (select id, row_number() over (order by email) as n from "User")
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at, balance_after)
      select u.id, 1 + (g % 5), (array['deduct','refund','grant'])[1 + g % 3]::operation_type,
        (array['document_generation','workstream_clustering','chat_tool_call','chat_message'])[1 + g % 4]::feature_type,
        timestamptz '2026-01-01' + (g * interval '157 seconds'), 100
      from generate_series(1, ${ROWS}) g
      join u on u.n = case when g % 10 = 0 then 1 else 1 + (hashint4(g) & 2147483647) % ${USERS} end`;
    await tx`alter table "CreditTransaction" enable trigger credit_tx_apply`;
  });
  await sql`analyze "User"`;
  await sql`analyze "CreditTransaction"`;
  const [heavy] =
    await sql`select user_id, count(*)::int as n from "CreditTransaction" group by 1 order by 2 desc limit 1`;
  heavyUser = heavy?.user_id as string;
}, 120_000);
afterAll(async () => {
  await sql.end();
  await close();
});

describe(`query plans with ${ROWS.toLocaleString('en')} rows over ${USERS.toLocaleString('en')} users`, () => {
  it('seeded the rows it claims', async () => {
    const [row] =
      await sql`select count(*)::int as n, count(distinct user_id)::int as users from "CreditTransaction"`;
    expect(row).toEqual({ n: ROWS, users: USERS });
  });

  it('the user history query uses credit_tx_user_created_at_idx, with no Seq Scan', async () => {
    const plan = await explainNodes(sql, userHistoryQuery(db, firstPage), {
      userId: heavyUser,
      limit: 51,
    });
    expect(indexesUsed(plan)).toContain('credit_tx_user_created_at_idx');
    expect(seqScansOf(plan, 'CreditTransaction')).toEqual([]);
  });

  it('a deep page of the user history uses the same index, with no Seq Scan', async () => {
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
    const scope = `user|${heavyUser}||`;
    const position = decodeCursor(cursor ?? '', scope);
    const plan = await explainNodes(sql, userHistoryQuery(db, { ...firstPage, cursor: true }), {
      userId: heavyUser,
      limit: 51,
      at: position.createdAt,
      id: position.id,
    });
    expect(indexesUsed(plan)).toContain('credit_tx_user_created_at_idx');
    expect(seqScansOf(plan, 'CreditTransaction')).toEqual([]);
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
    const [row] =
      await sql`select count(*)::int as n from "CreditTransaction" where user_id = ${heavyUser}`;
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
    expect(seen.size).toBe(row?.n);
    expect(pages).toBe(Math.ceil((row?.n ?? 0) / 500));
  }, 60_000);
});
