import { DatabaseError } from '../errors.js';
import { redactUrl } from './redact.js';

/** Another migrator held the migration lock for longer than the wait allowed. */
export class MigrationLockTimeoutError extends DatabaseError {
  readonly code = 'MIGRATION_LOCK_TIMEOUT';

  constructor(readonly waitedMs: number) {
    super(
      `Another migrator still holds the migration lock after ${waitedMs} ms; nothing was applied. ` +
        'Wait for it to finish (see pg_stat_activity) and run the migrator again.',
    );
  }
}

/** A migration already applied to the database no longer matches its file. */
export class MigrationChecksumMismatchError extends DatabaseError {
  readonly code = 'MIGRATION_CHECKSUM_MISMATCH';

  constructor(
    readonly migration: string,
    readonly file: string,
    readonly appliedHash: string,
    readonly fileHash: string,
  ) {
    super(
      `Migration ${migration} was applied with hash ${appliedHash.slice(0, 12)}…, but ${file} now ` +
        `hashes to ${fileHash.slice(0, 12)}…; nothing was applied. Applied migrations must not be ` +
        'edited: restore the file and put the change in a new migration (pnpm db:generate).',
    );
  }
}

/** The database records a migration that this migrations folder does not have. */
export class UnknownAppliedMigrationError extends DatabaseError {
  readonly code = 'MIGRATION_UNKNOWN_APPLIED';

  constructor(readonly createdAt: number[]) {
    super(
      `The database has ${createdAt.length} applied migration(s) that this migrations folder does ` +
        `not know (created_at ${createdAt.join(', ')}); nothing was applied. The database is ahead ` +
        'of this checkout: update it, or migrate from the checkout that created them.',
    );
  }
}

/** A statement of a pending migration failed; its transaction was rolled back. */
export class MigrationFailedError extends DatabaseError {
  readonly code = 'MIGRATION_FAILED';

  constructor(
    readonly migration: string,
    readonly statement: string,
    readonly sqlState: string | undefined,
    cause: unknown,
    /** Migrations this run committed before the failing transaction (earlier steps). */
    readonly appliedBefore: string[] = [],
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const state =
      appliedBefore.length === 0
        ? 'Every pending migration of this run was rolled back; the database is as it was.'
        : `Its transaction was rolled back; ${appliedBefore.join(', ')} had been committed ` +
          'before it (they needed a transaction of their own) and stay applied.';
    // duplicate_table, duplicate_object, duplicate_column: what the migration creates is
    // there already, unrecorded. At the first migration, the database was built without
    // db:migrate; later, something was created beside the migrations under the same name.
    const duplicate = ['42P07', '42710', '42701'].includes(sqlState ?? '');
    const next = duplicate
      ? /^0000_/.test(migration) && appliedBefore.length === 0
        ? ' The database already has what the first migration creates, without a record of ' +
          "applying it: it was built without db:migrate. If it was built the seed plan's way " +
          '(nullable counters on "User", a seven-column "CreditTransaction" log), run pnpm ' +
          'db:adopt; if by these migrations (drizzle-kit push), run pnpm db:baseline.'
        : ' Something of that name was created outside the migrations: rename or drop it, then ' +
          'run again.'
      : connectionLost(sqlState, cause)
        ? ' The connection was lost (the server restarted, failed over or ended it), not the ' +
          'migration at fault: run again.'
        : sqlState === '55P03'
          ? ' A lock was not granted within the statement lock timeout, even after the retries: ' +
            'find the long transaction holding it (pg_stat_activity, pg_locks), then run again, or ' +
            'raise --statement-lock-timeout.'
          : ' Fix the migration and run again.';
    super(
      `Migration ${migration} failed: ${reason}${sqlState ? ` (SQLSTATE ${sqlState})` : ''}. ${state}${next}`,
      { cause },
    );
  }
}

/**
 * A statement of a migration that runs outside a transaction failed: the statements
 * before it stay committed, and a concurrent index build may have left an INVALID index.
 */
export class NonTransactionalMigrationFailedError extends DatabaseError {
  readonly code = 'MIGRATION_FAILED';

  constructor(
    readonly migration: string,
    readonly statement: string,
    readonly sqlState: string | undefined,
    readonly completedStatements: number,
    readonly totalStatements: number,
    /** An INVALID index the failed `CREATE INDEX CONCURRENTLY` left, if any. */
    readonly invalidIndex: string | undefined,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const left =
      completedStatements === 0
        ? 'No statement of it had completed'
        : `${completedStatements} of its ${totalStatements} statements had completed and stay committed`;
    const index = invalidIndex
      ? ` The build left the INVALID index ${invalidIndex} (it slows writes and serves no query); ` +
        'the next run drops it before building it again, or drop it now with ' +
        `DROP INDEX CONCURRENTLY ${invalidIndex}.`
      : '';
    super(
      `Migration ${migration} (outside a transaction) failed: ${reason}` +
        `${sqlState ? ` (SQLSTATE ${sqlState})` : ''}. ${left}; it is not recorded as applied.` +
        `${index} Fix the cause and run again: the whole migration runs again, so its ` +
        'statements must be safe to repeat (IF NOT EXISTS / IF EXISTS).',
      { cause },
    );
  }
}

/** A transaction-mode pooler refused the session settings a no-transaction migration needs. */
export class PoolerRefusesSessionSettingsError extends DatabaseError {
  readonly code = 'MIGRATION_NEEDS_DIRECT_CONNECTION';

  constructor(
    readonly migration: string,
    reason: string,
    url: string,
  ) {
    super(
      `Migration ${migration} must run outside a transaction (${reason}), which needs a direct ` +
        `session, but ${redactUrl(url)} refuses session settings: it is a transaction-mode ` +
        'pooler. Nothing of it was applied. Set DATABASE_URL_UNPOOLED to the direct (unpooled) ' +
        'URL and run again.',
    );
  }
}

/** No DATABASE_URL in an environment (CI) where starting a local server is not wanted. */
export class DatabaseUrlRequiredError extends DatabaseError {
  readonly code = 'DATABASE_URL_REQUIRED';

  constructor() {
    super(
      'DATABASE_URL is required when CI is set: point it at the PostgreSQL to migrate, ' +
        'e.g. DATABASE_URL=postgres://user:password@host:5432/db. (Outside CI, an embedded ' +
        'PostgreSQL is started instead.)',
    );
  }
}

/** db:baseline found a reason not to record migrations as applied; it recorded nothing. */
export class BaselineRefusedError extends DatabaseError {
  readonly code = 'BASELINE_REFUSED';

  constructor(
    message: string,
    /** One line per difference, when the schema does not match the migrations. */
    readonly differences: string[] = [],
  ) {
    super(`${message} Nothing was recorded.`);
  }
}

/**
 * `db:adopt` refused a database it cannot take over as it is (not built the seed plan's
 * way, negative balances, a name the migrations need taken): nothing was changed.
 */
export class AdoptionRefusedError extends DatabaseError {
  readonly code = 'ADOPTION_REFUSED';

  constructor(message: string) {
    super(`${message} Nothing was changed.`);
  }
}

/**
 * The connection ended under a statement: 57P01–57P03 (the server shut down or ended the
 * backend), or the socket closed (postgres.js's CONNECTION_* codes, Node's ECONNRESET).
 */
export function connectionLost(sqlState: string | undefined, error: unknown): boolean {
  if (sqlState && /^57P0[123]$/.test(sqlState)) return true;
  const code = (error as { code?: unknown } | undefined)?.code;
  return (
    typeof code === 'string' &&
    /^(CONNECTION_(CLOSED|ENDED|DESTROYED)|ECONNRESET|EPIPE|ECONNREFUSED)$/.test(code)
  );
}
