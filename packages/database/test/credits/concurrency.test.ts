import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { sqlStateOf } from '../../src/credits/errors.js';
import {
  deductCredits,
  grantCredits,
  InsufficientCreditsError,
  RefundExceedsDeductionError,
  refundCredits,
} from '../../src/credits/index.js';
import { balances, createUser, ledgerMismatches, trailSize } from './fixtures.js';

let db: Database;
let close: () => Promise<void>;
beforeAll(async () => {
  // A pool as large as an app server's, so the calls really run side by side.
  ({ db, close } = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 20 }),
  }));
});
afterAll(() => close());

const settle = <T>(promises: Promise<T>[]) => Promise.allSettled(promises);
const rejectedWith = (
  results: PromiseSettledResult<unknown>[],
  type: new (...args: never[]) => Error,
) => results.filter((r) => r.status === 'rejected' && r.reason instanceof type).length;

describe('under concurrency', () => {
  it('500 concurrent deductions of 1 on a balance of 100: exactly 100 succeed', async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 90, featureType: 'chat_tool_call' });
    const results = await settle(
      Array.from({ length: 500 }, () =>
        deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' }),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(100);
    expect(rejectedWith(results, InsufficientCreditsError)).toBe(400);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 0 });
    expect(await trailSize(db, u.id)).toBe(101); // the grant and 100 deductions
    expect(await ledgerMismatches(db)).toEqual([]);
  }, 60_000);

  it('200 concurrent retries of one idempotent deduction charge once', async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 3,
      featureType: 'document_generation' as const,
      idempotencyKey: 'req-42',
    };
    const results = await Promise.all(Array.from({ length: 200 }, () => deductCredits(db, input)));
    expect(new Set(results.map((r) => r.transaction.id)).size).toBe(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    expect(results.every((r) => r.balance === 7)).toBe(true);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 7 });
    expect(await trailSize(db, u.id)).toBe(1);
  }, 60_000);

  it('200 concurrent retries of a deduction that spends the whole balance: one charge, 199 replays', async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 10,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'all-in',
    };
    const results = await Promise.all(Array.from({ length: 200 }, () => deductCredits(db, input)));
    expect(results.filter((r) => r.replayed)).toHaveLength(199);
    expect(new Set(results.map((r) => r.transaction.id)).size).toBe(1);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 0 });
  }, 60_000);

  it('a refund racing a transaction that writes and then refunds the same deduction does not deadlock', async () => {
    const u = await createUser(db);
    const d = await deductCredits(db, { userId: u.id, amount: 4, featureType: 'chat_tool_call' });
    const refund = {
      userId: u.id,
      amount: 2,
      featureType: 'chat_tool_call' as const,
      refundOf: d.transaction.id,
    };
    let release: () => void = () => {};
    const granted = new Promise<void>((resolve) => {
      release = resolve;
    });
    const a = db.transaction(async (tx) => {
      await grantCredits(tx, { userId: u.id, amount: 1, featureType: 'chat_tool_call' }); // locks the user
      release();
      await new Promise((resolve) => setTimeout(resolve, 100)); // let B queue up behind it
      await refundCredits(tx, refund);
    });
    await granted;
    const b = refundCredits(db, refund);
    const [ra, rb] = await Promise.allSettled([a, b]);
    expect(ra.status).toBe('fulfilled');
    expect(rb.status).toBe('fulfilled'); // 2 + 2 = the whole deduction, no deadlock (40P01)
    expect(await ledgerMismatches(db)).toEqual([]);
  }, 60_000);

  it('concurrent refunds of one deduction never exceed it', async () => {
    const u = await createUser(db);
    const deduction = await deductCredits(db, {
      userId: u.id,
      amount: 10,
      featureType: 'workstream_clustering',
    });
    const refundOf = deduction.transaction.id;
    const results = await settle(
      Array.from({ length: 60 }, (_, i) =>
        refundCredits(db, {
          userId: u.id,
          amount: (i % 3) + 1,
          featureType: 'workstream_clustering',
          refundOf,
        }),
      ),
    );
    const refunded = results
      .filter(
        (r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof refundCredits>>> =>
          r.status === 'fulfilled',
      )
      .reduce((sum, r) => sum + r.value.transaction.amount, 0);
    expect(refunded).toBeLessThanOrEqual(10);
    expect(refunded).toBeGreaterThanOrEqual(8); // refunds of 1–3 stop only when less than 3 is left
    expect(rejectedWith(results, RefundExceedsDeductionError)).toBe(
      results.length - results.filter((r) => r.status === 'fulfilled').length,
    );
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: refunded });
    expect(await ledgerMismatches(db)).toEqual([]);
  }, 60_000);

  it('deductions, grants and refunds racing over many users keep every ledger balanced', async () => {
    const users = await Promise.all(Array.from({ length: 20 }, () => createUser(db)));
    const calls = Array.from({ length: 400 }, (_, i) => {
      const userId = users[i % users.length]?.id ?? '';
      const featureType = i % 4 === 0 ? ('chat_message' as const) : ('chat_tool_call' as const);
      if (i % 5 === 0) return grantCredits(db, { userId, amount: 2, featureType });
      if (i % 7 === 0) return refundCredits(db, { userId, amount: 1, featureType });
      return deductCredits(db, { userId, amount: 1 + (i % 3), featureType });
    });
    const results = await settle(calls);
    for (const r of results) {
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(InsufficientCreditsError);
    }
    expect(await ledgerMismatches(db)).toEqual([]);
  }, 60_000);

  it('under SERIALIZABLE, deductions, grants and refunds of different users in their own transactions all commit, retried as PostgreSQL requires', async () => {
    // Each in its own SERIALIZABLE transaction, all at once. The ledger reads nothing that
    // another user's write changes (the user's own row, no index page of the trail), but
    // PostgreSQL's predicate locks are page-grained: two users whose rows share an index page
    // (the idempotency keys' here) can fail one of them with 40001 (a false positive). How
    // many depends on how much the transactions overlap, so on the machine's load: 0 on an
    // idle one, 254 in one CI run. The app retries the transaction after a jittered pause, as
    // PostgreSQL requires; nothing else may fail, none needs more than 20 tries, and each
    // change applies once.
    const users = await Promise.all(Array.from({ length: 60 }, () => createUser(db)));
    let serializationFailures = 0;
    const results = await settle(
      users.map(async (u, i) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await db.transaction(
              async (tx) => {
                const featureType = i % 2 ? 'chat_message' : 'chat_tool_call';
                if (i % 3 === 0) return grantCredits(tx, { userId: u.id, amount: 2, featureType });
                if (i % 3 === 1) return refundCredits(tx, { userId: u.id, amount: 1, featureType });
                return deductCredits(tx, {
                  userId: u.id,
                  amount: 2,
                  featureType,
                  idempotencyKey: `s-${i}`,
                });
              },
              { isolationLevel: 'serializable' },
            );
          } catch (error) {
            if (sqlStateOf(error) !== '40001' || attempt >= 20) throw error;
            serializationFailures++;
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
          }
        }
      }),
    );
    const failures = results.filter((r) => r.status === 'rejected');
    expect(failures.map((f) => String((f as PromiseRejectedResult).reason))).toEqual([]);
    console.log(`concurrency.test.ts: ${serializationFailures} serialization failures, retried`);
    for (const [i, u] of users.entries()) {
      const rows = await trailSize(db, u.id);
      expect(rows, `user ${i}`).toBe(1);
    }
    expect(await ledgerMismatches(db)).toEqual([]);
  }, 60_000);

  it('with SERIALIZABLE the default, concurrent capped refunds of different users all succeed (retried inside)', async () => {
    const serializable = await createTestDatabase({
      connect: (url) => createDatabase(url, { max: 20 }),
    });
    try {
      const users = await Promise.all(
        Array.from({ length: 60 }, () => createUser(serializable.db)),
      );
      const deductions = await Promise.all(
        users.map((u) =>
          deductCredits(serializable.db, {
            userId: u.id,
            amount: 3,
            featureType: 'chat_tool_call',
          }),
        ),
      );
      await serializable.db.execute(
        sql.raw(
          `alter database "${serializable.name}" set default_transaction_isolation = 'serializable'`,
        ),
      );
      // New connections take the new default.
      const fresh = createDatabase(serializable.url, { max: 20 });
      try {
        const [isolation] = (await fresh.db.execute(
          sql`show transaction_isolation`,
        )) as unknown as {
          transaction_isolation: string;
        }[];
        expect(isolation?.transaction_isolation).toBe('serializable');
        const results = await settle(
          deductions.map((d) =>
            refundCredits(fresh.db, {
              userId: d.transaction.userId,
              amount: 2,
              featureType: 'chat_tool_call',
              refundOf: d.transaction.id,
            }),
          ),
        );
        expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
        expect(await ledgerMismatches(fresh.db)).toEqual([]);
      } finally {
        await fresh.close();
      }
    } finally {
      await serializable.close();
    }
  }, 60_000);
});
