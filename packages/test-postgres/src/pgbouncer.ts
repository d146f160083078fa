import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, postgresOsUser } from '@bragdoc/local-postgres';

function hasSetpriv(): boolean {
  try {
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const CANDIDATES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer'];

/** The pgbouncer binary, or why there is none (for a test's skip reason). */
export function findPgBouncer(): { path: string } | { missing: string } {
  const found = CANDIDATES.find((candidate) => existsSync(candidate));
  if (!found) {
    return {
      missing:
        'pgbouncer is not installed (apt-get install -y pgbouncer); the pooler tests are skipped',
    };
  }
  if (process.getuid?.() === 0 && !hasSetpriv()) {
    return {
      missing: 'running as root without setpriv (util-linux) to start pgbouncer as postgres',
    };
  }
  return { path: found };
}

export interface PgBouncerOptions {
  /** The PostgreSQL server to pool: its host, port, user and password are used. */
  serverUrl: string;
  /** Default `transaction`, the mode hosted poolers (Neon, Supabase) hand out. */
  poolMode?: 'session' | 'transaction' | 'statement';
  /** Server connections per database and user. Default 3: few, so clients share them. */
  poolSize?: number;
}

export interface PgBouncer {
  port: number;
  /** `url` with its host and port replaced by the pooler's. */
  pooledUrl: (url: string) => string;
  /** The pooler's log so far (for a failing test's message). */
  log: () => string;
  stop: () => Promise<void>;
}

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A PgBouncer in front of `serverUrl` on a free port, from a generated ini and userlist
 * (trust auth, every database forwarded). PgBouncer refuses to run as root, so as root it
 * runs as the `postgres` OS user, with its files in a directory that user owns.
 */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const binary = findPgBouncer();
  if ('missing' in binary) throw new Error(binary.missing);
  const server = new URL(options.serverUrl);
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'bragdoc-pgbouncer-'));
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? postgresOsUser() : undefined;
  const ini = path.join(dir, 'pgbouncer.ini');
  const logFile = path.join(dir, 'pgbouncer.log');
  const serverUser = decodeURIComponent(server.username || 'postgres');
  const password = decodeURIComponent(server.password);
  const target = [
    `host=${server.hostname}`,
    `port=${server.port || '5432'}`,
    `user=${serverUser}`,
    ...(password ? [`password=${password}`] : []),
  ].join(' ');
  writeFileSync(path.join(dir, 'userlist.txt'), `"${serverUser}" ""\n`);
  writeFileSync(
    ini,
    [
      '[databases]',
      `* = ${target}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${path.join(dir, 'userlist.txt')}`,
      `pool_mode = ${options.poolMode ?? 'transaction'}`,
      `default_pool_size = ${options.poolSize ?? 3}`,
      'max_client_conn = 200',
      'ignore_startup_parameters = extra_float_digits',
      `logfile = ${logFile}`,
      `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
      '',
    ].join('\n'),
  );
  chmodSync(dir, 0o755);
  if (user) {
    for (const file of [dir, ini, path.join(dir, 'userlist.txt')])
      chownSync(file, user.uid, user.gid);
  }
  const child: ChildProcess = user
    ? spawn(
        'setpriv',
        [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', binary.path, ini],
        { stdio: 'ignore' },
      )
    : spawn(binary.path, [ini], { stdio: 'ignore' });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let attempt = 0; !(await reachable(port)); attempt++) {
    if (exited || attempt > 100) {
      const output = log();
      await stop();
      throw new Error(`pgbouncer did not start on port ${port}:\n${output}`);
    }
    await sleep(50);
  }
  return {
    port,
    pooledUrl: (url) => {
      const pooled = new URL(url);
      pooled.hostname = '127.0.0.1';
      pooled.port = String(port);
      return pooled.toString();
    },
    log,
    stop,
  };
}
