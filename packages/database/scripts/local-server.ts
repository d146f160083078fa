import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  EMBEDDED_POSTGRES_MAJOR,
  ensureTrustedDir,
  firstUnreachableDir,
  type OsUser,
  postgresOsUser,
  startEmbeddedPostgres,
} from '@bragdoc/local-postgres';
import postgres from 'postgres';
import { DatabaseUrlRequiredError } from '../src/migrate/errors.js';
import { LOCAL_DATABASE_NAME, LOCAL_POSTGRES_PORT, localDatabaseUrl } from './local-url.js';

export interface DatabaseTarget {
  url: string;
  /** Where the URL came from, for the log. */
  source: DatabaseUrlVariable | 'local server (already running)' | 'local server (started)';
  /** Stops the embedded server if this call started it. */
  stop: () => Promise<void>;
}

/** Git-ignored; kept between runs so `db:migrate` and `db:dev` share one local database. */
const defaultDataDir = fileURLToPath(
  new URL(`../.data/postgres${EMBEDDED_POSTGRES_MAJOR}`, import.meta.url),
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
 * Where the local server keeps its data. As root the server runs as `postgres`, who
 * cannot enter a checkout under a 0700 home (/root): the data then lives under /var/tmp
 * (kept across reboots, unlike /tmp), one directory per checkout. An explicit
 * LOCAL_POSTGRES_DIR is used as given; if `postgres` cannot reach it, starting says so.
 */
export function localDataDir(
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
  options: { defaultDir?: string; serverUser?: OsUser; sharedBase?: string } = {},
): string {
  if (env.LOCAL_POSTGRES_DIR) return env.LOCAL_POSTGRES_DIR;
  const defaultDir = options.defaultDir ?? defaultDataDir;
  const serverUser =
    options.serverUser ?? (process.getuid?.() === 0 ? postgresOsUser() : undefined);
  if (!serverUser) return defaultDir;
  const blocked = firstUnreachableDir(path.dirname(defaultDir), serverUser);
  if (!blocked) return defaultDir;
  const base = options.sharedBase ?? (existsSync('/var/tmp') ? '/var/tmp' : tmpdir());
  const checkout = createHash('sha256').update(defaultDir).digest('hex').slice(0, 12);
  const dir = ensureTrustedDir(path.join(base, `bragdoc-local-postgres-${checkout}`));
  const dataDir = path.join(dir, `postgres${EMBEDDED_POSTGRES_MAJOR}`);
  log(
    `The ${serverUser.name} user, which runs PostgreSQL for root, cannot enter ${blocked}: ` +
      `the local data lives in ${dataDir} instead (LOCAL_POSTGRES_DIR overrides).`,
  );
  return dataDir;
}

/** The local embedded PostgreSQL, reused when `pnpm db:dev` already runs it, else started. */
export async function localServer(
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<DatabaseTarget> {
  // Overrides exist for tests and for a second checkout running its own local server.
  const port = Number(env.LOCAL_POSTGRES_PORT ?? LOCAL_POSTGRES_PORT);
  const url = localDatabaseUrl(port);
  if (await reachable(url)) {
    return { url, source: 'local server (already running)', stop: async () => {} };
  }
  const dataDir = localDataDir(env, log);
  const started = performance.now();
  const server = await startEmbeddedPostgres({ dataDir, port, throwaway: false });
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    const [exists] = await admin`select 1 from pg_database where datname = ${LOCAL_DATABASE_NAME}`;
    if (!exists) await admin.unsafe(`create database "${LOCAL_DATABASE_NAME}"`);
  } catch (error) {
    await server.stop();
    throw error;
  } finally {
    await admin.end();
  }
  log(
    `Started embedded PostgreSQL ${EMBEDDED_POSTGRES_MAJOR} in ${Math.round(performance.now() - started)} ms ` +
      `(${server.initialised ? 'new data directory' : 'existing data'}: ${dataDir}).`,
  );
  return { url, source: 'local server (started)', stop: server.stop };
}

/**
 * The variables that name the database, in the order they are preferred. Hosts that pool
 * connections (Neon's Vercel integration, Supabase) put a transaction-mode pooler's URL in
 * DATABASE_URL and the direct one in these: migrations want the direct one.
 */
export const DATABASE_URL_VARIABLES = [
  'DATABASE_URL_UNPOOLED',
  'POSTGRES_URL_NON_POOLING',
  'DATABASE_URL',
] as const;
export type DatabaseUrlVariable = (typeof DATABASE_URL_VARIABLES)[number];

/** The first of DATABASE_URL_VARIABLES that is set, with its name. */
export function databaseUrlFromEnv(
  env: NodeJS.ProcessEnv,
): { url: string; variable: DatabaseUrlVariable } | undefined {
  for (const variable of DATABASE_URL_VARIABLES) {
    const url = env[variable];
    if (url) return { url, variable };
  }
  return undefined;
}

/**
 * The database to work on: the first of DATABASE_URL_UNPOOLED, POSTGRES_URL_NON_POOLING and
 * DATABASE_URL that is set; else, outside CI, the local embedded PostgreSQL. In CI a
 * missing URL is an error, never a silent local server.
 */
export async function resolveDatabaseTarget(
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<DatabaseTarget> {
  const configured = databaseUrlFromEnv(env);
  if (configured) {
    return { url: configured.url, source: configured.variable, stop: async () => {} };
  }
  if (isCi(env)) throw new DatabaseUrlRequiredError();
  return localServer(env, log);
}
