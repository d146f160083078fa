import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import {
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  NonTransactionalMigrationFailedError,
  PoolerRefusesSessionSettingsError,
  UnknownAppliedMigrationError,
} from './errors.js';
import {
  enumUsingText,
  type MigrationFile,
  readMigrations,
  type TransactionMode,
  usesEnumValue,
} from './migrations.js';
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

/**
 * The migrations name tables without a schema, meaning public's: a database or role whose
 * search_path puts another schema first must not get them there. So public goes first, and
 * the rest stays (an `extensions` schema, as Supabase sets it, holds functions an app's
 * migration may call). `is_local`: for the transaction (true) or the session (false).
 */
export function publicFirst(isLocal: boolean): string {
  return `select set_config('search_path', concat_ws(', ', 'public', nullif(current_setting('search_path'), '')), ${isLocal})`;
}

export interface MigrateOptions {
  migrationsFolder?: string;
  /** How long to wait for another migrator's lock before giving up. Default 60 s. */
  lockTimeoutMs?: number;
  /**
   * `lock_timeout` of every migration statement: how long one may wait for a table lock
   * (behind a long ledger transaction, say) while every later query on that table queues
   * behind it. Default 5 s; 0 waits for ever.
   */
  statementLockTimeoutMs?: number;
  /** `statement_timeout` of every migration statement. Default 10 min; 0 for none. */
  statementTimeoutMs?: number;
  /** How many times a migration whose statement hit the lock timeout is tried again. Default 3. */
  lockRetries?: number;
  /** Wait before the first retry; it doubles at each one. Default 1 s. */
  lockRetryDelayMs?: number;
  /** Receives one line per event (lock wait, each migration, summary). Default: silent. */
  log?: (line: string) => void;
}

export interface AppliedMigration {
  name: string;
  durationMs: number;
  mode: TransactionMode;
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

export function connect(url: string, settings: Record<string, string> = {}): Sql {
  return postgres(url, {
    max: 1,
    // Transaction-mode poolers (PgBouncer, Neon, Supabase) hand each transaction to any
    // backend, so a named prepared statement may not exist where the next query lands.
    prepare: false,
    // Not read: a connection terminated while postgres.js reads the server's array types
    // (which it awaits nowhere) would end the process with an unhandled rejection (see
    // client.ts). Array parameters are sent as text and cast in the SQL.
    fetch_types: false,
    onnotice: () => {},
    // UTC, so that a migration reading a `timestamp without time zone` (an adopted app's
    // "User".created_at) reads it the same on every server, whatever its default zone.
    connection: { application_name: '@bragdoc/database migrate', TimeZone: 'UTC', ...settings },
  });
}

/**
 * Closes a connection of connect(). With a timeout: on a connection whose backend was
 * terminated (a failover, pg_terminate_backend), end() alone never settles, and the error
 * that ended the work would never reach the caller (a CLI would exit 0, saying nothing).
 */
export async function disconnect(sql: Sql): Promise<void> {
  await sql.end({ timeout: 5 });
}

async function migrationsTableExists(sql: Sql | postgres.TransactionSql): Promise<boolean> {
  const [row] = await sql<{ exists: boolean }[]>`
    select to_regclass(${`${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE}`}) is not null as exists`;
  return row?.exists ?? false;
}

export async function readApplied(sql: Sql | postgres.TransactionSql): Promise<AppliedRow[]> {
  if (!(await migrationsTableExists(sql))) return [];
  const rows = await sql<{ hash: string; created_at: string | null }[]>`
    select hash, created_at from ${sql(MIGRATIONS_SCHEMA)}.${sql(MIGRATIONS_TABLE)}
    order by created_at`;
  return rows.map((r) => ({ hash: r.hash, createdAt: Number(r.created_at) }));
}

export function compare(files: MigrationFile[], applied: AppliedRow[]): MigrationStatus {
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
    await disconnect(sql);
  }
}

/**
 * Takes the migration lock inside the transaction `tx`: a transaction-scoped advisory lock,
 * released by its COMMIT or ROLLBACK on whichever backend ran it. Through a transaction-mode
 * pooler a session lock would stay on a pooled backend after the run; this one cannot.
 * The wait is bounded with `SET LOCAL lock_timeout`, in the same transaction, so it applies
 * to the backend that waits.
 */
export async function lockInTransaction(
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

/** What one transaction of a run applies: a batch, or one migration in its own mode. */
interface Step {
  mode: TransactionMode;
  migrations: MigrationFile[];
}

/**
 * The next step of the pending migrations: every migration up to the first one that cannot
 * share the transaction (all-or-nothing, as before); that one alone when it is first.
 */
export function nextStep(pending: MigrationFile[]): Step | undefined {
  const ownMode = (index: number): TransactionMode => {
    const migration = pending[index];
    if (!migration) return 'transaction';
    if (migration.mode === 'no-transaction') return 'no-transaction';
    const later = pending.slice(index + 1).map((m) => m.statements.map(enumUsingText).join('\n'));
    const valueUsedLater = migration.enumValuesAdded.some(({ value }) =>
      later.some((sql) => usesEnumValue(sql, value)),
    );
    return valueUsedLater ? 'own-transaction' : 'transaction';
  };
  const first = pending[0];
  if (!first) return undefined;
  const mode = ownMode(0);
  if (mode !== 'transaction') return { mode, migrations: [first] };
  let end = 1;
  while (end < pending.length && ownMode(end) === 'transaction') end++;
  return { mode: 'transaction', migrations: pending.slice(0, end) };
}

const sqlStateOf = (error: unknown) => (error as { code?: string }).code;

export async function ensureBookkeeping(tx: postgres.TransactionSql): Promise<void> {
  await tx`create schema if not exists ${tx(MIGRATIONS_SCHEMA)}`;
  await tx`
    create table if not exists ${tx(MIGRATIONS_SCHEMA)}.${tx(MIGRATIONS_TABLE)} (
      id serial primary key,
      hash text not null,
      created_at bigint
    )`;
}

export async function record(tx: postgres.TransactionSql, migration: MigrationFile): Promise<void> {
  await tx`
    insert into ${tx(MIGRATIONS_SCHEMA)}.${tx(MIGRATIONS_TABLE)} (hash, created_at)
    values (${migration.hash}, ${migration.folderMillis})`;
}

/** Under the lock: refuses unknown or edited applied migrations; returns the pending ones. */
async function pendingUnderLock(
  tx: postgres.TransactionSql,
  files: MigrationFile[],
): Promise<MigrationFile[]> {
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
  return files.filter((f) => pendingNames.has(f.name));
}

const INDEX_CONCURRENTLY =
  /^create\s+(?:unique\s+)?index\s+concurrently\s+(?:if\s+not\s+exists\s+)?("(?:[^"]|"")+"|[\w$]+)/i;

/** The index a `CREATE INDEX CONCURRENTLY` builds, quoted as written. */
function concurrentIndexName(statement: string): string | undefined {
  return INDEX_CONCURRENTLY.exec(statement.trim())?.[1];
}

async function invalidIndex(sql: Sql, quotedName: string): Promise<string | undefined> {
  const [row] = await sql<{ name: string }[]>`
    select i.indexrelid::regclass::text as name from pg_index i
    where i.indexrelid = to_regclass(${quotedName}) and not i.indisvalid`;
  return row?.name;
}

interface Timeouts {
  lockMs: number;
  statementMs: number;
}

/**
 * Runs a no-transaction migration's statements one by one on a connection of their own,
 * with the timeouts as startup parameters: never SET on a backend a pooler could hand to
 * another client. A transaction-mode pooler refuses them; the run then stops, naming the
 * direct URL to use. An INVALID index left by an earlier failed CREATE INDEX CONCURRENTLY
 * of the same name is dropped first, so a rerun after a failure is safe.
 */
async function runOutsideTransaction(
  url: string,
  migration: MigrationFile,
  timeouts: Timeouts,
  log: (line: string) => void,
): Promise<void> {
  const sql = connect(url, {
    lock_timeout: String(timeouts.lockMs),
    statement_timeout: String(timeouts.statementMs),
  });
  const done: string[] = [];
  try {
    try {
      await sql`select 1`;
    } catch (error) {
      if (/unsupported startup parameter/i.test(String((error as Error).message))) {
        throw new PoolerRefusesSessionSettingsError(
          migration.name,
          migration.modeReason ?? '',
          url,
        );
      }
      throw error;
    }
    // This connection is its own (a pooler refused it above): a session setting stays with it.
    await sql.unsafe(publicFirst(false));
    for (const statement of migration.statements) {
      const index = concurrentIndexName(statement);
      try {
        if (index) {
          const leftover = await invalidIndex(sql, index);
          if (leftover) {
            log(
              `  ${migration.name}: dropping INVALID index ${leftover}, left by an earlier ` +
                'failed build, before building it again',
            );
            await sql.unsafe(`drop index concurrently if exists ${leftover}`);
          }
        }
        await sql.unsafe(statement);
        done.push(statement);
      } catch (error) {
        const invalid = index ? await invalidIndex(sql, index).catch(() => undefined) : undefined;
        throw new NonTransactionalMigrationFailedError(
          migration.name,
          statement,
          sqlStateOf(error),
          done.length,
          migration.statements.length,
          invalid,
          error,
        );
      }
    }
  } finally {
    await disconnect(sql);
  }
}

interface StepContext {
  url: string;
  files: MigrationFile[];
  timeouts: Timeouts;
  lockWaitMs: number;
  log: (line: string) => void;
  applied: AppliedMigration[];
}

interface StepOutcome {
  waitedMs: number;
  step?: Step;
}

/**
 * One transaction of a run: takes the lock, reads and checks what is applied, then applies
 * the next step of the pending migrations: in the transaction itself, or (no-transaction)
 * on another connection while this transaction holds the lock and then records it.
 */
async function runStep(
  sql: Sql,
  context: StepContext,
  onPlan: (pending: MigrationFile[]) => void,
): Promise<StepOutcome> {
  const { log, timeouts } = context;
  const outcome: StepOutcome = { waitedMs: 0 };
  await sql.begin(async (tx) => {
    outcome.waitedMs = await lockInTransaction(tx, context.lockWaitMs, log);
    const pending = await pendingUnderLock(tx, context.files);
    const step = nextStep(pending);
    outcome.step = step;
    if (!step) return;
    onPlan(pending);
    await tx.unsafe(`set local lock_timeout = ${timeouts.lockMs}`);
    await tx.unsafe(`set local statement_timeout = ${timeouts.statementMs}`);
    // The transaction holds the lock while another connection works, idle in between.
    await tx.unsafe('set local idle_in_transaction_session_timeout = 0');
    await tx.unsafe(publicFirst(true));
    // The bookkeeping table is created in the same transaction, so a failed run leaves
    // the database exactly as it was.
    await ensureBookkeeping(tx);
    // Committed by earlier steps: this step's own roll back with it if one of them fails.
    const committed = context.applied.map((m) => m.name);
    for (const migration of step.migrations) {
      const migrationStarted = performance.now();
      if (step.mode === 'no-transaction') {
        await runOutsideTransaction(context.url, migration, timeouts, log);
      } else {
        for (const statement of migration.statements) {
          try {
            await tx.unsafe(statement);
          } catch (error) {
            throw new MigrationFailedError(
              migration.name,
              statement,
              sqlStateOf(error),
              error,
              committed,
            );
          }
        }
      }
      await record(tx, migration);
      const durationMs = performance.now() - migrationStarted;
      context.applied.push({ name: migration.name, durationMs, mode: step.mode });
      const note =
        step.mode === 'no-transaction'
          ? `, outside a transaction: ${migration.modeReason}`
          : step.mode === 'own-transaction'
            ? ', in its own transaction: adds an enum value a later migration uses'
            : '';
      log(`  ✓ ${migration.name} (${durationMs.toFixed(1)} ms${note})`);
    }
  });
  return outcome;
}

/** The message of a lock-timeout failure (SQLSTATE 55P03), whichever error class wraps it. */
function lockTimedOut(error: unknown): boolean {
  return (
    (error instanceof MigrationFailedError ||
      error instanceof NonTransactionalMigrationFailedError) &&
    error.sqlState === '55P03'
  );
}

/**
 * Applies the pending migrations of a drizzle-kit folder, using drizzle's journal and
 * migrations table, but unlike drizzle's `migrate()`:
 * - holds a transaction-scoped advisory lock, so concurrent runs apply each migration once,
 *   also through a transaction-mode pooler;
 * - refuses to run when an applied migration's file changed since (hash mismatch);
 * - applies the pending migrations in one transaction, but for those that cannot share it
 *   (no-transaction statements, an enum value used later), and names the failing statement;
 * - bounds each statement's lock wait and duration, retrying lock timeouts with backoff;
 * - reports each migration with its duration, never printing the URL's password.
 */
export async function migrate(url: string, options: MigrateOptions = {}): Promise<MigrateResult> {
  const log = options.log ?? (() => {});
  const started = performance.now();
  const files = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
  const target = redactUrl(url);
  const retries = options.lockRetries ?? 3;
  const retryDelayMs = options.lockRetryDelayMs ?? 1000;
  const context: StepContext = {
    url,
    files,
    timeouts: {
      lockMs: Math.max(0, Math.floor(options.statementLockTimeoutMs ?? 5000)),
      statementMs: Math.max(0, Math.floor(options.statementTimeoutMs ?? 600_000)),
    },
    lockWaitMs: options.lockTimeoutMs ?? 60_000,
    log,
    applied: [],
  };
  const sql = connect(url);
  try {
    let waitedForLockMs = 0;
    let announced = false;
    const onPlan = (pending: MigrationFile[]) => {
      if (announced) return;
      announced = true;
      log(`Applying ${plural(pending.length, 'migration')} to ${target}`);
    };
    for (let attempt = 0; ; ) {
      let outcome: StepOutcome;
      try {
        outcome = await runStep(sql, context, onPlan);
      } catch (error) {
        if (!lockTimedOut(error) || attempt >= retries) throw error;
        attempt++;
        const delay = retryDelayMs * 2 ** (attempt - 1);
        const failed = error as MigrationFailedError | NonTransactionalMigrationFailedError;
        const undone =
          failed instanceof NonTransactionalMigrationFailedError ? 'stopped' : 'rolled back';
        log(
          `  ↻ ${failed.migration}: lock_timeout (${context.timeouts.lockMs} ms) waiting for a lock; ` +
            `${undone}, retry ${attempt} of ${retries} in ${(delay / 1000).toFixed(1)} s`,
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
        continue;
      }
      waitedForLockMs += outcome.waitedMs;
      if (!outcome.step) break;
      attempt = 0;
    }
    const { applied } = context;
    // Counted at the end: another migrator may have applied some between two steps.
    const alreadyApplied = files.length - applied.length;
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
    await disconnect(sql);
  }
}
