import { spawn } from 'node:child_process';
import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import { verifyLedger } from '../../src/credits/index.js';
import { packageDir } from '../run-script.js';
import { createUser, ledgerMismatches } from './fixtures.js';

let database: TestDatabase;
let handle: DatabaseHandle;
beforeAll(async () => {
  database = await createTestDatabase();
  handle = createDatabase(database.url, { max: 2 });
});
afterAll(async () => {
  await handle?.close();
  await database?.close();
});

interface LoadReport {
  unhandledMessages: string[];
  retries: number;
  failures: string[];
}

describe('connections terminated under load', () => {
  it('never surface as unhandled rejections; keyed retries charge each key once; the ledger verifies', async () => {
    const workers = 8;
    const perWorker = 40;
    const users = await Promise.all(
      Array.from({ length: workers }, () => createUser(handle.db, { freeCredits: 1000 })),
    );
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'test/credits/fault-child.ts',
        database.url,
        users.map((u) => u.id).join(','),
        String(perWorker),
      ],
      { cwd: packageDir, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));

    // Every 15 ms, terminate one of the load's connections, as an operator or a failover would.
    const admin = postgres(database.url, { max: 1, onnotice: () => {} });
    let terminated = 0;
    let running = true;
    void exited.then(() => {
      running = false;
    });
    while (running) {
      const [row] = await admin<{ n: number }[]>`
        select count(pg_catalog.pg_terminate_backend(pid))::int as n from (
          select pid from pg_catalog.pg_stat_activity
           where application_name = 'bragdoc-fault-load' and datname = pg_catalog.current_database()
           order by random() limit 1) victims`;
      terminated += row?.n ?? 0;
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    await admin.end();
    expect(await exited).toBe(0);
    const report = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as LoadReport;
    console.log(
      `faults.test.ts: ${terminated} connections terminated; ${report.retries} retries; ` +
        `${report.unhandledMessages.length} unhandled rejections; ${report.failures.length} failures`,
    );
    expect(terminated).toBeGreaterThan(0);
    expect(report.unhandledMessages).toEqual([]);
    expect(report.failures).toEqual([]);
    // Each key charged exactly once: one row per key, and the balance is what they explain.
    const check = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const [counts] = await check<{ rows: number; keys: number }[]>`
        select count(*)::int as rows, count(distinct (user_id, idempotency_key))::int as keys
          from "CreditTransaction" where idempotency_key like 'fault-%'`;
      expect(counts).toEqual({ rows: workers * perWorker, keys: workers * perWorker });
      const balances = await check<{ free_credits: number }[]>`
        select free_credits from "User" where id = any(${users.map((u) => u.id)}::uuid[])`;
      expect(balances.map((b) => b.free_credits)).toEqual(
        Array.from({ length: workers }, () => 1000 - perWorker),
      );
    } finally {
      await check.end();
    }
    expect(await ledgerMismatches(handle.db)).toEqual([]);
    expect((await verifyLedger(handle.db)).violations).toEqual([]);
  }, 120_000);
});
