import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, inject } from 'vitest';
import { type CreateTestDatabaseOptions, cloneDatabase, type TestDatabase } from './clone.js';
import type { TestPostgresContext } from './context.js';

let admin: postgres.Sql | undefined;

/** TEST_DATABASE_URL's password must not reach CI logs; the user knows it. */
function redactPassword(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

function context(): TestPostgresContext {
  const provided = inject('testPostgres');
  if (!provided) {
    throw new Error(
      "No test PostgreSQL: add @bragdoc/test-postgres's setup to test.globalSetup in vitest.config.ts (see its README).",
    );
  }
  return provided;
}

// One maintenance connection per worker; it closes itself when idle, so a finished
// worker never waits on it.
function adminConnection(serverUrl: string): postgres.Sql {
  admin ??= postgres(serverUrl, { max: 1, idle_timeout: 5, onnotice: () => {} });
  return admin;
}

/** A client of a test database, closed before the database is dropped. */
export interface Connection {
  close: () => Promise<void>;
}

export type ConnectedTestDatabase<C extends Connection> = Omit<C, 'close'> & TestDatabase;

/**
 * A database of its own, cloned from the run's migrated template (or empty). With
 * `connect`, the result also carries the client, and `close()` ends the client first:
 *
 *   const { db, url, close } = await createTestDatabase({ connect: createDatabase });
 */
export function createTestDatabase<C extends Connection>(
  options: CreateTestDatabaseOptions & { connect: (url: string) => C },
): Promise<ConnectedTestDatabase<C>>;
export function createTestDatabase(options?: CreateTestDatabaseOptions): Promise<TestDatabase>;
export async function createTestDatabase<C extends Connection>(
  options: CreateTestDatabaseOptions & { connect?: (url: string) => C } = {},
): Promise<TestDatabase | ConnectedTestDatabase<C>> {
  const ctx = context();
  const database = await cloneDatabase(adminConnection(ctx.serverUrl), ctx, options);
  if (!options.connect) return database;
  const client = options.connect(database.url);
  return {
    ...client,
    name: database.name,
    url: database.url,
    keep: database.keep,
    close: async () => {
      await client.close();
      await database.close();
    },
  };
}

export interface UseTestDatabaseOptions<C extends Connection> extends CreateTestDatabaseOptions {
  connect: (url: string) => C;
  /** One database for the whole file (default) or a fresh one for every test. */
  per?: 'file' | 'test';
}

async function finish(database: ConnectedTestDatabase<Connection>, failedName: string | undefined) {
  if (failedName && context().keepFailed) {
    await database.keep(failedName);
    console.log(
      `test-postgres: kept the database of failed ${failedName}: ${redactPassword(database.url)}`,
    );
    return;
  }
  await database.close();
}

/**
 * Registers the hooks that give a file (or each test) its own database and drop it
 * after; with TEST_POSTGRES_KEEP_FAILED=1 a failed one is kept and its URL printed.
 * Returns a getter for the current database.
 */
export function useTestDatabase<C extends Connection>(
  options: UseTestDatabaseOptions<C>,
): () => ConnectedTestDatabase<C> {
  let current: ConnectedTestDatabase<C> | undefined;
  const open = async () => {
    current = await createTestDatabase(options);
  };
  const done = async (failed: string | undefined) => {
    if (!current) return;
    const database = current;
    current = undefined;
    await finish(database, failed);
  };
  if (options.per === 'test') {
    // onTestFinished runs after the afterEach hooks, when the test's result is final.
    beforeEach(async ({ onTestFinished }) => {
      await open();
      onTestFinished(({ task }) =>
        done(task.result?.state === 'fail' ? `test "${task.name}"` : undefined),
      );
    });
  } else {
    let failed: string | undefined;
    beforeAll(open);
    beforeEach(({ onTestFailed, task }) => {
      onTestFailed(() => {
        failed ??= `test "${task.name}" (its file's database)`;
      });
    });
    afterAll(() => done(failed));
  }
  return () => {
    if (!current) throw new Error('The test database exists only inside tests and hooks.');
    return current;
  };
}
