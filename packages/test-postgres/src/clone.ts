import { randomBytes } from 'node:crypto';
import type postgres from 'postgres';
import type { TestPostgresContext } from './context.js';
import { quoteIdent, quoteLiteral, urlForDatabase } from './names.js';

export interface TestDatabase {
  name: string;
  url: string;
  /** Drops the database. Close every client of it first: a live one slows the drop. */
  close: () => Promise<void>;
  /** Marks the database to survive the run's teardown (until the next run), for inspection. */
  keep: (reason: string) => Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Start from an empty database instead of a copy of the migrated template. */
  empty?: boolean;
}

export const KEPT_MARK = 'kept by @bragdoc/test-postgres: ';

/** CREATE DATABASE … TEMPLATE: one statement on an open connection, nothing else. */
export async function cloneDatabase(
  sql: postgres.Sql,
  context: Pick<TestPostgresContext, 'serverUrl' | 'template' | 'runPrefix' | 'cloneStrategy'>,
  options: CreateTestDatabaseOptions = {},
): Promise<TestDatabase> {
  const name = `${context.runPrefix}${randomBytes(4).toString('hex')}`;
  const template = options.empty ? 'template0' : context.template;
  const strategy = context.cloneStrategy ? ` strategy ${context.cloneStrategy}` : '';
  await sql.unsafe(
    `create database ${quoteIdent(name)} template ${quoteIdent(template)}${strategy}`,
  );
  return {
    name,
    url: urlForDatabase(context.serverUrl, name),
    close: async () => {
      await sql.unsafe(`drop database if exists ${quoteIdent(name)} with (force)`);
    },
    keep: async (reason) => {
      await sql.unsafe(
        `comment on database ${quoteIdent(name)} is ${quoteLiteral(KEPT_MARK + reason)}`,
      );
    },
  };
}
