import postgres from 'postgres';
import {
  type CreateTestDatabaseOptions,
  cloneDatabase,
  KEPT_MARK,
  type TestDatabase,
} from './clone.js';
import type { TestPostgresContext } from './context.js';
import { removeLeftoverDatabases } from './leftovers.js';
import { LockClass, lock } from './locks.js';
import { newRunId, quoteIdent } from './names.js';
import { type ServerControl, startTestServer, type TestServer } from './server.js';
import { acquireTemplate, hashFolder, releaseTemplate, templateName } from './template.js';
import { removeLeftoverServers } from './throwaway-dirs.js';

export interface TestPostgresOptions {
  /** Applies the migrations to the database at `url` (the template). */
  migrate: (url: string) => Promise<unknown>;
  /** Its files key the template: change one and the template is rebuilt. */
  migrationsFolder?: string;
  /** More text for the template key, e.g. when `migrate` has no folder. */
  templateKey?: string;
  /** First part of every database name. Default `bragdoc_test`. Lowercase letters, digits, `_`. */
  prefix?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
  /** Settings of a server the run starts itself (embedded); ignored for others. */
  serverSettings?: Record<string, string>;
}

export interface TestPostgres {
  context: TestPostgresContext;
  server: TestServer;
  timings: { serverMs: number; templateMs: number; templateBuilt: boolean };
  /** Leftovers of earlier runs removed at start (clusters and databases). */
  removed: string[];
  createDatabase: (options?: CreateTestDatabaseOptions) => Promise<TestDatabase>;
  /** Drops every database of the run (but kept ones), releases the template, stops the server. */
  teardown: () => Promise<void>;
}

/**
 * One test run's PostgreSQL: a server from the first provider that works, leftovers of
 * crashed runs removed, and a migrated template shared by every database of the run.
 */
export async function startTestPostgres(options: TestPostgresOptions): Promise<TestPostgres> {
  const env = options.env ?? process.env;
  const log = options.log ?? ((line: string) => console.log(line));
  const prefix = options.prefix ?? 'bragdoc_test';
  if (!/^[a-z][a-z0-9_]{0,24}$/.test(prefix)) {
    throw new Error(
      `prefix "${prefix}" must be 1–25 lowercase letters, digits or _, starting with a letter.`,
    );
  }
  const removed = await removeLeftoverServers();

  const serverStarted = performance.now();
  const server = await startTestServer(
    env,
    options.serverSettings ? { settings: options.serverSettings } : {},
  );
  const serverMs = performance.now() - serverStarted;

  const runId = newRunId();
  const run = `${prefix}_r${runId}`;
  const template = templateName(prefix, [
    options.migrationsFolder ? hashFolder(options.migrationsFolder) : '',
    options.templateKey ?? '',
    server.version,
  ]);
  // This session holds the run's advisory locks: it must never be recycled (max_lifetime)
  // or closed when idle, or another run would take this run's databases for leftovers.
  const admin = postgres(server.url, {
    max: 1,
    max_lifetime: null,
    idle_timeout: 0,
    onnotice: () => {},
  });
  let templateHeld = false;

  const teardown = async () => {
    const kept: { datname: string; note: string }[] = [];
    try {
      const databases = await admin<{ datname: string; note: string | null }[]>`
        select datname, shobj_description(oid, 'pg_database') as note
        from pg_database where starts_with(datname, ${`${run}_`})`;
      for (const { datname, note } of databases) {
        if (note?.startsWith(KEPT_MARK)) kept.push({ datname, note });
        else await admin.unsafe(`drop database if exists ${quoteIdent(datname)} with (force)`);
      }
      if (templateHeld) await releaseTemplate(admin, template);
    } finally {
      await admin.end();
      if (kept.length > 0 && server.provider !== 'url') {
        const howToStop = server.detach?.();
        log(
          howToStop
            ? `test-postgres: the server stays up for the kept database(s); stop it with: ${howToStop}`
            : `test-postgres: the ${server.provider} server cannot outlive the run; use TEST_DATABASE_URL or the embedded provider to keep databases.`,
        );
        if (!howToStop) await server.stop();
      } else {
        await server.stop();
      }
    }
  };

  try {
    await lock(admin, LockClass.RUN, run);
    removed.push(...(await removeLeftoverDatabases(admin, prefix, { run, template })));
    const templateStarted = performance.now();
    const acquired = await acquireTemplate(admin, {
      name: template,
      serverUrl: server.url,
      buildSuffix: runId,
      migrate: options.migrate,
    });
    templateHeld = true;
    const templateMs = performance.now() - templateStarted;
    const context: TestPostgresContext = {
      provider: server.provider,
      version: server.version,
      serverUrl: server.url,
      template,
      runPrefix: `${run}_`,
      ...(server.provider !== 'url' && Number.parseInt(server.version, 10) >= 15
        ? { cloneStrategy: 'file_copy' as const }
        : {}),
      keepFailed: ['1', 'true', 'yes'].includes(
        (env.TEST_POSTGRES_KEEP_FAILED ?? '').toLowerCase(),
      ),
    };
    return {
      context,
      server,
      timings: { serverMs, templateMs, templateBuilt: acquired.built },
      removed,
      createDatabase: (createOptions) => cloneDatabase(admin, context, createOptions),
      // Ending the admin session also releases the RUN lock.
      teardown,
    };
  } catch (error) {
    await teardown().catch(() => {});
    throw error;
  }
}

export interface PrivateTestPostgres extends TestPostgres {
  /** Shut down, start or restart the server: it is this caller's alone. */
  control: ServerControl;
}

/**
 * An embedded server of the caller's own, whatever TEST_DATABASE_URL or a container runtime
 * offers, with the same template and databases as startTestPostgres: for tests that restart
 * or stop their server, which must never happen to a server that other test files (or other
 * runs) use at the same time. About half a second to start; `teardown()` stops it.
 */
export async function startPrivateTestPostgres(
  options: Omit<TestPostgresOptions, 'env'>,
): Promise<PrivateTestPostgres> {
  const pg = await startTestPostgres({
    ...options,
    env: { TEST_POSTGRES_PROVIDER: 'embedded' },
    // A throwaway server commits asynchronously (synchronous_commit off): an immediate
    // shutdown would lose commits its clients were told of, which no real server does, and
    // a restart test would then count a charge lost that was never lost. fsync and
    // full_page_writes stay off: they matter only when the machine, not the server, crashes.
    serverSettings: { synchronous_commit: 'on', ...options.serverSettings },
  });
  const control = pg.server.control;
  if (!control) {
    await pg.teardown();
    throw new Error('The embedded provider gave no server control.');
  }
  return { ...pg, control };
}
