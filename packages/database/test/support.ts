import { randomBytes } from 'node:crypto';
import { useTestDatabase } from '@bragdoc/test-postgres';

import postgres from 'postgres';
import { createDatabase } from '../src/client.js';

/**
 * A migrated database of this file's own, with a drizzle client, dropped after the file
 * (kept, with its URL printed, when a test failed and TEST_POSTGRES_KEEP_FAILED is set).
 */
export function useMigratedDatabase(options: { fetchTypes?: boolean } = {}) {
  return useTestDatabase({ connect: (url) => createDatabase(url, { max: 4, ...options }) });
}

/**
 * The PostgreSQL error of a query that must be refused (drizzle wraps it as `cause`;
 * postgres.js throws it directly). Throws if the query succeeded.
 */
export async function refusalOf(
  promise: Promise<unknown>,
): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message: string } }).cause;
    return cause ?? (error as { code?: string; message: string });
  }
  throw new Error('expected the statement to be refused');
}

/** The SQLSTATE of a query that must be refused. */
export async function refusalSqlState(promise: Promise<unknown>): Promise<string | undefined> {
  return (await refusalOf(promise)).code;
}

/**
 * A login role with a password of its own, owning the database at `databaseUrl`, for tests
 * about passwords in URLs: they must work on servers that check passwords (a container,
 * CI's service), not only on trust auth. `drop()` removes the role once the database is gone.
 */
export async function passwordRole(databaseUrl: string, serverUrl: string) {
  const name = `bragdoc_pw_${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create role ${name} login password '${password}'`);
    await admin.unsafe(
      `alter database "${new URL(databaseUrl).pathname.slice(1)}" owner to ${name}`,
    );
  } finally {
    await admin.end();
  }
  const url = new URL(databaseUrl);
  url.username = name;
  url.password = password;
  return {
    url: url.toString(),
    password,
    drop: async () => {
      const server = postgres(serverUrl, { max: 1, onnotice: () => {} });
      try {
        await server.unsafe(`drop role if exists ${name}`);
      } finally {
        await server.end();
      }
    },
  };
}

/**
 * Runs `lock` in a transaction of its own connection to `url` and keeps that transaction
 * open, holding what `lock` took, until `release()` (which ends the transaction and the
 * connection). Resolves once `lock` has run.
 */
export async function holdInTransaction(
  url: string,
  lock: (tx: postgres.TransactionSql) => Promise<unknown>,
): Promise<{ release: () => Promise<void> }> {
  const holder = postgres(url, { max: 1, onnotice: () => {} });
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let locked = () => {};
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve;
  });
  const done = holder
    .begin(async (tx) => {
      await lock(tx);
      locked();
      await released;
    })
    .finally(() => holder.end());
  await Promise.race([isLocked, done]);
  return {
    release: async () => {
      release();
      await done;
    },
  };
}
