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
  /** TEST_POSTGRES_KEEP_FAILED is set: a failed test's database is kept, its URL printed. */
  keepFailed: boolean;
}

declare module 'vitest' {
  export interface ProvidedContext {
    testPostgres: TestPostgresContext;
  }
}
