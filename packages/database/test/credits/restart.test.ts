/**
 * The server itself goes away: restarted with `-m immediate` in the middle of a burst, and
 * down for 2 s. These tests stop and start a server, so they run on an embedded server of
 * their own, never on the run's (nor TEST_DATABASE_URL's), which other test files share.
 */
import { randomUUID } from 'node:crypto';
import { type PrivateTestPostgres, startPrivateTestPostgres } from '@bragdoc/test-postgres';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  listCreditTransactions,
  setOperationTimeout,
  verifyLedger,
} from '../../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../../src/migrate/index.js';
import * as schema from '../../src/schema.js';
import { chargedSoFar, expectChargedOnce, startLoad } from './fault-load.js';
import { createUser, ledgerMismatches } from './fixtures.js';

let server: PrivateTestPostgres;
beforeAll(async () => {
  server = await startPrivateTestPostgres({
    migrate: (url) => migrate(url),
    migrationsFolder: defaultMigrationsFolder,
    prefix: 'bragdoc_restart',
    log: () => {},
  });
});
afterAll(() => server?.teardown());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a server restarted with -m immediate in the middle of a burst', () => {
  it('ends no process, charges each key exactly once with the retry policy, and the ledger verifies', async () => {
    const { url, close } = await server.createDatabase();
    const handle = createDatabase(url, { max: 2 });
    try {
      const workers = 16;
      const perWorker = 30;
      const users = await Promise.all(
        Array.from({ length: workers }, () => createUser(handle.db, { freeCredits: 1000 })),
      );
      const ids = users.map((u) => u.id);
      await handle.close();
      const load = startLoad(url, ids, perWorker, { retry: 'policy' });
      // Restart twice, at about a quarter and at about two thirds of the burst.
      let restarts = 0;
      for (const share of [0.25, 0.66]) {
        while (load.running() && (await chargedSoFar(url)) < workers * perWorker * share)
          await sleep(10);
        if (!load.running()) break;
        await server.control.restart('immediate');
        restarts++;
      }
      const report = await load.done;
      console.log(
        `restart.test.ts: ${restarts} restarts (-m immediate); ${report.retries} retries; ` +
          `${report.unhandledMessages.length} unhandled rejections; ${report.uncaughtMessages.length} uncaught exceptions; ` +
          `${report.failures.length} failures; ${workers * perWorker} keys`,
      );
      expect(restarts).toBe(2);
      expect(report.exitCode).toBe(0);
      expect(report.unhandledMessages).toEqual([]);
      expect(report.uncaughtMessages).toEqual([]);
      expect(report.failures).toEqual([]);
      expect(report.retries).toBeGreaterThan(0);
      await expectChargedOnce(url, ids, perWorker, 1000);
      const check = createDatabase(url, { max: 1 });
      try {
        expect(await ledgerMismatches(check.db)).toEqual([]);
        expect((await verifyLedger(check.db)).violations).toEqual([]);
      } finally {
        await check.close();
      }
    } finally {
      await handle.close();
      await close();
    }
  }, 120_000);
});

describe('a server down for 2 s', () => {
  const budgetMs = 2_000;

  /** Every call the app makes, each timed: it must fail with CONNECTION_LOST within its budget. */
  async function callsWhileDown(db: Database, userId: string) {
    const calls: Record<string, () => Promise<unknown>> = {
      getCreditBalance: () => getCreditBalance(db, userId),
      listCreditTransactions: () => listCreditTransactions(db, { userId }),
      'deductCredits (keyed)': () =>
        deductCredits(db, {
          userId,
          amount: 1,
          featureType: 'chat_tool_call',
          idempotencyKey: randomUUID(),
        }),
      'deductCredits (no key)': () =>
        deductCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' }),
    };
    const outcomes: { call: string; code: unknown; retryable: unknown; ms: number }[] = [];
    for (const [call, run] of Object.entries(calls)) {
      const started = performance.now();
      const error = await run().then(
        () => ({ code: 'SUCCEEDED' }),
        (e: unknown) => e as { code?: string; retryable?: boolean },
      );
      outcomes.push({
        call,
        code: (error as { code?: unknown }).code,
        retryable: (error as { retryable?: unknown }).retryable,
        ms: performance.now() - started,
      });
    }
    return outcomes;
  }

  it('makes every call fail fast with CONNECTION_LOST (retryable), none hanging, and succeed again once it is back: postgres.js and node-postgres', async () => {
    const { url, close } = await server.createDatabase();
    const { db, close: closeDb } = createDatabase(url, {
      max: 4,
      connectTimeout: 2,
      operationTimeoutMs: budgetMs,
    });
    const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: budgetMs });
    pool.on('error', () => {});
    const pgDb = drizzle(pool, { schema });
    setOperationTimeout(pgDb, budgetMs);
    try {
      const { id } = await createUser(db, { freeCredits: 100 });
      // Warm pools: the outage cuts open connections as well as new ones.
      await Promise.all([getCreditBalance(db, id), getCreditBalance(pgDb, id)]);
      await server.control.shutdown('immediate');
      const downSince = performance.now();
      const outcomes: Awaited<ReturnType<typeof callsWhileDown>> = [];
      let rounds = 0;
      while (performance.now() - downSince < 2_000) {
        outcomes.push(...(await callsWhileDown(db, id)), ...(await callsWhileDown(pgDb, id)));
        rounds++;
      }
      await server.control.start();
      const slowest = Math.max(...outcomes.map((o) => o.ms));
      console.log(
        `restart.test.ts: server down 2 s: ${outcomes.length} calls in ${rounds} rounds, all ` +
          `${[...new Set(outcomes.map((o) => o.code))].join('/')}, slowest ${Math.round(slowest)} ms`,
      );
      expect(rounds).toBeGreaterThan(1);
      expect(outcomes.filter((o) => o.code !== 'CONNECTION_LOST' || o.retryable !== true)).toEqual(
        [],
      );
      // Refused at once; the driver waits at most 0.5 s before it tries to connect again. The
      // bound is that none hangs (each has a budget of 2 s), with room for a busy machine.
      expect(slowest).toBeLessThan(budgetMs + 5_000);
      // Back: the same pools serve every call again.
      expect(await getCreditBalance(db, id)).toMatchObject({ freeCredits: 100 });
      expect(await getCreditBalance(pgDb, id)).toMatchObject({ freeCredits: 100 });
      await deductCredits(db, { userId: id, amount: 1, featureType: 'chat_tool_call' });
      await deductCredits(pgDb, { userId: id, amount: 1, featureType: 'chat_tool_call' });
      expect(await getCreditBalance(db, id)).toMatchObject({ freeCredits: 98 });
    } finally {
      await pool.end();
      await closeDb();
      await close();
    }
  }, 60_000);

  it('lets a keyed write with the retry policy, started while it is down, succeed once it is back, charged once', async () => {
    const { url, close } = await server.createDatabase();
    const retries: number[] = [];
    const { db, close: closeDb } = createDatabase(url, {
      max: 2,
      connectTimeout: 2,
      retry: {
        attempts: 100,
        baseDelayMs: 50,
        maxDelayMs: 250,
        deadlineMs: 8_000,
        onRetry: (r) => retries.push(r.attempt),
      },
    });
    try {
      const { id } = await createUser(db, { freeCredits: 100 });
      await server.control.shutdown('immediate');
      const key = randomUUID();
      const charge = deductCredits(db, {
        userId: id,
        amount: 5,
        featureType: 'chat_tool_call',
        idempotencyKey: key,
      });
      await sleep(2_000);
      await server.control.start();
      expect(await charge).toMatchObject({ replayed: false, balance: 95 });
      expect(retries.length).toBeGreaterThan(2);
      expect(
        await deductCredits(db, {
          userId: id,
          amount: 5,
          featureType: 'chat_tool_call',
          idempotencyKey: key,
        }),
      ).toMatchObject({ replayed: true, balance: 95 });
    } finally {
      await closeDb();
      await close();
    }
  }, 60_000);
});
