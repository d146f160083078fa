export type { TestPostgresContext } from './context.js';
export {
  type CreateTestDatabaseOptions,
  createTestDatabase,
  type TestDatabase,
} from './database.js';
export {
  EMBEDDED_POSTGRES_MAJOR,
  type EmbeddedPostgresOptions,
  type EmbeddedServer,
  startEmbeddedPostgres,
} from './embedded.js';
export { freePort, isPortFree } from './free-port.js';
export { type ProviderName, startTestServer, type TestServer } from './server.js';
export { setupTestPostgres, type TestPostgresSetupOptions } from './setup.js';
