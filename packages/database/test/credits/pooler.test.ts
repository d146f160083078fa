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
  settleCreditHold,
  verifyLedger,
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
        return deductCredits(db, {
          userId,
          amount: 1,
          featureType: 'chat_tool_call',
          idempotencyKey: `pooled-${i}`,
        });
      });
      const results = await Promise.allSettled(calls);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      // Each started with 10, got 4, spent 8.
      for (const u of users)
        expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 6, heldCredits: 0 });
      const { items } = await listCreditTransactions(db, { userId: users[0]?.id ?? '' });
      expect(items).toHaveLength(2 + 2 + 2 * 2 + 6);
      expect(await ledgerMismatches(db)).toEqual([]);
      expect((await verifyLedger(db)).violations).toEqual([]);
    }, 60_000);
  },
);
