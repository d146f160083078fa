import { randomUUID } from 'node:crypto';
import { createTestDatabase, freePort, type TestDatabase } from '@bragdoc/test-postgres';
import { and, eq } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import {
  ConnectionLostError,
  deductCredits,
  getCreditBalance,
  holdCredits,
  type RetryEvent,
  type RetryPolicy,
  setRetryPolicy,
  settleCreditHold,
  voidCreditHold,
} from '../../src/credits/index.js';
import * as schema from '../../src/schema.js';
import { creditTransaction } from '../../src/schema.js';
import { holdInTransaction } from '../support.js';
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import { balances, createUser } from './fixtures.js';

let database: TestDatabase;
let direct: DatabaseHandle;
let proxy: FaultProxy;
let cut: DatabaseHandle;
const retries: RetryEvent[] = [];
const policy: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 10,
  maxDelayMs: 50,
  deadlineMs: 5_000,
  onRetry: (retry) => retries.push(retry),
};

beforeAll(async () => {
  database = await createTestDatabase();
  direct = createDatabase(database.url, { max: 2 });
  proxy = await startFaultProxy(database.url);
  // One connection: nothing else is in flight on the one the proxy cuts.
  cut = createDatabase(proxy.urlFor(database.url), { max: 1, retry: policy });
});
afterAll(async () => {
  await cut?.close();
  await proxy?.close();
  await direct?.close();
  await database?.close();
});
beforeEach(() => {
  retries.length = 0;
});

const rowsWithKey = (userId: string, key: string) =>
  direct.db
    .select()
    .from(creditTransaction)
    .where(and(eq(creditTransaction.userId, userId), eq(creditTransaction.idempotencyKey, key)));

const marker = () => `fault-${randomUUID()}`;

describe('the retry policy after a lost connection', () => {
  it('retries a keyed deduct whose reply was lost after it committed: one charge, returned as replayed', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const key = marker();
    proxy.dropOn(key, 'after');
    const result = await deductCredits(cut.db, {
      userId: id,
      amount: 3,
      featureType: 'chat_tool_call',
      idempotencyKey: key,
    });
    // Two tries of the INSERT, and the replay's read of the row by its key.
    expect(proxy.seen(key)).toBe(3);
    expect(retries.map((r) => [r.operation, r.attempt, r.error.code])).toEqual([
      ['deductCredits', 1, 'CONNECTION_LOST'],
    ]);
    // The first try's row: this call's own charge, which the retry found by its key.
    expect(result).toMatchObject({ replayed: true, balance: 97 });
    expect(await rowsWithKey(id, key)).toHaveLength(1);
    expect((await balances(direct.db, id))?.freeCredits).toBe(97);
  });

  it('retries a keyed deduct cut off before it reached the server: applied once, not replayed', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const key = marker();
    proxy.dropOn(key, 'before');
    const result = await deductCredits(cut.db, {
      userId: id,
      amount: 3,
      featureType: 'chat_tool_call',
      idempotencyKey: key,
    });
    expect(proxy.seen(key)).toBe(2);
    expect(retries).toHaveLength(1);
    expect(result).toMatchObject({ replayed: false, balance: 97 });
    expect(await rowsWithKey(id, key)).toHaveLength(1);
  });

  it('never retries a deduct without a key: one try, CONNECTION_LOST, and that try was applied', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const tag = marker();
    proxy.dropOn(tag, 'after');
    const error = await deductCredits(cut.db, {
      userId: id,
      amount: 3,
      featureType: 'chat_tool_call',
      metadata: { tag },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(error).toMatchObject({ code: 'CONNECTION_LOST', retryable: true, attempts: 1 });
    expect((error as Error).message).toMatch(
      /read the trail before retrying a write without a key/,
    );
    expect(proxy.seen(tag)).toBe(1);
    expect(retries).toEqual([]);
    // Why: the lost try was applied; a blind retry would have charged twice.
    expect((await balances(direct.db, id))?.freeCredits).toBe(97);
  });

  it('retries a settlement and a void whose replies were lost: each returns its closing row, replayed, written once', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const first = await holdCredits(direct.db, {
      userId: id,
      amount: 5,
      featureType: 'document_generation',
    });
    const second = await holdCredits(direct.db, {
      userId: id,
      amount: 4,
      featureType: 'document_generation',
    });
    const settleTag = marker();
    proxy.dropOn(settleTag, 'after');
    const settled = await settleCreditHold(cut.db, {
      holdId: first.holdId,
      userId: id,
      amount: 2,
      metadata: { tag: settleTag },
    });
    const voidTag = marker();
    proxy.dropOn(voidTag, 'after');
    const voided = await voidCreditHold(cut.db, {
      holdId: second.holdId,
      userId: id,
      reason: voidTag,
    });
    expect([proxy.seen(settleTag), proxy.seen(voidTag)]).toEqual([2, 2]);
    expect(retries.map((r) => r.operation)).toEqual(['settleCreditHold', 'voidCreditHold']);
    expect(settled).toMatchObject({
      replayed: true,
      transaction: { operation: 'settle', amount: 2 },
    });
    expect(voided).toMatchObject({ replayed: true, transaction: { operation: 'void', amount: 4 } });
    const closings = await direct.db
      .select()
      .from(creditTransaction)
      .where(eq(creditTransaction.userId, id));
    expect(closings.filter((r) => r.holdId !== null).map((r) => r.operation)).toEqual([
      'settle',
      'void',
    ]);
    expect((await balances(direct.db, id))?.freeCredits).toBe(98);
  });

  it('retries a balance read', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 42 });
    proxy.dropOn(id, 'before');
    expect(await getCreditBalance(cut.db, id)).toMatchObject({ freeCredits: 42 });
    expect(proxy.seen(id)).toBe(2);
    expect(retries.map((r) => r.operation)).toEqual(['getCreditBalance']);
  });

  it("never retries inside a caller's transaction, even with a key", async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const key = marker();
    proxy.dropOn(key, 'before');
    let inner: Promise<unknown> = Promise.resolve();
    const outer = await cut.db
      .transaction(async (tx) => {
        inner = deductCredits(tx, {
          userId: id,
          amount: 3,
          featureType: 'chat_tool_call',
          idempotencyKey: key,
        }).catch((e: unknown) => e);
        throw await inner;
      })
      .catch((e: unknown) => e);
    expect(await inner).toMatchObject({ code: 'CONNECTION_LOST', attempts: 1 });
    // The transaction itself fails with the driver's error: it is the caller's to retry whole.
    expect(outer).toMatchObject({ code: 'CONNECTION_CLOSED' });
    expect(proxy.seen(key)).toBe(1);
    expect(retries).toEqual([]);
    expect(await rowsWithKey(id, key)).toHaveLength(0);
  });

  it('does not retry OPERATION_TIMEOUT: the first statement may still apply, and it does, once', async () => {
    const { id } = await createUser(direct.db, { freeCredits: 100 });
    const bounded = createDatabase(database.url, {
      max: 1,
      operationTimeoutMs: 300,
      retry: policy,
    });
    const key = marker();
    const locker = await holdInTransaction(
      database.url,
      (sql) => sql`select 1 from "User" where id = ${id} for update`,
    );
    try {
      const error = await deductCredits(bounded.db, {
        userId: id,
        amount: 3,
        featureType: 'chat_tool_call',
        idempotencyKey: key,
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'OPERATION_TIMEOUT', retryable: true });
      expect(retries).toEqual([]);
      await locker.release();
      // The statement that timed out was not cancelled: it applies once the lock is free.
      for (let i = 0; i < 100 && (await rowsWithKey(id, key)).length === 0; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      expect(await rowsWithKey(id, key)).toHaveLength(1);
      expect((await balances(direct.db, id))?.freeCredits).toBe(97);
    } finally {
      await locker.release();
      await bounded.close();
    }
  });
});

describe('the retry policy against a server that is not there', () => {
  const call = (db: DatabaseHandle['db']) =>
    deductCredits(db, {
      userId: randomUUID(),
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: marker(),
    });

  it('starts no try after its deadline', async () => {
    const port = await freePort();
    const handle = createDatabase(`postgres://postgres@127.0.0.1:${port}/none`, {
      retry: { ...policy, attempts: 1_000, deadlineMs: 400 },
    });
    try {
      const started = performance.now();
      const error = await call(handle.db).catch((e: unknown) => e);
      const ms = performance.now() - started;
      expect(error).toMatchObject({ code: 'CONNECTION_LOST', faultCode: 'ECONNREFUSED' });
      expect((error as ConnectionLostError).attempts).toBeGreaterThan(3);
      expect((error as Error).message).toMatch(
        /could not connect to the database \(tried \d+ times\)/,
      );
      expect(ms).toBeGreaterThan(300);
      // The deadline, plus one refused try and the driver's reconnect delay (at most 0.5 s),
      // with room for a busy machine: 1,000 attempts without the deadline would take minutes.
      expect(ms).toBeLessThan(400 + 5_000);
    } finally {
      await handle.close();
    }
  });

  it('stops after its attempts, telling onRetry of each retry', async () => {
    const port = await freePort();
    const handle = createDatabase(`postgres://postgres@127.0.0.1:${port}/none`, {
      retry: { ...policy, attempts: 3 },
    });
    try {
      const error = await call(handle.db).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'CONNECTION_LOST', attempts: 3 });
      expect(retries.map((r) => r.attempt)).toEqual([1, 2]);
    } finally {
      await handle.close();
    }
  });
});

describe('node-postgres', () => {
  it('its lost connection is CONNECTION_LOST, and a keyed deduct is retried once, replayed', async () => {
    const pool = new pg.Pool({ connectionString: proxy.urlFor(database.url), max: 1 });
    // Without a listener, an idle client's lost connection is an 'error' event nobody
    // handles, which ends the process (see the README, Deploying).
    pool.on('error', () => {});
    const db = drizzle(pool, { schema });
    setRetryPolicy(db, policy);
    try {
      const { id } = await createUser(direct.db, { freeCredits: 100 });
      const key = marker();
      proxy.dropOn(key, 'after');
      const result = await deductCredits(db, {
        userId: id,
        amount: 3,
        featureType: 'chat_tool_call',
        idempotencyKey: key,
      });
      expect(retries.map((r) => [r.error.code, r.error.faultCode])).toEqual([
        ['CONNECTION_LOST', 'CONNECTION_TERMINATED'],
      ]);
      expect(result).toMatchObject({ replayed: true, balance: 97 });
      expect(await rowsWithKey(id, key)).toHaveLength(1);
    } finally {
      await pool.end();
    }
  });
});
