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
  withCreditReservation,
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

/** n grants of 1 in one caller transaction, one statement each. */
async function grantsInOneTransaction(userId: string, n: number) {
  await db.transaction(async (tx) => {
    for (let i = 0; i < n; i++)
      await grantCredits(tx, { userId, amount: 1, featureType: 'chat_tool_call' });
  });
}

const noOpening = { freeCredits: 0, freeChatMessages: 0 };

describe('listCreditTransactions', () => {
  it('returns the history newest first, in the order the changes were applied', async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' });
    const { items, nextCursor } = await listCreditTransactions(db, { userId: u.id });
    expect(items.map((r) => [r.seq, r.operation, r.featureType])).toEqual([
      [4, 'deduct', 'chat_message'],
      [3, 'grant', 'chat_tool_call'],
      [2, 'grant', 'chat_message'],
      [1, 'grant', 'none'],
    ]);
    expect(nextCursor).toBeNull();
  });

  it('along the history, each balance_after is the previous one of its balance plus or minus the amount', async () => {
    const u = await createUser(db);
    await db.transaction(async (tx) => {
      for (let i = 0; i < 100; i++) {
        const featureType = i % 3 === 0 ? 'chat_message' : 'chat_tool_call';
        if (i % 2 === 0) await grantCredits(tx, { userId: u.id, amount: 2, featureType });
        else await deductCredits(tx, { userId: u.id, amount: 1, featureType });
      }
    });
    const { ids } = await walk((cursor) =>
      listCreditTransactions(db, { userId: u.id, limit: 500, ...(cursor ? { cursor } : {}) }),
    );
    expect(ids).toHaveLength(102);
    const { items } = await listCreditTransactions(db, { userId: u.id, limit: 500 });
    const last = { chat: 0, credits: 0 };
    for (const row of [...items].reverse()) {
      const kind = row.featureType === 'chat_message' ? 'chat' : 'credits';
      const delta = row.operation === 'deduct' ? -row.amount : row.amount;
      expect(row.balanceAfter, `seq ${row.seq}`).toBe(last[kind] + delta);
      last[kind] = row.balanceAfter;
    }
  });

  it("a failed reservation's void is listed after its hold, even inside one caller transaction", async () => {
    const u = await createUser(db, noOpening);
    await grantCredits(db, { userId: u.id, amount: 5, featureType: 'chat_tool_call' });
    await db.transaction(async (tx) => {
      await withCreditReservation(
        tx,
        { userId: u.id, amount: 2, featureType: 'chat_tool_call' },
        async () => {
          throw new Error('the LLM failed');
        },
      ).catch(() => {});
    });
    const { items } = await listCreditTransactions(db, { userId: u.id });
    expect(items.map((r) => [r.seq, r.operation, r.balanceAfter])).toEqual([
      [3, 'void', 5],
      [2, 'hold', 3],
      [1, 'grant', 5],
    ]);
    expect(items[0]?.holdId).toBe(items[1]?.id);
  });

  it('walking page by page returns every row exactly once, whatever the page size', async () => {
    const u = await createUser(db, noOpening);
    await grantsInOneTransaction(u.id, 40);
    for (let i = 0; i < 5; i++)
      await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    await grantsInOneTransaction(u.id, 130);
    await grantsInOneTransaction(u.id, 25);
    const all = (await db.execute(sql`
      select id from "CreditTransaction" where user_id = ${u.id} order by seq desc`)) as unknown as {
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
    const u = await createUser(db, noOpening);
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
    const [a, b] = [await createUser(db, noOpening), await createUser(db, noOpening)];
    await grantCredits(db, { userId: a.id, amount: 1, featureType: 'chat_tool_call' });
    await grantCredits(db, { userId: b.id, amount: 1, featureType: 'chat_tool_call' });
    const { items } = await listCreditTransactions(db, { userId: a.id });
    expect(items.map((r) => r.userId)).toEqual([a.id]);
  });
});

describe('listCreditTransactionsInRange', () => {
  it("returns every user's rows with from <= created_at < to, newest first, each exactly once", async () => {
    const users = [await createUser(db), await createUser(db), await createUser(db)];
    const serverNow = async () =>
      ((await db.execute(sql`select clock_timestamp() as at`)) as unknown as { at: string }[])[0]
        ?.at ?? '';
    const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
    for (const u of users) await grantsInOneTransaction(u.id, 5); // before `from`: excluded
    await pause();
    const from = new Date(await serverNow());
    // Within each transaction several rows share a millisecond: the cursor breaks the tie by id.
    for (const u of users) await grantsInOneTransaction(u.id, 30);
    await pause();
    const to = new Date(await serverNow());
    await pause();
    for (const u of users) await grantsInOneTransaction(u.id, 5); // after `to`: excluded
    const expected = (await db.execute(sql`
      select id from "CreditTransaction" where created_at >= ${from.toISOString()} and created_at < ${to.toISOString()}
      order by created_at desc, id desc`)) as unknown as { id: string }[];
    expect(expected).toHaveLength(90);
    const { ids } = await walk((cursor) =>
      listCreditTransactionsInRange(db, { from, to, limit: 13, ...(cursor ? { cursor } : {}) }),
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
      .orderBy(desc(creditTransaction.seq));
    const { items } = await listCreditTransactions(db, { userId: u.id });
    expect(items).toEqual(viaDrizzle);
    expect(items[0]?.createdAt).toBeInstanceOf(Date);
    const range = await listCreditTransactionsInRange(db, {
      from: new Date(Date.now() - 60_000),
      to: new Date(Date.now() + 60_000),
      limit: 500,
    });
    const byTime = (a: { createdAt: Date; id: string }, b: { createdAt: Date; id: string }) =>
      b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1);
    expect(range.items.filter((r) => r.userId === u.id)).toEqual([...viaDrizzle].sort(byTime));
  });

  it("are the same through drizzle's mapped execute(), the fallback if its raw all() goes away", async () => {
    const u = await createUser(db, noOpening);
    await grantCredits(db, {
      userId: u.id,
      amount: 4,
      featureType: 'chat_tool_call',
      metadata: { b: 1 },
    });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
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
