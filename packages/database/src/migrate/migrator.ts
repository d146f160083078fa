import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import {
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  UnknownAppliedMigrationError,
} from './errors.js';
import { type MigrationFile, readMigrations } from './migrations.js';
import { redactUrl } from './redact.js';

/** The package's generated migrations; the same relative path from `src/` and `dist/`. */
export const defaultMigrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));

// drizzle's own table, so `drizzle-kit` and drizzle's `migrate()` see the same history.
const MIGRATIONS_SCHEMA = 'drizzle';
const MIGRATIONS_TABLE = '__drizzle_migrations';

/**
 * Advisory lock key of the migrator. Advisory locks are scoped to the current database,
 * so migrators of different databases on one server never wait for each other. The key
 * fits in 32 bits, so pg_locks shows it as `objid` with `classid = 0`.
 */
export const MIGRATION_LOCK_KEY = 731_428_019;

export interface MigrateOptions {
  migrationsFolder?: string;
  /** How long to wait for another migrator's lock before giving up. Default 60 s. */
  lockTimeoutMs?: number;
  /** Receives one line per event (lock wait, each migration, summary). Default: silent. */
  log?: (line: string) => void;
}

export interface AppliedMigration {
  name: string;
  durationMs: number;
}

export interface MigrateResult {
  applied: AppliedMigration[];
  alreadyApplied: number;
  waitedForLockMs: number;
  durationMs: number;
}

export type MigrationState = 'applied' | 'pending' | 'changed';

export interface MigrationStatusEntry {
  name: string;
  file: string;
  state: MigrationState;
}

export interface MigrationStatus {
  migrations: MigrationStatusEntry[];
  /** `created_at` keys recorded in the database that no file of the folder has. */
  unknownApplied: number[];
}

interface AppliedRow {
  hash: string;
  createdAt: number;
}

type Sql = postgres.Sql;

function connect(url: string): Sql {
  return postgres(url, {
    max: 1,
    // Transaction-mode poolers (PgBouncer, Neon, Supabase) hand each transaction to any
    // backend, so a named prepared statement may not exist where the next query lands.
    prepare: false,
    onnotice: () => {},
    connection: { application_name: '@bragdoc/database migrate' },
  });
}

async function migrationsTableExists(sql: Sql | postgres.TransactionSql): Promise<boolean> {
  const [row] = await sql<{ exists: boolean }[]>`
    select to_regclass(${`${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE}`}) is not null as exists`;
  return row?.exists ?? false;
}

async function readApplied(sql: Sql | postgres.TransactionSql): Promise<AppliedRow[]> {
  if (!(await migrationsTableExists(sql))) return [];
  const rows = await sql<{ hash: string; created_at: string | null }[]>`
    select hash, created_at from ${sql(MIGRATIONS_SCHEMA)}.${sql(MIGRATIONS_TABLE)}
    order by created_at`;
  return rows.map((r) => ({ hash: r.hash, createdAt: Number(r.created_at) }));
}

function compare(files: MigrationFile[], applied: AppliedRow[]): MigrationStatus {
  const byKey = new Map(applied.map((row) => [row.createdAt, row]));
  const known = new Set(files.map((f) => f.folderMillis));
  return {
    migrations: files.map((file) => {
      const row = byKey.get(file.folderMillis);
      if (!row) return { name: file.name, file: file.file, state: 'pending' };
      return {
        name: file.name,
        file: file.file,
        state: row.hash === file.hash ? 'applied' : 'changed',
      };
    }),
    unknownApplied: applied.map((r) => r.createdAt).filter((key) => !known.has(key)),
  };
}

/** Lists applied, pending and changed migrations without taking the lock or writing. */
export async function getMigrationStatus(
  url: string,
  options: Pick<MigrateOptions, 'migrationsFolder'> = {},
): Promise<MigrationStatus> {
  const files = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
  const sql = connect(url);
  try {
    return compare(files, await readApplied(sql));
  } finally {
    await sql.end();
  }
}

/**
 * Takes the migration lock inside the transaction `tx`: a transaction-scoped advisory lock,
 * released by its COMMIT or ROLLBACK on whichever backend ran it. Through a transaction-mode
 * pooler a session lock would stay on a pooled backend after the run; this one cannot.
 * The wait is bounded with `SET LOCAL lock_timeout`, in the same transaction, so it applies
 * to the backend that waits.
 */
async function lockInTransaction(
  tx: postgres.TransactionSql,
  timeoutMs: number,
  log: (line: string) => void,
): Promise<number> {
  const [attempt] = await tx<{ locked: boolean }[]>`
    select pg_try_advisory_xact_lock(${MIGRATION_LOCK_KEY}) as locked`;
  if (attempt?.locked) return 0;

  const [holder] = await tx<{ pid: number }[]>`
    select pid from pg_locks
    where locktype = 'advisory' and classid = 0 and objid = ${MIGRATION_LOCK_KEY}
      and objsubid = 1 and granted and database = (select oid from pg_database where datname = current_database())`;
  log(
    `Another migrator${holder ? ` (backend pid ${holder.pid})` : ''} holds the migration lock; ` +
      `waiting up to ${Math.round(timeoutMs / 1000)} s for it to finish…`,
  );
  const started = performance.now();
  await tx.unsafe(`set local lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  try {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
  } catch (error) {
    // 55P03 lock_not_available: lock_timeout elapsed.
    if ((error as { code?: string }).code === '55P03') {
      throw new MigrationLockTimeoutError(Math.round(performance.now() - started));
    }
    throw error;
  }
  await tx.unsafe('set local lock_timeout to default');
  const waited = performance.now() - started;
  log(`Got the migration lock after ${Math.round(waited)} ms.`);
  return waited;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * Applies the pending migrations of a drizzle-kit folder, using drizzle's journal and
 * migrations table, but unlike drizzle's `migrate()`:
 * - holds a transaction-scoped advisory lock, so concurrent runs apply each migration once,
 *   also through a transaction-mode pooler;
 * - refuses to run when an applied migration's file changed since (hash mismatch);
 * - applies every pending migration in one transaction and names the failing statement;
 * - reports each migration with its duration, never printing the URL's password.
 */
export async function migrate(url: string, options: MigrateOptions = {}): Promise<MigrateResult> {
  const log = options.log ?? (() => {});
  const started = performance.now();
  const files = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
  const target = redactUrl(url);
  const sql = connect(url);
  try {
    let waitedForLockMs = 0;
    let alreadyApplied = 0;
    const applied: AppliedMigration[] = [];
    // One transaction holds the lock, reads what is applied, checks it and applies every
    // pending migration: nothing outlives it, so a pooler may run it on any backend.
    await sql.begin(async (tx) => {
      waitedForLockMs = await lockInTransaction(tx, options.lockTimeoutMs ?? 60_000, log);
      const appliedRows = await readApplied(tx);
      const status = compare(files, appliedRows);
      if (status.unknownApplied.length > 0) {
        throw new UnknownAppliedMigrationError(status.unknownApplied);
      }
      for (const file of files) {
        const row = appliedRows.find((r) => r.createdAt === file.folderMillis);
        if (row && row.hash !== file.hash) {
          throw new MigrationChecksumMismatchError(file.name, file.file, row.hash, file.hash);
        }
      }
      const pendingNames = new Set(
        status.migrations.filter((m) => m.state === 'pending').map((m) => m.name),
      );
      const pending = files.filter((f) => pendingNames.has(f.name));
      alreadyApplied = files.length - pending.length;
      if (pending.length === 0) return;

      log(`Applying ${plural(pending.length, 'migration')} to ${target}`);
      // The bookkeeping table is created in the same transaction, so a failed run leaves
      // the database exactly as it was.
      await tx`create schema if not exists ${tx(MIGRATIONS_SCHEMA)}`;
      await tx`
        create table if not exists ${tx(MIGRATIONS_SCHEMA)}.${tx(MIGRATIONS_TABLE)} (
          id serial primary key,
          hash text not null,
          created_at bigint
        )`;
      for (const migration of pending) {
        const migrationStarted = performance.now();
        for (const statement of migration.statements) {
          try {
            await tx.unsafe(statement);
          } catch (error) {
            throw new MigrationFailedError(
              migration.name,
              statement,
              (error as { code?: string }).code,
              error,
            );
          }
        }
        await tx`
          insert into ${tx(MIGRATIONS_SCHEMA)}.${tx(MIGRATIONS_TABLE)} (hash, created_at)
          values (${migration.hash}, ${migration.folderMillis})`;
        const durationMs = performance.now() - migrationStarted;
        applied.push({ name: migration.name, durationMs });
        log(`  ✓ ${migration.name} (${durationMs.toFixed(1)} ms)`);
      }
    });

    const durationMs = performance.now() - started;
    log(
      applied.length > 0
        ? `Applied ${plural(applied.length, 'migration')} to ${target} in ${Math.round(durationMs)} ms ` +
            `(${alreadyApplied} already applied).`
        : `Nothing to migrate: ${target} has all ${plural(alreadyApplied, 'migration')} ` +
            `(checked in ${Math.round(durationMs)} ms).`,
    );
    return { applied, alreadyApplied, waitedForLockMs, durationMs };
  } finally {
    await sql.end();
  }
}
