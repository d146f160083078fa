import { fileURLToPath } from 'node:url';
import { EMBEDDED_POSTGRES_MAJOR, startEmbeddedPostgres } from '@bragdoc/test-postgres/embedded';
import postgres from 'postgres';
import { DatabaseUrlRequiredError } from './errors.js';
import { LOCAL_DATABASE_NAME, LOCAL_POSTGRES_PORT, localDatabaseUrl } from './local-url.js';

export interface MigrationTarget {
  url: string;
  /** Where the URL came from, for the log. */
  source: 'DATABASE_URL' | 'local server (already running)' | 'local server (started)';
  /** Stops the embedded server if this call started it. */
  stop: () => Promise<void>;
}

/** Git-ignored; kept between runs so `db:migrate` and `db:dev` share one local database. */
const defaultDataDir = fileURLToPath(
  new URL(`../../.data/postgres${EMBEDDED_POSTGRES_MAJOR}`, import.meta.url),
);

/** CI=true/1/yes (any value but false/0/empty, as CI services set it). */
function isCi(env: NodeJS.ProcessEnv): boolean {
  const value = (env.CI ?? '').trim().toLowerCase();
  return value !== '' && value !== 'false' && value !== '0';
}

async function reachable(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: 1, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * The database to work on: DATABASE_URL when set; else, outside CI, the local embedded
 * PostgreSQL (reused when `pnpm db:dev` already runs it, started otherwise). In CI a
 * missing DATABASE_URL is an error, never a silent local server.
 */
export async function resolveMigrationTarget(
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<MigrationTarget> {
  if (env.DATABASE_URL) {
    return { url: env.DATABASE_URL, source: 'DATABASE_URL', stop: async () => {} };
  }
  if (isCi(env)) throw new DatabaseUrlRequiredError();

  // Overrides exist for tests and for a second checkout running its own local server.
  const dataDir = env.LOCAL_POSTGRES_DIR ?? defaultDataDir;
  const port = Number(env.LOCAL_POSTGRES_PORT ?? LOCAL_POSTGRES_PORT);
  const url = localDatabaseUrl(port);
  if (await reachable(url)) {
    return { url, source: 'local server (already running)', stop: async () => {} };
  }
  const started = performance.now();
  const server = await startEmbeddedPostgres({ dataDir, port, throwaway: false });
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    const [exists] = await admin`select 1 from pg_database where datname = ${LOCAL_DATABASE_NAME}`;
    if (!exists) await admin.unsafe(`create database "${LOCAL_DATABASE_NAME}"`);
  } finally {
    await admin.end();
  }
  log(
    `Started embedded PostgreSQL ${EMBEDDED_POSTGRES_MAJOR} in ${Math.round(performance.now() - started)} ms ` +
      `(${server.initialised ? 'new data directory' : 'existing data'}: ${dataDir}).`,
  );
  return { url, source: 'local server (started)', stop: server.stop };
}
