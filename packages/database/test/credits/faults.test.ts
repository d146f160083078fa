import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import { verifyLedger } from '../../src/credits/index.js';
import { expectChargedOnce, type LoadOptions, startLoad } from './fault-load.js';
import { createUser, ledgerMismatches } from './fixtures.js';

// Each variant counts its own keys: a database of its own.
let database: TestDatabase;
let handle: DatabaseHandle;
beforeEach(async () => {
  database = await createTestDatabase();
  handle = createDatabase(database.url, { max: 2 });
});
afterEach(async () => {
  await handle?.close();
  await database?.close();
});

const drivers: { name: string; options: LoadOptions }[] = [
  { name: 'postgres.js (createDatabase), the caller retrying', options: {} },
  { name: 'postgres.js (createDatabase), the retry policy', options: { retry: 'policy' } },
  {
    name: 'node-postgres (a Pool with an error listener), the retry policy',
    options: { driver: 'node-postgres', retry: 'policy' },
  },
];

describe.each(drivers)('connections terminated under load: $name', ({ name, options }) => {
  it('never surface as unhandled rejections or uncaught exceptions; keyed retries charge each key once; the ledger verifies', async () => {
    const workers = 8;
    const perWorker = 40;
    const users = await Promise.all(
      Array.from({ length: workers }, () => createUser(handle.db, { freeCredits: 1000 })),
    );
    const load = startLoad(
      database.url,
      users.map((u) => u.id),
      perWorker,
      options,
    );

    // Every 15 ms, terminate one of the load's connections, as an operator or a failover would,
    // once the trail has grown since the last one: the faults keep pace with the work, so a busy
    // machine (slower writes) does not turn them into a siege that no bounded retry outlasts.
    const admin = postgres(database.url, { max: 1, onnotice: () => {} });
    let terminated = 0;
    let rowsAtLastFault = -1;
    while (load.running()) {
      const [progress] = await admin<{ rows: number }[]>`
        select count(*)::int as rows from public."CreditTransaction"`;
      const rows = progress?.rows ?? 0;
      if (rows > rowsAtLastFault) {
        const [row] = await admin<{ n: number }[]>`
          select count(pg_catalog.pg_terminate_backend(pid))::int as n from (
            select pid from pg_catalog.pg_stat_activity
             where application_name = 'bragdoc-fault-load' and datname = pg_catalog.current_database()
             order by random() limit 1) victims`;
        terminated += row?.n ?? 0;
        rowsAtLastFault = rows;
      }
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    await admin.end();
    const report = await load.done;
    console.log(
      `faults.test.ts [${name}]: ${terminated} connections terminated; ${report.retries} retries; ` +
        `${report.unhandledMessages.length} unhandled rejections; ${report.uncaughtMessages.length} uncaught exceptions; ` +
        `${report.failures.length} failures`,
    );
    expect(report.exitCode).toBe(0);
    expect(terminated).toBeGreaterThan(0);
    expect(report.unhandledMessages).toEqual([]);
    expect(report.uncaughtMessages).toEqual([]);
    expect(report.failures).toEqual([]);
    await expectChargedOnce(
      database.url,
      users.map((u) => u.id),
      perWorker,
      1000,
    );
    expect(await ledgerMismatches(handle.db)).toEqual([]);
    expect((await verifyLedger(handle.db)).violations).toEqual([]);
  }, 120_000);
});
