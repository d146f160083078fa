export {
  ADOPTED_METADATA_KEY,
  ADOPTION_TABLE,
  type AdoptOptions,
  type AdoptResult,
  adopt,
  SKIPPED_ROWS_TABLE,
} from './adopt.js';
export { type BaselineOptions, type BaselineResult, baseline } from './baseline.js';
export {
  type Catalog,
  type CatalogDifference,
  compareCatalogs,
  describeDifference,
  readCatalog,
} from './catalog.js';
export {
  AdoptionRefusedError,
  BaselineRefusedError,
  DatabaseUrlRequiredError,
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  NonTransactionalMigrationFailedError,
  PoolerRefusesSessionSettingsError,
  UnknownAppliedMigrationError,
} from './errors.js';
export {
  type MigrationFile,
  NO_TRANSACTION_MARKER,
  readMigrations,
  type TransactionMode,
} from './migrations.js';
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
