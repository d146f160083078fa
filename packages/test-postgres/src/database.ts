import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { inject } from 'vitest';
import { quoteIdent, urlForDatabase } from './names.js';

export interface TestDatabase {
  name: string;
  url: string;
  /** Drops the database. Close every client of it first: a live one slows the drop. */
  close: () => Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Start from an empty database instead of a copy of the migrated template. */
  empty?: boolean;
}

let admin: postgres.Sql | undefined;

// One maintenance connection per worker; it closes itself when idle, so a worker that is
// done never waits on it.
function adminConnection(serverUrl: string): postgres.Sql {
  admin ??= postgres(serverUrl, { max: 1, idle_timeout: 1, onnotice: () => {} });
  return admin;
}

/**
 * A database of its own on the run's server, cloned from the migrated template
 * (CREATE DATABASE … TEMPLATE) unless `empty` is set. `close()` drops it.
 */
export async function createTestDatabase(
  options: CreateTestDatabaseOptions = {},
): Promise<TestDatabase> {
  const context = inject('testPostgres');
  if (!context) {
    throw new Error(
      "No test PostgreSQL: add the package's global setup to vitest.config.ts " +
        '(test.globalSetup), see @bragdoc/test-postgres README.',
    );
  }
  const sql = adminConnection(context.serverUrl);
  const name = `${context.prefix}${randomBytes(5).toString('hex')}`;
  const template = options.empty ? 'template0' : context.template;
  await sql.unsafe(`create database ${quoteIdent(name)} template ${quoteIdent(template)}`);
  return {
    name,
    url: urlForDatabase(context.serverUrl, name),
    close: async () => {
      await sql.unsafe(`drop database if exists ${quoteIdent(name)} with (force)`);
    },
  };
}
