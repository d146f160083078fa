import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { startEmbeddedPostgres } from './embedded.js';

export type ProviderName = 'url' | 'embedded';
const PROVIDERS: readonly ProviderName[] = ['url', 'embedded'];

export interface TestServer {
  provider: ProviderName;
  /** A maintenance connection URL (its database is never written to). */
  url: string;
  /** `server_version` as PostgreSQL reports it, e.g. `17.10`. */
  version: string;
  stop: () => Promise<void>;
}

async function serverVersion(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const [row] = await sql<{ server_version: string }[]>`show server_version`;
    return row?.server_version ?? 'unknown';
  } finally {
    await sql.end();
  }
}

// A tmpfs keeps a throwaway cluster off the disk, where initdb and CREATE DATABASE are slow.
function throwawayDataDir(): string {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(path.join(base, 'bragdoc-test-pg-'));
}

async function startProvider(name: ProviderName, env: NodeJS.ProcessEnv): Promise<TestServer> {
  if (name === 'url') {
    const url = env.TEST_DATABASE_URL;
    if (!url) throw new Error('TEST_DATABASE_URL is not set');
    return { provider: 'url', url, version: await serverVersion(url), stop: async () => {} };
  }
  const server = await startEmbeddedPostgres({ dataDir: throwawayDataDir(), throwaway: true });
  try {
    return {
      provider: 'embedded',
      url: server.url,
      version: await serverVersion(server.url),
      stop: server.stop,
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/**
 * Starts (or connects to) the PostgreSQL server of a test run. In order: the server at
 * TEST_DATABASE_URL, else embedded binaries. TEST_POSTGRES_PROVIDER forces one.
 */
export async function startTestServer(env: NodeJS.ProcessEnv = process.env): Promise<TestServer> {
  const forced = env.TEST_POSTGRES_PROVIDER;
  if (forced && !PROVIDERS.includes(forced as ProviderName)) {
    throw new Error(
      `TEST_POSTGRES_PROVIDER=${forced} is not a provider; use one of: ${PROVIDERS.join(', ')}.`,
    );
  }
  const candidates: ProviderName[] = forced
    ? [forced as ProviderName]
    : env.TEST_DATABASE_URL
      ? ['url']
      : ['embedded'];
  const failures: string[] = [];
  for (const name of candidates) {
    try {
      return await startProvider(name, env);
    } catch (error) {
      failures.push(`- ${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  throw new Error(`No PostgreSQL for the tests. Tried:\n${failures.join('\n')}`);
}
