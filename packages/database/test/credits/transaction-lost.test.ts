import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// postgres.js 3.4.9 as patched by this repository (patches/postgres@3.4.9.patch): when the
// connection of a `sql.begin()` transaction dies, every query issued to that transaction
// settles, including those queued behind the connection's pipeline (max_pipeline), which
// never reached the server; and nothing is thrown from a timer.

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
});
afterAll(async () => {
  await database.close();
});

const within = <T>(ms: number, promise: Promise<T>) =>
  Promise.race([
    promise,
    new Promise<'still waiting'>((resolve) => setTimeout(() => resolve('still waiting'), ms)),
  ]);

describe('a transaction whose connection is terminated', () => {
  it('settles every query issued to it, even those queued past the pipeline, and rejects the transaction', async () => {
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    const killer = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      let issued: Promise<unknown>[] = [];
      let pid: number | undefined;
      const transaction = sql.begin(async (tx) => {
        const [row] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
        pid = row?.pid;
        // 300 queries: max_pipeline (100) of them are sent, the rest wait in the queue.
        issued = Array.from({ length: 300 }, () => tx`select pg_sleep(0.01)`);
        return Promise.all(issued);
      });
      const outcome = transaction.then(
        () => 'committed',
        (error: { code?: string }) => error.code ?? 'rejected',
      );
      while (pid === undefined || issued.length === 0)
        await new Promise((resolve) => setTimeout(resolve, 10));
      await killer`select pg_terminate_backend(${pid})`;

      const settled = await within(10_000, Promise.allSettled(issued));
      expect(settled).not.toBe('still waiting');
      const results = settled as PromiseSettledResult<unknown>[];
      expect(results).toHaveLength(300);
      // The queries that were still running or queued when it died failed.
      expect(results.filter((r) => r.status === 'rejected').length).toBeGreaterThan(100);
      expect(await within(10_000, outcome)).not.toBe('committed');
      expect(await within(10_000, outcome)).not.toBe('still waiting');
    } finally {
      await Promise.all([sql.end({ timeout: 1 }), killer.end()]);
    }
  });
});
