import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  createTestDatabase,
  freePort,
  isPortFree,
  type TestDatabase,
  throwawayBase,
  withSql,
} from '@bragdoc/test-postgres';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { MigrationsFolder } from './migrations-folder.js';
import { runScript, startScript } from './run-script.js';
import { passwordRole } from './support.js';

const cli = 'scripts/cli.ts';

let database: TestDatabase;
let folder: MigrationsFolder;
// Run after the test's database is dropped (roles that owned it).
let afterDrop: (() => Promise<void>)[] = [];

beforeEach(async () => {
  database = await createTestDatabase({ empty: true });
  folder = new MigrationsFolder();
});
afterEach(async () => {
  folder.remove();
  await database.close();
  for (const cleanup of afterDrop) await cleanup();
  afterDrop = [];
});

/**
 * A data directory and a port of the test's own for the local embedded server. CI=false
 * is not CI (some services set it so): the local server is still used.
 */
async function localServerEnv() {
  // Where the harness puts its own throwaway clusters: a tmpfs when there is a large one.
  const dir = mkdtempSync(path.join(throwawayBase(), 'bragdoc-cli-test-'));
  // As root the server runs as `postgres`, which must enter it.
  chmodSync(dir, 0o755);
  afterDrop.push(async () => rmSync(dir, { recursive: true, force: true }));
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  return {
    dataDir,
    port,
    env: { LOCAL_POSTGRES_DIR: dataDir, LOCAL_POSTGRES_PORT: String(port), CI: 'false' },
  };
}

/** Tables in the database, drizzle's bookkeeping included: none means untouched. */
function tablesOf(url: string): Promise<string[]> {
  return withSql(url, async (sql) =>
    (
      await sql<{ name: string }[]>`
        select table_schema || '.' || table_name as name from information_schema.tables
        where table_schema not in ('pg_catalog', 'information_schema') order by 1`
    ).map((r) => r.name),
  );
}

describe('pnpm db:migrate', () => {
  it('migrates DATABASE_URL, printing each migration and a summary but never the password', async () => {
    const role = await passwordRole(database.url, inject('testPostgres').serverUrl);
    afterDrop.push(role.drop);
    const first = await runScript(cli, ['migrate'], { env: { DATABASE_URL: role.url } });
    expect(first.code).toBe(0);
    const user = new URL(role.url).username;
    expect(first.stdout).toMatch(
      new RegExp(`Database: postgres://${user}:\\*\\*\\*@[^/]+/\\S+ \\(DATABASE_URL\\)`),
    );
    expect(first.stdout).toMatch(/✓ 0000_init \(\d+\.\d ms\)/);
    expect(first.stdout).toMatch(/Applied \d+ migrations to .* in \d+ ms/);

    const second = await runScript(cli, ['migrate'], { env: { DATABASE_URL: role.url } });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/Nothing to migrate/);
    expect(first.stdout + first.stderr + second.stdout + second.stderr).not.toContain(
      role.password,
    );
  });

  it('prefers DATABASE_URL_UNPOOLED, then POSTGRES_URL_NON_POOLING, over DATABASE_URL, naming the one used without its password', async () => {
    const role = await passwordRole(database.url, inject('testPostgres').serverUrl);
    afterDrop.push(role.drop);
    // A pooled URL that would fail if used: nothing listens on port 1.
    const pooled = 'postgres://app:pooled-secret@127.0.0.1:1/db';
    const unpooled = await runScript(cli, ['migrate'], {
      env: { DATABASE_URL: pooled, DATABASE_URL_UNPOOLED: role.url },
    });
    expect(unpooled.code, unpooled.stderr).toBe(0);
    expect(unpooled.stdout).toMatch(
      /Database: postgres:\/\/\w+:\*\*\*@\S+ \(DATABASE_URL_UNPOOLED\)/,
    );
    const nonPooling = await runScript(cli, ['status'], {
      env: { DATABASE_URL: pooled, POSTGRES_URL_NON_POOLING: role.url },
    });
    expect(nonPooling.code, nonPooling.stderr).toBe(0);
    expect(nonPooling.stdout).toMatch(/\(POSTGRES_URL_NON_POOLING\)/);
    const output = unpooled.stdout + unpooled.stderr + nonPooling.stdout + nonPooling.stderr;
    expect(output).not.toContain(role.password);
    expect(output).not.toContain('pooled-secret');
  });

  it('in CI without DATABASE_URL exits 1 saying DATABASE_URL is required', async () => {
    const result = await runScript(cli, ['migrate'], { env: { CI: 'true' } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('DATABASE_URL is required when CI is set');
    expect(result.stderr).toContain('[DATABASE_URL_REQUIRED]');
  });

  it('exits 1 on a failing migration, printing its name, the SQL error and the statement', async () => {
    const broken = folder.add('broken', ['ALTER TABLE "Nope" ADD COLUMN "x" integer']);
    const result = await runScript(cli, ['migrate', '--migrations', folder.dir], {
      env: { DATABASE_URL: database.url },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `Migration ${broken} failed: relation "Nope" does not exist (SQLSTATE 42P01)`,
    );
    expect(result.stderr).toContain('ALTER TABLE "Nope" ADD COLUMN "x" integer');
    expect(result.stderr).toContain('rolled back');
  });

  it('exits 1 naming the file when an applied migration was edited', async () => {
    const env = { DATABASE_URL: database.url };
    expect((await runScript(cli, ['migrate', '--migrations', folder.dir], { env })).code).toBe(0);
    folder.edit('0000_init', '\n-- edited');
    const result = await runScript(cli, ['migrate', '--migrations', folder.dir], { env });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(path.join(folder.dir, '0000_init.sql'));
    expect(result.stderr).toContain('[MIGRATION_CHECKSUM_MISMATCH]');
  });

  it('without DATABASE_URL outside CI (CI unset or false) starts an embedded PostgreSQL, migrates it, prints its URL and stops it', async () => {
    const { env, port } = await localServerEnv();
    const first = await runScript(cli, ['migrate'], { env });
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/Started embedded PostgreSQL 17 in \d+ ms \(new data directory/);
    expect(first.stdout).toContain(
      `Database: postgres://postgres@127.0.0.1:${port}/bragdoc (local server (started))`,
    );
    expect(first.stdout).toMatch(/Applied \d+ migrations/);

    // The data persists: a second run starts the same cluster and finds nothing to do.
    const second = await runScript(cli, ['migrate'], { env });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/\(existing data/);
    expect(second.stdout).toMatch(/Nothing to migrate/);
    // Stopped: nothing listens on the port any more.
    expect(await isPortFree(port)).toBe(true);
  });
});

describe('pnpm db:studio', () => {
  it('never migrates DATABASE_URL unprompted: it says how many migrations are pending and leaves them', async () => {
    const result = await runScript(cli, ['studio', '--prepare-only'], {
      env: { DATABASE_URL: database.url },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(
      /Not migrating DATABASE_URL \(\d+ pending migrations\); pass --migrate to apply them first\./,
    );
    expect(result.stdout).toContain('--prepare-only: not opening studio.');
    expect(await tablesOf(database.url)).toEqual([]);
  });

  it('migrates DATABASE_URL first when asked with --migrate', async () => {
    const result = await runScript(cli, ['studio', '--migrate', '--prepare-only'], {
      env: { DATABASE_URL: database.url },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Migrating DATABASE_URL before opening studio (--migrate):');
    expect(result.stdout).toMatch(/Applied \d+ migrations/);
    expect(await tablesOf(database.url)).toContain('drizzle.__drizzle_migrations');
  });

  it('without DATABASE_URL migrates the local embedded server, saying so, and stops it after', async () => {
    const { env, port } = await localServerEnv();
    const result = await runScript(cli, ['studio', '--prepare-only'], { env });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('(local server (started))');
    expect(result.stdout).toContain(
      'Migrating the local embedded PostgreSQL before opening studio:',
    );
    expect(result.stdout).toMatch(/Applied \d+ migrations/);
    expect(await isPortFree(port)).toBe(true);
  });
});

describe('pnpm db:dev', () => {
  it('refuses in one line when DATABASE_URL is set, and touches nothing', async () => {
    const result = await runScript(cli, ['dev'], { env: { DATABASE_URL: database.url } });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        /^✗ db:dev serves only the local embedded PostgreSQL, but DATABASE_URL is set \(postgres:\/\/.*\); unset it to run the local server, or use pnpm db:migrate \/ db:studio on that database\.$/,
      ),
    ]);
    expect(await tablesOf(database.url)).toEqual([]);
  });

  it('starts the local embedded server, migrates it saying so, keeps it running, and stops it on Ctrl-C', async () => {
    const { env, port } = await localServerEnv();
    const dev = startScript(cli, ['dev'], { env });
    try {
      await dev.printed('Press Ctrl-C to stop it.');
      expect(dev.output()).toContain(
        'Migrating the local embedded PostgreSQL (db:dev keeps it up to date):',
      );
      const url = `postgres://postgres@127.0.0.1:${port}/bragdoc`;
      expect(dev.output()).toContain(`Local PostgreSQL is running: DATABASE_URL=${url}`);
      expect(await tablesOf(url)).toContain('drizzle.__drizzle_migrations');
    } finally {
      dev.child.kill('SIGINT');
    }
    expect(await dev.exited).toBe(0);
    expect(await isPortFree(port)).toBe(true);
  });
});

describe('pnpm db:status', () => {
  it('lists applied and pending migrations', async () => {
    const env = { DATABASE_URL: database.url };
    await runScript(cli, ['migrate'], { env });
    const next = folder.add('next', ['SELECT 1']);
    const result = await runScript(cli, ['status', '--migrations', folder.dir], { env });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/applied +0000_init/);
    expect(result.stdout).toMatch(new RegExp(`pending +${next}`));
    expect(result.stdout).toMatch(/\d+ applied, 1 pending, 0 changed, 0 unknown\./);
  });
});

describe('pnpm db:status --exit-code / --json', () => {
  it('--exit-code exits 1 while a migration is pending and 0 once none is', async () => {
    const env = { DATABASE_URL: database.url };
    const args = ['status', '--exit-code', '--migrations', folder.dir];
    const before = await runScript(cli, args, { env });
    expect(before.code).toBe(1);
    expect(before.stderr).toMatch(
      /✗ \d+ migrations are pending \(--exit-code\): run pnpm db:migrate\./,
    );
    await runScript(cli, ['migrate', '--migrations', folder.dir], { env });
    const after = await runScript(cli, args, { env });
    expect(after.code, after.stderr).toBe(0);
  });

  it('--json prints one JSON document with each state and the counts, and nothing else on stdout', async () => {
    const env = { DATABASE_URL: database.url };
    await runScript(cli, ['migrate', '--migrations', folder.dir], { env });
    const next = folder.add('next', ['SELECT 1']);
    folder.edit('0000_init', '\n-- edited');
    const result = await runScript(cli, ['status', '--json', '--migrations', folder.dir], { env });
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout);
    expect(report.source).toBe('DATABASE_URL');
    expect(report.ok).toBe(false);
    expect(report.counts).toMatchObject({ pending: 1, changed: 1, unknown: 0 });
    expect(report.migrations[0]).toEqual({ name: '0000_init', state: 'changed' });
    expect(report.migrations.at(-1)).toEqual({ name: next, state: 'pending' });
    expect(result.stderr).toContain('Database: ');
  });
});
