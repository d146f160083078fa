import type { ExtractTablesWithRelations } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { type RetryPolicy, setRetryPolicy } from './credits/retry.js';
import { setOperationTimeout } from './credits/timeout.js';
import * as schema from './schema.js';

export type Schema = typeof schema;
/**
 * Any drizzle PostgreSQL database whose schema holds this package's (or more): postgres.js,
 * node-postgres, PGlite, Neon's serverless Pool… Every operation of the package takes one,
 * or a transaction of one, first.
 */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;
export type Transaction = PgTransaction<
  PgQueryResultHKT,
  Schema,
  ExtractTablesWithRelations<Schema>
>;

export interface DatabaseOptions {
  /** Pool size. postgres.js opens connections lazily, up to this many. Default 10. */
  max?: number;
  /** Seconds an idle connection is kept before it is closed. Default 20. */
  idleTimeout?: number;
  /** Passed to PostgreSQL as `application_name`, visible in `pg_stat_activity`. */
  applicationName?: string;
  /**
   * Named prepared statements (faster: parsed and planned once per connection). Turn them off
   * behind a transaction-mode pooler without prepared-statement support (PgBouncer before
   * 1.21, or with max_prepared_statements = 0; Neon's and Supabase's pooled URLs): there, a
   * statement prepared on one server connection is missing on the next. Default: true, or
   * false when the URL says `?pgbouncer=true` (the convention Prisma made known).
   */
  prepare?: boolean;
  /** Seconds to wait for a connection before the call fails. Default 10. */
  connectTimeout?: number;
  /**
   * Milliseconds a credit operation called on this database may take before it throws
   * OperationTimeoutError (OPERATION_TIMEOUT, retryable). Default: none.
   */
  operationTimeoutMs?: number;
  /**
   * Let postgres.js read the server's array types on each new connection, so that raw
   * `db.execute()` results parse array columns (drizzle's own columns parse them either way).
   * Default false: postgres.js awaits that query nowhere, so a connection terminated while it
   * runs becomes an unhandled rejection, which ends a Node.js process.
   */
  fetchTypes?: boolean;
  /**
   * Retry credit calls cut off by a lost connection (CONNECTION_LOST), as far as it is safe:
   * writes with an idempotency key, settlements and voids of holds, and reads; never a write
   * without a key, nor anything inside a transaction. `true` for the defaults
   * (DEFAULT_RETRY_POLICY: 6 tries, 100 ms doubling to 2 s, none started after 10 s), or a
   * policy. Default: off. See setRetryPolicy.
   */
  retry?: RetryPolicy | boolean;
}

export interface DatabaseHandle {
  db: PostgresJsDatabase<Schema>;
  /** Ends every connection of the pool, waiting up to `timeoutSeconds` for running queries. */
  close: (timeoutSeconds?: number) => Promise<void>;
}

/**
 * `?pgbouncer=true` is ours, not the server's: it is taken out of the URL (PostgreSQL would
 * refuse it as an unknown startup parameter) and turns prepared statements off.
 */
function withoutPoolerFlag(url: string): { url: string; pooled: boolean } {
  const match = /([?&])pgbouncer=(true|false|1|0)(&|$)/i.exec(url);
  if (!match) return { url, pooled: false };
  const pooled = /^(true|1)$/i.test(match[2] ?? '');
  const rest = `${url.slice(0, match.index)}${match[3] === '&' ? match[1] : ''}${url.slice(match.index + match[0].length)}`;
  return { url: rest.replace(/[?&]$/, ''), pooled };
}

/**
 * Creates a drizzle instance over a postgres.js pool. Nothing connects until the first
 * query, so creating a handle is free and never fails on an unreachable server.
 */
export function createDatabase(url: string, options: DatabaseOptions = {}): DatabaseHandle {
  const { url: serverUrl, pooled } = withoutPoolerFlag(url);
  const client = postgres(serverUrl, {
    max: options.max ?? 10,
    idle_timeout: options.idleTimeout ?? 20,
    connect_timeout: options.connectTimeout ?? 10,
    prepare: options.prepare ?? !pooled,
    // postgres.js reads the server's array types on each new connection and awaits that
    // query nowhere: a connection terminated then (a restart, pg_terminate_backend, Neon
    // suspending) becomes an unhandled rejection, which ends a Node.js process. The schema
    // has no array column, and drizzle parses arrays itself, so the query is not needed.
    fetch_types: options.fetchTypes ?? false,
    // postgres.js waits before reconnecting after a failed connection, 3^n / 100 s (n failed
    // connections since the last good one, up to 20 s), and a query handed to that connection
    // waits with it, before any connect timeout starts: after a 2 s outage calls waited 1.5 s
    // to fail, and the first call after it 3.4 s; a longer outage leaves calls waiting up to
    // 20 s on a server that is back. Doubling from 10 ms, at most 0.5 s: a down server sees a
    // few connection attempts per second per pooled connection, and callers an answer.
    backoff: (failures: number) => Math.min(0.5, 0.01 * 2 ** failures) * (0.5 + Math.random() / 2),
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? '@bragdoc/database' },
  });
  const db = drizzle(client, { schema });
  setOperationTimeout(db, options.operationTimeoutMs);
  setRetryPolicy(db, options.retry);
  return {
    db,
    close: (timeoutSeconds = 5) => client.end({ timeout: timeoutSeconds }),
  };
}
