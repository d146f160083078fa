import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import type { TestPostgresContext } from './context.js';
import { quoteIdent, urlForDatabase } from './names.js';
import { startTestServer } from './server.js';

export interface TestPostgresSetupOptions {
  /** Applies the migrations to the database at `url` (the template). */
  migrate: (url: string) => Promise<unknown>;
  /** First part of every database name of the run. Default `bragdoc_test`. */
  prefix?: string;
}

function runId(): string {
  return `${Date.now().toString(36)}_${process.pid}`;
}

/**
 * A vitest `globalSetup`: one server per run, a template database migrated once, and a
 * teardown that drops every database of the run and stops the server.
 *
 *   // test/global-setup.ts
 *   export default setupTestPostgres({ migrate: (url) => migrate(url) });
 */
export function setupTestPostgres(options: TestPostgresSetupOptions) {
  return async function setup(project: TestProject): Promise<() => Promise<void>> {
    const started = performance.now();
    const server = await startTestServer();
    const prefix = `${options.prefix ?? 'bragdoc_test'}_${runId()}_`;
    const template = `${prefix}template`;
    const admin = postgres(server.url, { max: 1, onnotice: () => {} });
    const teardown = async () => {
      try {
        const databases = await admin<{ datname: string }[]>`
          select datname from pg_database where starts_with(datname, ${prefix})`;
        for (const { datname } of databases) {
          await admin.unsafe(`drop database if exists ${quoteIdent(datname)} with (force)`);
        }
      } finally {
        await admin.end();
        await server.stop();
      }
    };
    try {
      await admin.unsafe(`create database ${quoteIdent(template)}`);
      const migrateStarted = performance.now();
      await options.migrate(urlForDatabase(server.url, template));
      const migrateMs = performance.now() - migrateStarted;
      const context: TestPostgresContext = {
        provider: server.provider,
        version: server.version,
        serverUrl: server.url,
        template,
        prefix,
      };
      project.provide('testPostgres', context);
      console.log(
        `test-postgres: provider=${server.provider} postgres=${server.version} ` +
          `ready in ${Math.round(performance.now() - started)} ms (template migrated in ${Math.round(migrateMs)} ms)`,
      );
    } catch (error) {
      await teardown();
      throw error;
    }
    return teardown;
  };
}
