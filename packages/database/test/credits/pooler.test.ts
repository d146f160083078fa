import {
  createTestDatabase,
  findPgBouncer,
  type PgBouncer,
  startPgBouncer,
  type TestDatabase,
} from '@bragdoc/test-postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  grantCredits,
  holdCredits,
  listCreditTransactions,
  listCreditTransactionsInRange,
  OperationTimeoutError,
  PreparedStatementsUnsupportedError,
  refundCredits,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { createUser, ledgerMismatches } from './fixtures.js';

const pgbouncer = findPgBouncer();
if ('missing' in pgbouncer) console.log(`credits/pooler.test.ts skipped: ${pgbouncer.missing}`);

let bouncer: PgBouncer;
let database: TestDatabase;
let pooled: DatabaseHandle;

describe.skipIf('missing' in pgbouncer)(
  'the ledger through a transaction-mode PgBouncer 1.18 (no prepared-statement support), with ?pgbouncer=true',
  () => {
    beforeAll(async () => {
      bouncer = await startPgBouncer({ serverUrl: inject('testPostgres').serverUrl });
      database = await createTestDatabase();
      const url = new URL(bouncer.pooledUrl(database.url));
      url.searchParams.set('pgbouncer', 'true');
      pooled = createDatabase(url.toString(), { max: 10 });
    });
    afterAll(async () => {
      await pooled?.close();
      await database?.close();
      await bouncer?.stop();
    });

    it('50 concurrent grants, deductions, holds and settlements on a pool of 10 all complete, each once', async () => {
      const { db } = pooled;
      const users = await Promise.all(Array.from({ length: 5 }, () => createUser(db)));
      const calls = Array.from({ length: 50 }, async (_, i) => {
        // Ten calls per user: two grants of 2, two holds of 1 settled, six deductions of 1.
        const userId = users[Math.floor(i / 10)]?.id ?? '';
        if (i % 5 === 0)
          return grantCredits(db, { userId, amount: 2, featureType: 'chat_tool_call' });
        if (i % 5 === 1) {
          const hold = await holdCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
          return settleCreditHold(db, { holdId: hold.holdId, userId });
        }
        if (i % 10 === 2) {
          // A hold given back, then a capped refund of a deduction: nothing spent in all.
          const hold = await holdCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
          await voidCreditHold(db, { holdId: hold.holdId, userId });
          const d = await deductCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
          await refundCredits(db, {
            userId,
            amount: 1,
            featureType: 'chat_tool_call',
            refundOf: d.transaction.id,
          });
          return listCreditTransactions(db, { userId, limit: 5 });
        }
        return deductCredits(db, {
          userId,
          amount: 1,
          featureType: 'chat_tool_call',
          idempotencyKey: `pooled-${i}`,
        });
      });
      const results = await Promise.allSettled(calls);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      // Each started with 10, got 4, spent 7: 2 settled holds and 5 deductions (the sixth
      // call deducted, refunded and voided a hold: nothing spent).
      for (const u of users)
        expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 7, heldCredits: 0 });
      const { items } = await listCreditTransactions(db, { userId: users[0]?.id ?? '' });
      expect(items).toHaveLength(2 + 2 + 2 * 2 + 5 + 4);
      const range = await listCreditTransactionsInRange(db, {
        from: new Date(Date.now() - 60_000),
        to: new Date(Date.now() + 60_000),
        limit: 500,
      });
      expect(range.items).toHaveLength(5 * items.length);
      expect(await ledgerMismatches(db)).toEqual([]);
      expect((await verifyLedger(db)).violations).toEqual([]);
    }, 60_000);

    it('without the setting, a statement the pooler lost fails typed (PREPARED_STATEMENTS_UNSUPPORTED), and the ledger stays consistent', async () => {
      const url = new URL(bouncer.pooledUrl(database.url));
      const unprepared = createDatabase(url.toString(), { max: 4 });
      const u = await createUser(pooled.db, { freeCredits: 100 });
      const outcomes = { typed: 0, resolved: 0 };
      try {
        // One at a time on each of 4 connections, as an app's requests come: each transaction
        // may land on another server connection than the one its statement was prepared on.
        await Promise.all(
          [0, 1, 2, 3].map(async () => {
            for (let i = 0; i < 10; i++) {
              await unprepared.db
                .transaction((tx) =>
                  deductCredits(tx, { userId: u.id, amount: 1, featureType: 'chat_tool_call' }),
                )
                .then(
                  () => outcomes.resolved++,
                  (error: unknown) => {
                    expect(error).toBeInstanceOf(PreparedStatementsUnsupportedError);
                    outcomes.typed++;
                  },
                );
            }
          }),
        );
      } finally {
        await unprepared.close();
      }
      const balance = await getCreditBalance(pooled.db, u.id);
      const charged = 100 - balance.freeCredits;
      // Not asserted, only shown: a call can even return normally without its change having
      // happened (the server ran another client connection's statement under the same name,
      // or the pooler moved it): why the setting is needed. The ledger itself stays whole.
      console.log(
        `pooler.test.ts: without ?pgbouncer=true, ${outcomes.typed} of 40 calls lost their statement (typed error), ` +
          `${outcomes.resolved} returned normally, ${charged} were charged`,
      );
      expect(outcomes.typed + outcomes.resolved).toBe(40);
      expect(charged).toBeLessThanOrEqual(outcomes.resolved);
      expect(await ledgerMismatches(pooled.db)).toEqual([]);
      expect((await verifyLedger(pooled.db, { userId: u.id })).violations).toEqual([]);
    }, 60_000);

    it('without the setting but with operationTimeoutMs, 50 concurrent calls all come back within it, charged or with a typed error', async () => {
      const url = new URL(bouncer.pooledUrl(database.url));
      const bounded = createDatabase(url.toString(), { max: 10, operationTimeoutMs: 2000 });
      const u = await createUser(pooled.db, { freeCredits: 100 });
      const started = performance.now();
      const codes = new Map<string, number>();
      try {
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            deductCredits(bounded.db, {
              userId: u.id,
              amount: 1,
              featureType: 'chat_tool_call',
              idempotencyKey: `bounded-${i}`,
            }),
          ),
        );
        for (const r of results) {
          const code =
            r.status === 'fulfilled' ? 'ok' : String((r.reason as { code?: unknown }).code);
          codes.set(code, (codes.get(code) ?? 0) + 1);
          if (r.status === 'rejected')
            expect([OperationTimeoutError, PreparedStatementsUnsupportedError]).toContain(
              (r.reason as object).constructor,
            );
        }
      } finally {
        await bounded.close(0).catch(() => {});
      }
      const took = performance.now() - started;
      console.log(
        `pooler.test.ts: bounded to 2 s without the setting, 50 calls came back in ${Math.round(took)} ms: ${JSON.stringify(Object.fromEntries(codes))}`,
      );
      expect(took).toBeLessThan(2000 + 1500);
    }, 60_000);
  },
);
