import type { Database, Transaction } from '../client.js';

const cache = new WeakMap<Database | Transaction, Map<string, unknown>>();

/**
 * A drizzle prepared query, built once per client (or transaction) and variant. Building a
 * query costs ~50 µs of CPU per call, and an unprepared statement is parsed and planned by
 * the server every time: measured by `pnpm bench`, this is what kept the package within
 * reach of hand-written postgres.js (see docs/BENCHMARKS.md).
 */
export function prepared<T>(db: Database | Transaction, key: string, build: () => T): T {
  let byKey = cache.get(db);
  if (!byKey) {
    byKey = new Map();
    cache.set(db, byKey);
  }
  let query = byKey.get(key) as T | undefined;
  if (query === undefined) {
    query = build();
    byKey.set(key, query);
  }
  return query;
}
