import { desc, eq, sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import { userHistoryQuery } from '../../src/credits/history.js';
import {
  type CreditTransactionPage,
  deductCredits,
  grantCredits,
  listCreditTransactions,
  listCreditTransactionsInRange,
  refundCredits,
} from '../../src/credits/index.js';
import { runRows } from '../../src/credits/rows.js';
import { creditTransaction } from '../../src/schema.js';
import { useMigratedDatabase } from '../support.js';
import { createUser } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

async function walk(next: (cursor?: string) => Promise<CreditTransactionPage>) {
  const ids: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await next(cursor);
    ids.push(...page.items.map((r) => r.id));
    cursor = page.nextCursor ?? undefined;
    pages++;
  } while (cursor && pages < 1000);
  return { ids, pages };
}

/** n grants in one INSERT (the ledger trigger applies each): they share one created_at. */
async function burst(userId: string, n: number, at?: Date) {
  await db.insert(creditTransaction).values(
    Array.from({ length: n }, () => ({
      userId,
      amount: 1,
      operation: 'grant' as const,
      featureType: 'chat_tool_call' as const,
      ...(at ? { createdAt: at } : {}),
    })),
  );
}

describe('listCreditTransactions', () => {
  it('returns the history newest first, (created_at, id) descending', async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' });
    const { items, nextCursor } = await listCreditTransactions(db, { userId: u.id });
    expect(items.map((r) => r.operation)).toEqual(['deduct', 'grant']);
    expect(nextCursor).toBeNull();
  });

  it('walking page by page returns every row exactly once, across a group sharing one created_at', async () => {
    const u = await createUser(db);
    await burst(u.id, 40);
    for (let i = 0; i < 5; i++)
      await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    await burst(u.id, 130); // one transaction: 130 rows with the same created_at
    await burst(u.id, 25);
    const all = (await db.execute(sql`
      select id from "CreditTransaction" where user_id = ${u.id} order by created_at desc, id desc`)) as unknown as {
      id: string;
    }[];
    expect(all).toHaveLength(200);
    for (const limit of [1, 7, 50, 199, 200, 500]) {
      const { ids } = await walk((cursor) =>
        listCreditTransactions(db, { userId: u.id, limit, ...(cursor ? { cursor } : {}) }),
      );
      expect(ids, `page size ${limit}`).toEqual(all.map((r) => r.id));
    }
  });

  it('filters by operation and feature type, and paginates within the filter', async () => {
    const u = await createUser(db);
    for (let i = 0; i < 6; i++) {
      await grantCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: i % 2 ? 'chat_message' : 'chat_tool_call',
      });
      await deductCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: i % 2 ? 'chat_message' : 'chat_tool_call',
      });
    }
    const { ids } = await walk((cursor) =>
      listCreditTransactions(db, {
        userId: u.id,
        limit: 2,
        operation: 'deduct',
        featureType: 'chat_message',
        ...(cursor ? { cursor } : {}),
      }),
    );
    expect(ids).toHaveLength(3);
    const page = await listCreditTransactions(db, { userId: u.id, operation: 'grant' });
    expect(page.items.every((r) => r.operation === 'grant')).toBe(true);
    expect(page.items).toHaveLength(6);
  });

  it("shows only the asked user's rows", async () => {
    const [a, b] = [await createUser(db), await createUser(db)];
    await grantCredits(db, { userId: a.id, amount: 1, featureType: 'chat_tool_call' });
    await grantCredits(db, { userId: b.id, amount: 1, featureType: 'chat_tool_call' });
    const { items } = await listCreditTransactions(db, { userId: a.id });
    expect(items.map((r) => r.userId)).toEqual([a.id]);
  });
});

describe('listCreditTransactionsInRange', () => {
  it("returns every user's rows with from <= created_at < to, newest first, each exactly once", async () => {
    const users = [await createUser(db), await createUser(db), await createUser(db)];
    const base = new Date('2031-05-01T00:00:00.000Z');
    for (const [i, u] of users.entries()) {
      await burst(u.id, 30, new Date(base.getTime() + i * 1000)); // 30 rows at each instant
      await burst(u.id, 5, new Date(base.getTime() + 3_600_000)); // at `to`: excluded
      await burst(u.id, 5, new Date(base.getTime() - 1)); // before `from`: excluded
    }
    const to = new Date(base.getTime() + 3_600_000);
    const expected = (await db.execute(sql`
      select id from "CreditTransaction" where created_at >= ${base.toISOString()} and created_at < ${to.toISOString()}
      order by created_at desc, id desc`)) as unknown as { id: string }[];
    expect(expected).toHaveLength(90);
    const { ids } = await walk((cursor) =>
      listCreditTransactionsInRange(db, {
        from: base,
        to,
        limit: 13,
        ...(cursor ? { cursor } : {}),
      }),
    );
    expect(ids).toEqual(expected.map((r) => r.id));
  });

  it('an empty range (from = to) returns nothing', async () => {
    const at = new Date();
    expect(await listCreditTransactionsInRange(db, { from: at, to: at })).toEqual({
      items: [],
      nextCursor: null,
    });
  });
});

describe('rows of the lists', () => {
  it('are exactly what a drizzle select of the same rows returns', async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 4,
      featureType: 'chat_tool_call',
      metadata: { a: [1, 'x', null] },
    });
    const { transaction } = await deductCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: 'chat_message',
      idempotencyKey: 'k',
    });
    await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_message',
      refundOf: transaction.id,
    });
    const viaDrizzle = await db
      .select()
      .from(creditTransaction)
      .where(eq(creditTransaction.userId, u.id))
      .orderBy(desc(creditTransaction.createdAt), desc(creditTransaction.id));
    const { items } = await listCreditTransactions(db, { userId: u.id });
    expect(items).toEqual(viaDrizzle);
    expect(items[0]?.createdAt).toBeInstanceOf(Date);
    const range = await listCreditTransactionsInRange(db, {
      from: new Date(Date.now() - 60_000),
      to: new Date(Date.now() + 60_000),
      limit: 500,
    });
    expect(range.items.filter((r) => r.userId === u.id)).toEqual(viaDrizzle);
  });

  it("are the same through drizzle's mapped execute(), the fallback if its raw all() goes away", async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 4,
      featureType: 'chat_tool_call',
      metadata: { b: 1 },
    });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' });
    const query = userHistoryQuery(db, {
      operation: false,
      featureType: false,
      cursor: false,
    }).prepare('fallback');
    const values = { userId: u.id, limit: 10 };
    const viaAll = await runRows(query, values);
    const viaExecute = await runRows({ execute: (v) => query.execute(v) }, values);
    expect(viaAll).toHaveLength(2);
    expect(viaExecute).toEqual(viaAll);
  });
});
