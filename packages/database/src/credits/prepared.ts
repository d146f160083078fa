import { entityKind } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';

type Values = Record<string, unknown>;

/** A drizzle query with placeholders: a builder (`db.select()…`) or its prepared form. */
export interface Runnable<R> {
  execute: (values?: Values) => Promise<R>;
}

interface Preparable<R> extends Runnable<R> {
  prepare: (name: string) => Runnable<R>;
}

const cache = new WeakMap<Database | Transaction, Map<string, unknown>>();

/**
 * Whether the client is postgres.js. Its prepared statements are safe everywhere: it names
 * them itself, and its own `prepare: false` (the pooler setting, see createDatabase) makes
 * them unnamed. Other drivers send a drizzle prepared query's name to the server as a named
 * statement, which a transaction-mode pooler without prepared-statement support loses, so
 * for them the query is built for each call instead. Read from drizzle's entity kind, not
 * with `instanceof`, which is false for a drizzle installed twice.
 */
function isPostgresJs(db: Database | Transaction): boolean {
  const session = (db as unknown as { session?: object }).session;
  const kind = (session?.constructor as { [entityKind]?: string } | undefined)?.[entityKind];
  return kind === 'PostgresJsSession';
}

/**
 * A query built once per client (or transaction) and variant and prepared, on postgres.js.
 * Building a query costs ~50 µs of CPU per call, and an unprepared statement is parsed and
 * planned by the server every time: measured by `pnpm bench`, this is what kept the package
 * within reach of hand-written postgres.js (see docs/BENCHMARKS.md). On other drivers, the
 * builder is run as it is (see isPostgresJs).
 */
export function prepared<R>(
  db: Database | Transaction,
  key: string,
  build: () => Preparable<R>,
): Runnable<R> {
  if (!isPostgresJs(db)) return { execute: (values) => build().execute(values) };
  let byKey = cache.get(db);
  if (!byKey) {
    byKey = new Map();
    cache.set(db, byKey);
  }
  let query = byKey.get(key) as Runnable<R> | undefined;
  if (query === undefined) {
    query = build().prepare(key);
    byKey.set(key, query);
  }
  return query;
}

/** Whether `db` is a transaction (drizzle's PgTransaction, of any driver and copy). */
export function isTransaction(db: Database | Transaction): db is Transaction {
  return 'rollback' in db && typeof db.rollback === 'function';
}

/**
 * The rows of a `db.execute()` result: postgres.js returns them as an array; node-postgres,
 * PGlite and Neon's serverless driver as `{ rows }`.
 */
export function rowsOf<T = Record<string, unknown>>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}
