import type { ExtractTablesWithRelations } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
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
}

export interface DatabaseHandle {
  db: PostgresJsDatabase<Schema>;
  /** Ends every connection of the pool, waiting up to `timeoutSeconds` for running queries. */
  close: (timeoutSeconds?: number) => Promise<void>;
}

/**
 * Creates a drizzle instance over a postgres.js pool. Nothing connects until the first
 * query, so creating a handle is free and never fails on an unreachable server.
 */
export function createDatabase(url: string, options: DatabaseOptions = {}): DatabaseHandle {
  const client = postgres(url, {
    max: options.max ?? 10,
    idle_timeout: options.idleTimeout ?? 20,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? '@bragdoc/database' },
  });
  const db = drizzle(client, { schema });
  return {
    db,
    close: (timeoutSeconds = 5) => client.end({ timeout: timeoutSeconds }),
  };
}
