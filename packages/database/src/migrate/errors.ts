import { DatabaseError } from '../errors.js';

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

/** A statement of a pending migration failed; the whole run was rolled back. */
export class MigrationFailedError extends DatabaseError {
  readonly code = 'MIGRATION_FAILED';

  constructor(
    readonly migration: string,
    readonly statement: string,
    readonly sqlState: string | undefined,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(
      `Migration ${migration} failed: ${reason}${sqlState ? ` (SQLSTATE ${sqlState})` : ''}. ` +
        'Every pending migration of this run was rolled back; the database is as it was.',
      { cause },
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
