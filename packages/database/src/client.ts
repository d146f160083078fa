import type { ExtractTablesWithRelations } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
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
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? '@bragdoc/database' },
  });
  const db = drizzle(client, { schema });
  setOperationTimeout(db, options.operationTimeoutMs);
  return {
    db,
    close: (timeoutSeconds = 5) => client.end({ timeout: timeoutSeconds }),
  };
}
