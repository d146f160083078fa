import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  MigrationFailedError,
  migrate,
  NonTransactionalMigrationFailedError,
  readMigrations,
} from '../src/migrate/index.js';
import { MigrationsFolder } from './migrations-folder.js';
import { holdInTransaction } from './support.js';

let database: TestDatabase;
let folder: MigrationsFolder;
let sql: postgres.Sql;
let lines: string[];

beforeEach(async () => {
  database = await createTestDatabase({ empty: true });
  folder = new MigrationsFolder();
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
  lines = [];
});
afterEach(async () => {
  await sql.end();
  folder.remove();
  await database.close();
});

const run = (options: Parameters<typeof migrate>[1] = {}) =>
  migrate(database.url, { migrationsFolder: folder.dir, log: (l) => lines.push(l), ...options });

const appliedNames = async () => {
  const rows = await sql`select created_at from drizzle.__drizzle_migrations order by id`;
  const byKey = new Map(readMigrations(folder.dir).map((m) => [String(m.folderMillis), m.name]));
  return rows.map((r) => byKey.get(String(r.created_at)));
};

const indexState = async (name: string) => {
  const [row] = await sql`
    select i.indisvalid as valid from pg_index i where i.indexrelid = to_regclass(${name})`;
  return row ? (row.valid ? 'valid' : 'invalid') : 'missing';
};

describe('per-migration transaction mode', () => {
  it('runs CREATE INDEX CONCURRENTLY outside a transaction, after committing the migrations before it', async () => {
    const table = folder.add('note', ['CREATE TABLE "Note" ("id" integer, "body" text)']);
    const index = folder.add('note_body_idx', [
      'CREATE INDEX CONCURRENTLY "note_body_idx" ON "Note" ("body")',
    ]);
    const after = folder.add('note_title', ['ALTER TABLE "Note" ADD COLUMN "title" text']);
    const result = await run();
    expect(result.applied.map((m) => [m.name, m.mode]).slice(-3)).toEqual([
      [table, 'transaction'],
      [index, 'no-transaction'],
      [after, 'transaction'],
    ]);
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(`✓ ${index} \\(.* ms, outside a transaction: CREATE INDEX CONCURRENTLY\\)`),
      ),
    );
    expect(await indexState('note_body_idx')).toBe('valid');
    expect((await appliedNames()).slice(-3)).toEqual([table, index, after]);
  });

  it('a first-line "-- migrate: no-transaction" marker runs each statement on its own: a failure keeps the ones before it', async () => {
    const marked = folder.add('marked', [
      '-- migrate: no-transaction\nCREATE TABLE "Kept" ("id" integer)',
      'ALTER TABLE "Missing" ADD COLUMN "x" integer',
    ]);
    const error = await run().catch((e) => e);
    expect(error).toBeInstanceOf(NonTransactionalMigrationFailedError);
    expect(error.migration).toBe(marked);
    expect(error.message).toContain('1 of its 2 statements had completed and stay committed');
    expect(error.message).toContain('it is not recorded as applied');
    const [kept] = await sql`select to_regclass('"Kept"') is not null as exists`;
    expect(kept?.exists).toBe(true);
    // The migrations before it were committed first, and stay.
    expect(await appliedNames()).toHaveLength(readMigrations(folder.dir).length - 1);
  });

  it('adds an enum value and uses it in a later pending migration of the same run', async () => {
    const adds = folder.add('feature_summary', [
      `ALTER TYPE "public"."feature_type" ADD VALUE 'summary'`,
    ]);
    const uses = folder.add('feature_note', [
      `CREATE TABLE "FeatureNote" ("feature" "feature_type" NOT NULL DEFAULT 'summary')`,
    ]);
    const result = await run();
    expect(result.applied.slice(-2).map((m) => [m.name, m.mode])).toEqual([
      [adds, 'own-transaction'],
      [uses, 'transaction'],
    ]);
    const [row] = await sql`select 'summary'::feature_type::text as value`;
    expect(row?.value).toBe('summary');
  });

  it('keeps an enum value in the batch when a later migration names it only inside a PL/pgSQL function body', async () => {
    const adds = folder.add('feature_digest', [
      `ALTER TYPE "public"."feature_type" ADD VALUE 'digest'`,
    ]);
    const names = folder.add('feature_is_digest', [
      `CREATE FUNCTION public.is_digest(f "feature_type") RETURNS boolean LANGUAGE plpgsql AS $$
       BEGIN RETURN f = 'digest'; END $$`,
    ]);
    const result = await run();
    expect(result.applied.slice(-2).map((m) => [m.name, m.mode])).toEqual([
      [adds, 'transaction'],
      [names, 'transaction'],
    ]);
    const [row] = await sql`select public.is_digest('digest') as yes`;
    expect(row?.yes).toBe(true);
  });

  it('still commits an enum value first when a later DO block runs code that uses it', async () => {
    const adds = folder.add('feature_brief', [
      `ALTER TYPE "public"."feature_type" ADD VALUE 'brief'`,
    ]);
    const uses = folder.add('feature_brief_check', [
      `DO $$ BEGIN PERFORM 'brief'::"feature_type"; END $$`,
    ]);
    const result = await run();
    expect(result.applied.slice(-2).map((m) => [m.name, m.mode])).toEqual([
      [adds, 'own-transaction'],
      [uses, 'transaction'],
    ]);
  });
  it('a failed CREATE INDEX CONCURRENTLY names the INVALID index it left; the rerun after the fix drops and rebuilds it', async () => {
    await run();
    await sql`create table "Dup" ("k" integer)`;
    await sql`insert into "Dup" values (1), (1)`;
    const unique = folder.add('dup_k_key', [
      'CREATE UNIQUE INDEX CONCURRENTLY "dup_k_key" ON "Dup" ("k")',
    ]);
    const error = await run().catch((e) => e);
    expect(error).toBeInstanceOf(NonTransactionalMigrationFailedError);
    expect(error.sqlState).toBe('23505');
    expect(error.invalidIndex).toBe('dup_k_key');
    expect(error.message).toContain('left the INVALID index dup_k_key');
    expect(error.message).toContain('DROP INDEX CONCURRENTLY dup_k_key');
    expect(await indexState('dup_k_key')).toBe('invalid');

    await sql`delete from "Dup" where ctid = (select max(ctid) from "Dup")`;
    lines = [];
    const rerun = await run();
    expect(rerun.applied.map((m) => m.name)).toEqual([unique]);
    expect(lines).toContainEqual(expect.stringContaining('dropping INVALID index dup_k_key'));
    expect(await indexState('dup_k_key')).toBe('valid');
  });

  it('a failing batch after a no-transaction migration rolls back only its own transaction, and says what stays applied', async () => {
    const table = folder.add('note', ['CREATE TABLE "Note" ("id" integer)']);
    const index = folder.add('note_id_idx', [
      'CREATE INDEX CONCURRENTLY "note_id_idx" ON "Note" ("id")',
    ]);
    const broken = folder.add('broken', [
      'CREATE TABLE "RolledBack" ("id" integer)',
      'ALTER TABLE "Missing" ADD COLUMN "x" integer',
    ]);
    const error = await run().catch((e) => e);
    expect(error).toBeInstanceOf(MigrationFailedError);
    expect(error.migration).toBe(broken);
    expect(error.appliedBefore).toContain(index);
    expect(error.message).toMatch(/Its transaction was rolled back; .* stay applied\./);
    expect((await appliedNames()).slice(-2)).toEqual([table, index]);
    const [rolledBack] = await sql`select to_regclass('"RolledBack"') is not null as exists`;
    expect(rolledBack?.exists).toBe(false);
  });
});

describe('lock and statement timeouts', () => {
  /** Holds ACCESS EXCLUSIVE on "User" in an open transaction until `release()`. */
  const holdUserTable = () =>
    holdInTransaction(database.url, (tx) => tx`lock table "User" in access exclusive mode`);

  it('retries a migration whose statement hit the lock timeout, printing each retry, and applies it once the lock is free', async () => {
    await run();
    const nickname = folder.add('nickname', ['ALTER TABLE "User" ADD COLUMN "nickname" text']);
    const holder = await holdUserTable();
    lines = [];
    const migrating = run({ statementLockTimeoutMs: 150, lockRetries: 5, lockRetryDelayMs: 100 });
    await expect.poll(() => lines.some((l) => l.includes('↻')), { timeout: 5000 }).toBe(true);
    await holder.release();
    const result = await migrating;
    expect(result.applied.map((m) => m.name)).toEqual([nickname]);
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `↻ ${nickname}: lock_timeout \\(150 ms\\) waiting for a lock; rolled back, retry 1 of 5 in 0\\.1 s`,
        ),
      ),
    );
  });

  it('gives up after the last retry with SQLSTATE 55P03, saying what to look for, and applies nothing', async () => {
    await run();
    folder.add('nickname', ['ALTER TABLE "User" ADD COLUMN "nickname" text']);
    const holder = await holdUserTable();
    try {
      const error = await run({
        statementLockTimeoutMs: 100,
        lockRetries: 2,
        lockRetryDelayMs: 20,
      }).catch((e) => e);
      expect(error).toBeInstanceOf(MigrationFailedError);
      expect(error.sqlState).toBe('55P03');
      expect(error.message).toContain('pg_stat_activity');
      expect(lines.filter((l) => l.includes('↻'))).toHaveLength(2);
    } finally {
      await holder.release();
    }
    expect(await appliedNames()).toHaveLength(readMigrations(folder.dir).length - 1);
  });

  it('stops a migration statement that runs longer than the statement timeout', async () => {
    folder.add('slow', ['SELECT pg_sleep(5)']);
    const error = await run({ statementTimeoutMs: 200 }).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationFailedError);
    expect(error.sqlState).toBe('57014');
  });
});
