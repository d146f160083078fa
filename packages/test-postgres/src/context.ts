/** What the global setup hands to every test worker through vitest's `provide`/`inject`. */
export interface TestPostgresContext {
  provider: string;
  version: string;
  /** Maintenance URL: workers create and drop their databases through it. */
  serverUrl: string;
  /** The migrated database every test database is cloned from. */
  template: string;
  /** Every database of this run starts with it; teardown drops them all by it. */
  runPrefix: string;
  /**
   * `file_copy` on servers the harness started (fsync off, PostgreSQL 15+): measured ~25%
   * faster than the default WAL_LOG for a small template. Unset on a TEST_DATABASE_URL
   * server, where FILE_COPY's checkpoints would load a server that is not ours.
   */
  cloneStrategy?: 'file_copy';
  /** TEST_POSTGRES_KEEP_FAILED is set: a failed test's database is kept, its URL printed. */
  keepFailed: boolean;
}

declare module 'vitest' {
  export interface ProvidedContext {
    testPostgres: TestPostgresContext;
  }
}
