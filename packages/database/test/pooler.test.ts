import {
  createTestDatabase,
  findPgBouncer,
  type PgBouncer,
  startPgBouncer,
  type TestDatabase,
  withSql,
} from '@bragdoc/test-postgres';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { adopt, migrate, readMigrations } from '../src/migrate/index.js';
import { fillSeedDatabase, SEED_SCHEMA } from './adopt/seed-database.js';
import { MigrationsFolder } from './migrations-folder.js';
import { runScript } from './run-script.js';

const cli = 'scripts/cli.ts';
const pgbouncer = findPgBouncer();
if ('missing' in pgbouncer) console.log(`pooler.test.ts skipped: ${pgbouncer.missing}`);

let bouncer: PgBouncer;
let database: TestDatabase;
let folder: MigrationsFolder;

describe.skipIf('missing' in pgbouncer)('db:migrate through a transaction-mode PgBouncer', () => {
  beforeAll(async () => {
    bouncer = await startPgBouncer({ serverUrl: inject('testPostgres').serverUrl });
  });
  afterAll(async () => {
    await bouncer?.stop();
  });
  beforeEach(async () => {
    database = await createTestDatabase({ empty: true });
    folder = new MigrationsFolder();
  });
  afterEach(async () => {
    folder.remove();
    await database.close();
  });

  const advisoryLocks = () =>
    withSql(
      database.url,
      async (sql) =>
        (
          await sql<{ n: number }[]>`
          select count(*)::int as n from pg_locks where locktype = 'advisory'
            and database = (select oid from pg_database where datname = current_database())`
        )[0]?.n,
    );

  it('four concurrent pooled runs, then a direct one: all exit 0, each migration applied once, no advisory lock left', async () => {
    const pooled = bouncer.pooledUrl(database.url);
    // In one process, so the four start within a millisecond of each other (four CLI
    // processes start hundreds of milliseconds apart and would rarely overlap).
    const runs = await Promise.all(
      [1, 2, 3, 4].map(() =>
        migrate(pooled, { migrationsFolder: folder.dir, lockTimeoutMs: 20_000 }).then(
          () => ({ code: 0, stderr: '' }),
          (error: unknown) => ({ code: 1, stderr: String(error) }),
        ),
      ),
    );
    const direct = await runScript(cli, ['migrate', '--migrations', folder.dir], {
      env: { DATABASE_URL: database.url },
    });
    expect(
      runs.map((r) => r.code),
      runs.map((r) => r.stderr).join('\n'),
    ).toEqual([0, 0, 0, 0]);
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.stdout).toContain('Nothing to migrate');

    const expected = readMigrations(folder.dir).map((m) => String(m.folderMillis));
    const applied = await withSql(
      database.url,
      (sql) =>
        sql<
          { created_at: string }[]
        >`select created_at from drizzle.__drizzle_migrations order by id`,
    );
    expect(applied.map((r) => String(r.created_at))).toEqual(expected);
    expect(await advisoryLocks()).toBe(0);
  });

  it('a pooled run leaves no lock behind: the next direct run applies a new migration at once', async () => {
    const pooled = bouncer.pooledUrl(database.url);
    expect(
      (
        await runScript(cli, ['migrate', '--migrations', folder.dir], {
          env: { DATABASE_URL: pooled },
        })
      ).code,
    ).toBe(0);
    folder.add('nickname', ['ALTER TABLE "User" ADD COLUMN "nickname" text']);
    const direct = await runScript(
      cli,
      ['migrate', '--migrations', folder.dir, '--lock-timeout', '2000'],
      { env: { DATABASE_URL: database.url } },
    );
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.stdout).not.toContain('holds the migration lock');
    expect(direct.stdout).toMatch(/Applied 1 migration to/);
  });

  it('refuses a no-transaction migration through the pooler in one line naming DATABASE_URL_UNPOOLED, after applying the ones before it', async () => {
    const pooled = bouncer.pooledUrl(database.url);
    const index = folder.add('user_name_idx', [
      'CREATE INDEX CONCURRENTLY "user_name_idx" ON "User" ("name")',
    ]);
    const result = await runScript(cli, ['migrate', '--migrations', folder.dir], {
      env: { DATABASE_URL: pooled },
    });
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        new RegExp(
          `^✗ Migration ${index} must run outside a transaction \\(CREATE INDEX CONCURRENTLY\\), .* transaction-mode pooler\\. Nothing of it was applied\\. Set DATABASE_URL_UNPOOLED .*\\[MIGRATION_NEEDS_DIRECT_CONNECTION\\]$`,
        ),
      ),
    ]);
    const direct = await runScript(cli, ['migrate', '--migrations', folder.dir], {
      env: { DATABASE_URL: pooled, DATABASE_URL_UNPOOLED: database.url },
    });
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.stdout).toMatch(/Applied 1 migration to/);
  });

  it('db:adopt, then db:migrate, through the pooler: a seed-built database is taken over once, and a second adoption does nothing', async () => {
    await withSql(database.url, async (sql) => {
      await sql.unsafe(SEED_SCHEMA);
      await fillSeedDatabase(sql, { users: 20, logRows: 300 });
    });
    const pooled = bouncer.pooledUrl(database.url);
    const first = await adopt(pooled, { migrationsFolder: folder.dir });
    expect(first.adopted).toBe(true);
    await migrate(pooled, { migrationsFolder: folder.dir });
    const second = await adopt(pooled, { migrationsFolder: folder.dir });
    expect(second.adopted).toBe(false);
    const verified = await runScript('scripts/credits-verify.ts', [], {
      env: { DATABASE_URL: database.url },
    });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  }, 60_000);
});
