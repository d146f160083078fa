export {
  DatabaseUrlRequiredError,
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  UnknownAppliedMigrationError,
} from './errors.js';
export { type MigrationFile, readMigrations } from './migrations.js';
export {
  type AppliedMigration,
  defaultMigrationsFolder,
  getMigrationStatus,
  MIGRATION_LOCK_KEY,
  type MigrateOptions,
  type MigrateResult,
  type MigrationState,
  type MigrationStatus,
  type MigrationStatusEntry,
  migrate,
} from './migrator.js';
export { redactUrl } from './redact.js';
