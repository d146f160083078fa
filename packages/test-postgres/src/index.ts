export {
  EMBEDDED_POSTGRES_MAJOR,
  type EmbeddedPostgresOptions,
  type EmbeddedServer,
  freePort,
  isPortFree,
  startEmbeddedPostgres,
} from '@bragdoc/local-postgres';
export type { CreateTestDatabaseOptions, TestDatabase } from './clone.js';
export { type ContainerRuntimeProbe, probeContainerRuntime } from './container-runtime.js';
export type { TestPostgresContext } from './context.js';
export {
  type ConnectedTestDatabase,
  type Connection,
  createTestDatabase,
  type UseTestDatabaseOptions,
  useTestDatabase,
} from './database.js';
export {
  type PrivateTestPostgres,
  startPrivateTestPostgres,
  startTestPostgres,
  type TestPostgres,
  type TestPostgresOptions,
} from './harness.js';
export { removeLeftoverDatabases } from './leftovers.js';
export {
  findPgBouncer,
  type PgBouncer,
  type PgBouncerOptions,
  startPgBouncer,
} from './pgbouncer.js';
export {
  findDebianPostgres,
  type ReplicaSource,
  type ReplicatedPair,
  startReplicatedPair,
} from './replication.js';
export {
  PROVIDERS,
  type ProviderName,
  type ServerControl,
  startTestServer,
  type TestServer,
} from './server.js';
export { setupTestPostgres, type TestPostgresSetupOptions } from './setup.js';
export { acquireTemplate, hashFolder, releaseTemplate, templateName } from './template.js';
export { removeLeftoverServers, throwawayBase } from './throwaway-dirs.js';
export { withSql } from './with-sql.js';
