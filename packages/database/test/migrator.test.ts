import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import { migrate as drizzleMigrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../src/client.js';
import {
  defaultMigrationsFolder,
  getMigrationStatus,
  MIGRATION_LOCK_KEY,
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  migrate,
  readMigrations,
} from '../src/migrate/index.js';
import { MigrationsFolder } from './migrations-folder.js';
import { passwordRole } from './support.js';

const INIT = readMigrations(defaultMigrationsFolder).map((m) => m.name);

let database: TestDatabase;
let folder: MigrationsFolder;
let sql: postgres.Sql;
// Run after the test's database is dropped (roles that owned it).
let afterDrop: (() => Promise<void>)[] = [];

beforeEach(async () => {
  database = await createTestDatabase({ empty: true });
  folder = new MigrationsFolder();
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
});
afterEach(async () => {
  await sql.end();
  folder.remove();
  await database.close();
  for (const cleanup of afterDrop) await cleanup();
  afterDrop = [];
});

const applied = async () => {
  const [exists] = await sql`select to_regclass('drizzle.__drizzle_migrations') is not null as e`;
  if (!exists?.e) return [];
  return (
    await sql`select hash, created_at from drizzle.__drizzle_migrations order by created_at`
  ).map((r) => ({ hash: r.hash as string, createdAt: Number(r.created_at) }));
};

/** Every user relation, type and migration row: what "the database as it was" means here. */
const fingerprint = async () => ({
  relations: (
    await sql`select n.nspname || '.' || c.relname as name from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') order by 1`
  ).map((r) => r.name as string),
  types: (
    await sql`select typname from pg_type where typnamespace = 'public'::regnamespace order by 1`
  ).map((r) => r.typname as string),
  migrations: await applied(),
});

describe('migrate()', () => {
  it("applies every migration to an empty database and records each in drizzle's table", async () => {
    const result = await migrate(database.url, { migrationsFolder: folder.dir });
    expect(result.applied.map((m) => m.name)).toEqual(INIT);
    expect((await applied()).map((m) => m.hash)).toEqual(
      readMigrations(folder.dir).map((m) => m.hash),
    );
  });

  it("leaves nothing for drizzle's own migrate() to apply (same journal and table)", async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    const before = await applied();
    const handle = createDatabase(database.url, { max: 1 });
    await drizzleMigrate(handle.db, { migrationsFolder: folder.dir });
    await handle.close();
    expect(await applied()).toEqual(before);
  });

  it('run a second time, applies nothing and says so', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    const lines: string[] = [];
    const result = await migrate(database.url, {
      migrationsFolder: folder.dir,
      log: (l) => lines.push(l),
    });
    expect(result.applied).toEqual([]);
    expect(result.alreadyApplied).toBe(INIT.length);
    expect(lines.at(-1)).toMatch(
      new RegExp(`^Nothing to migrate: .* has all ${INIT.length} migrations`),
    );
  });

  it('prints each migration it applies with its duration, then a one-line summary', async () => {
    const lines: string[] = [];
    await migrate(database.url, { migrationsFolder: folder.dir, log: (l) => lines.push(l) });
    expect(lines).toHaveLength(INIT.length + 2);
    expect(lines[0]).toMatch(new RegExp(`^Applying ${INIT.length} migrations to postgres://`));
    for (const [i, name] of INIT.entries()) {
      expect(lines[i + 1]).toMatch(new RegExp(`^ {2}✓ ${name} \\(\\d+\\.\\d ms\\)$`));
    }
    expect(lines.at(-1)).toMatch(
      new RegExp(`^Applied ${INIT.length} migrations to .* in \\d+ ms \\(0 already applied\\)\\.$`),
    );
  });

  it('never prints the password of the connection URL', async () => {
    const role = await passwordRole(database.url, inject('testPostgres').serverUrl);
    afterDrop.push(role.drop);
    const lines: string[] = [];
    await migrate(role.url, { migrationsFolder: folder.dir, log: (l) => lines.push(l) });
    await migrate(role.url, { migrationsFolder: folder.dir, log: (l) => lines.push(l) });
    expect(lines.join('\n')).toContain('***');
    expect(lines.join('\n')).not.toContain(role.password);
  });

  it('two migrators started at once both succeed and apply each migration once', async () => {
    const [a, b] = await Promise.all([
      migrate(database.url, { migrationsFolder: folder.dir }),
      migrate(database.url, { migrationsFolder: folder.dir }),
    ]);
    expect([...a.applied, ...b.applied].map((m) => m.name)).toEqual(INIT);
    expect(await applied()).toHaveLength(INIT.length);
  });

  it('a second migrator waits for the lock, says so, then finds nothing to do', async () => {
    const holder = postgres(database.url, { max: 1 });
    await holder`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    const lines: string[] = [];
    const waiting = migrate(database.url, {
      migrationsFolder: folder.dir,
      log: (l) => lines.push(l),
    });
    await expect
      .poll(() => lines[0], { timeout: 5000 })
      .toMatch(/holds the migration lock; waiting up to 60 s/);
    // While it waits, another migrator (drizzle's own, which takes no lock) does the work.
    const other = createDatabase(database.url, { max: 1 });
    await drizzleMigrate(other.db, { migrationsFolder: folder.dir });
    await other.close();
    await holder`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    await holder.end();

    const result = await waiting;
    expect(result.applied).toEqual([]);
    expect(result.waitedForLockMs).toBeGreaterThan(0);
    expect(lines.at(-1)).toMatch(/^Nothing to migrate/);
  });

  it('gives up waiting after lockTimeoutMs with MigrationLockTimeoutError and applies nothing', async () => {
    const holder = postgres(database.url, { max: 1 });
    await holder`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    try {
      const error = await migrate(database.url, {
        migrationsFolder: folder.dir,
        lockTimeoutMs: 300,
      }).catch((e) => e);
      expect(error).toBeInstanceOf(MigrationLockTimeoutError);
      expect(error.code).toBe('MIGRATION_LOCK_TIMEOUT');
      expect(await applied()).toEqual([]);
    } finally {
      await holder.end();
    }
  });

  it('refuses an applied migration whose file changed since, naming the file, and applies nothing', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    folder.edit('0000_init', '\n-- edited after it was applied\n');
    folder.add('add_nickname', ['ALTER TABLE "User" ADD COLUMN "nickname" text']);
    const before = await fingerprint();

    const error = await migrate(database.url, { migrationsFolder: folder.dir }).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationChecksumMismatchError);
    expect(error.code).toBe('MIGRATION_CHECKSUM_MISMATCH');
    expect(error.migration).toBe('0000_init');
    expect(error.message).toContain(`${folder.dir}/0000_init.sql`);
    expect(await fingerprint()).toEqual(before);
  });

  it('a failing migration names itself, the SQL error and the statement, and rolls back the whole run', async () => {
    folder.add('good', ['CREATE TABLE "Good" ("id" integer)']);
    const broken = folder.add('broken', [
      'CREATE TABLE "AlsoGood" ("id" integer)',
      'ALTER TABLE "Missing" ADD COLUMN "x" integer',
    ]);
    const before = await fingerprint();

    const error = await migrate(database.url, { migrationsFolder: folder.dir }).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationFailedError);
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(error.migration).toBe(broken);
    expect(error.statement).toBe('ALTER TABLE "Missing" ADD COLUMN "x" integer');
    expect(error.sqlState).toBe('42P01');
    expect(error.message).toContain('relation "Missing" does not exist');
    expect(await fingerprint()).toEqual(before);
  });

  it('a failing migration after applied ones leaves the applied ones as they were', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    folder.add('broken', ['CREATE TABLE "User" ("id" integer)']);
    const before = await fingerprint();
    const error = await migrate(database.url, { migrationsFolder: folder.dir }).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationFailedError);
    expect(error.sqlState).toBe('42P07');
    expect(await fingerprint()).toEqual(before);
  });
});

describe('getMigrationStatus()', () => {
  it('lists applied, pending and changed migrations without writing', async () => {
    const before = await getMigrationStatus(database.url, { migrationsFolder: folder.dir });
    expect(before.migrations.map((m) => m.state)).toEqual(INIT.map(() => 'pending'));
    await migrate(database.url, { migrationsFolder: folder.dir });
    const next = folder.add('next', ['SELECT 1']);
    const status = await getMigrationStatus(database.url, { migrationsFolder: folder.dir });
    expect(status.migrations.map((m) => [m.name, m.state])).toEqual([
      ...INIT.map((name) => [name, 'applied']),
      [next, 'pending'],
    ]);
    folder.edit('0000_init', '\n-- changed');
    const changed = await getMigrationStatus(database.url, { migrationsFolder: folder.dir });
    expect(changed.migrations[0]?.state).toBe('changed');
    expect(await applied()).toHaveLength(INIT.length);
  });
});
