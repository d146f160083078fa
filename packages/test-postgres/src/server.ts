import {
  EMBEDDED_POSTGRES_MAJOR,
  type ShutdownMode,
  startEmbeddedPostgres,
} from '@bragdoc/local-postgres';
import postgres from 'postgres';
import { probeContainerRuntime } from './container-runtime.js';
import { startDockerPostgres } from './docker.js';
import { createThrowawayDir } from './throwaway-dirs.js';

export const PROVIDERS = ['url', 'docker', 'embedded'] as const;
export type ProviderName = (typeof PROVIDERS)[number];

/**
 * What a fault test does to a server it started itself: shut it down (`pg_ctl stop -m`
 * modes), start it again on the same port and data, or both (`pg_ctl restart -m immediate`).
 */
export interface ServerControl {
  shutdown: (mode?: ShutdownMode) => Promise<void>;
  start: () => Promise<void>;
  restart: (mode?: ShutdownMode) => Promise<void>;
}

export interface TestServer {
  provider: ProviderName;
  /** A maintenance connection URL (its database is never written to). */
  url: string;
  /** `server_version` as PostgreSQL reports it, e.g. `17.10`. */
  version: string;
  /** Providers passed over before this one, each with its reason. */
  skipped: string[];
  stop: () => Promise<void>;
  /**
   * Leaves the server running after the run (to inspect a kept database) and says how to
   * stop it; undefined where the server cannot outlive the run.
   */
  detach?: () => string;
  /**
   * Stop and start the server: only on the embedded provider (a server of this run's own).
   * Never on TEST_DATABASE_URL's server, which other runs and test files share.
   */
  control?: ServerControl;
}

type StartedServer = Omit<TestServer, 'version' | 'skipped' | 'provider'>;

async function serverVersion(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const [row] = await sql<{ server_version: string }[]>`show server_version`;
    return row?.server_version ?? 'unknown';
  } finally {
    await sql.end();
  }
}

async function startUrl(env: NodeJS.ProcessEnv): Promise<StartedServer> {
  const url = env.TEST_DATABASE_URL;
  if (!url) throw new Error('TEST_DATABASE_URL is not set');
  return { url, stop: async () => {} };
}

async function startDocker(env: NodeJS.ProcessEnv): Promise<StartedServer> {
  const probe = await probeContainerRuntime(env);
  if (!probe.available) throw new Error(`${probe.reason} (probed in ${probe.ms} ms)`);
  const image = env.TEST_POSTGRES_IMAGE ?? `postgres:${EMBEDDED_POSTGRES_MAJOR}-alpine`;
  // testcontainers finds its engine through process.env and knows fewer sockets than the
  // probe (Colima, Podman, Rancher): it is told the endpoint the probe found.
  const previous = process.env.DOCKER_HOST;
  process.env.DOCKER_HOST = probe.endpoint;
  try {
    const server = await startDockerPostgres(image);
    return { url: server.url, stop: server.stop };
  } finally {
    if (previous === undefined) delete process.env.DOCKER_HOST;
    else process.env.DOCKER_HOST = previous;
  }
}

async function startEmbedded(
  _env: NodeJS.ProcessEnv,
  settings: Record<string, string> = {},
): Promise<StartedServer> {
  const folder = createThrowawayDir();
  try {
    const server = await startEmbeddedPostgres({
      dataDir: folder.dataDir,
      throwaway: true,
      settings,
    });
    return {
      url: server.url,
      stop: async () => {
        await server.stop();
        folder.remove();
      },
      control: {
        shutdown: server.shutdown,
        start: server.start,
        restart: server.restart,
      },
      detach: () => {
        const pid = server.detach();
        folder.forget();
        return `kill -INT ${pid} && rm -rf ${folder.dir}   (or let the next test run remove it)`;
      },
    };
  } catch (error) {
    folder.remove();
    throw error;
  }
}

const starters: Record<
  ProviderName,
  (env: NodeJS.ProcessEnv, settings?: Record<string, string>) => Promise<StartedServer>
> = {
  url: startUrl,
  docker: startDocker,
  embedded: startEmbedded,
};

function message(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // AggregateError (e.g. ECONNREFUSED on both ::1 and 127.0.0.1) has an empty message.
  if (error.message) return error.message;
  return (error as { code?: string }).code ?? error.name;
}

/**
 * Starts (or connects to) the PostgreSQL of a test run. In order: the server at
 * TEST_DATABASE_URL; else a container when a container runtime answers; else embedded
 * binaries. TEST_POSTGRES_PROVIDER=url|docker|embedded forces one.
 */
export async function startTestServer(
  env: NodeJS.ProcessEnv = process.env,
  options: {
    /** Server settings for a server the run starts (embedded); ignored elsewhere. */
    settings?: Record<string, string>;
  } = {},
): Promise<TestServer> {
  const forced = env.TEST_POSTGRES_PROVIDER;
  if (forced && !(PROVIDERS as readonly string[]).includes(forced)) {
    throw new Error(
      `TEST_POSTGRES_PROVIDER=${forced} is not a provider; use one of: ${PROVIDERS.join(', ')}.`,
    );
  }
  // A TEST_DATABASE_URL that fails is an error, not a reason to quietly test elsewhere.
  const candidates: ProviderName[] = forced
    ? [forced as ProviderName]
    : env.TEST_DATABASE_URL
      ? ['url']
      : ['docker', 'embedded'];
  const failures: string[] = [];
  for (const provider of candidates) {
    let started: StartedServer | undefined;
    try {
      started = await starters[provider](env, options.settings);
      const version = await serverVersion(started.url);
      return { provider, version, skipped: failures, ...started };
    } catch (error) {
      await started?.stop().catch(() => {});
      failures.push(`${provider}: ${message(error)}`);
    }
  }
  throw new Error(
    `No PostgreSQL for the tests${forced ? ` (TEST_POSTGRES_PROVIDER=${forced})` : ''}. Tried:\n` +
      failures.map((f) => `- ${f}`).join('\n'),
  );
}
