import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type postgres from 'postgres';

/**
 * Pins the server and this process (the client) to different cores, so that 16 callers on
 * the client side do not take turns with the backends serving them on the same cores: on 2
 * shared cores that is where most of the p99 swing between runs came from. Linux only,
 * through util-linux `taskset`; when it cannot (one core, no taskset, another OS, a server
 * on another machine, permission refused) it says why and the run goes on unpinned.
 *
 * What is pinned depends on whose server it is:
 * - a server this run started (embedded): its postmaster and every process it has forked,
 *   so later backends inherit the server's cores;
 * - a server given by BENCH_DATABASE_URL (shared with others): only the backends serving this
 *   run's databases (`pg_stat_activity`, datname starting with the run's prefix), never the
 *   postmaster, so nobody else's work is moved. Backends connected later are pinned by the
 *   next `pin()`, which every section calls after its warm-up.
 */
export interface Pinning {
  /** True when both sides are pinned. */
  pinned: boolean;
  serverCores: number[];
  clientCores: number[];
  /** One line for the output: where each side runs, or why nothing is pinned. */
  summary: string;
  /** Pins the server processes of this run again (new backends); a no-op when unpinned. */
  pin: () => Promise<void>;
}

interface PinningOptions {
  /** A connection to the server, on any of the run's databases. */
  sql: postgres.Sql;
  /** True when this run started the server (pin all of it), false for a shared one. */
  ownServer: boolean;
  /** The prefix of this run's database names (a shared server: only their backends). */
  databasePrefix: string;
  /** False: do not pin (`--no-pin`). */
  enabled: boolean;
}

const unpinned = (why: string, cores: number): Pinning => ({
  pinned: false,
  serverCores: [],
  clientCores: [],
  summary: `pinning: not pinned (${why}); server and client share the ${cores} cores`,
  pin: async () => {},
});

/** The cores this process may run on (its affinity), ascending; all online cores when unknown. */
function allowedCores(): number[] {
  try {
    // "Cpus_allowed_list:\t0-3,6"
    const line = readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Cpus_allowed_list:'));
    const list = line?.split(':')[1]?.trim();
    if (list) {
      const cores = list.split(',').flatMap((part) => {
        const [from, to] = part.split('-').map(Number);
        if (from === undefined || Number.isNaN(from)) return [];
        return Array.from({ length: (to ?? from) - from + 1 }, (_, i) => from + i);
      });
      if (cores.length > 0) return cores;
    }
  } catch {}
  return Array.from({ length: availableParallelism() }, (_, i) => i);
}

function taskset(pid: number, cores: number[], allThreads: boolean): void {
  execFileSync(
    'taskset',
    [...(allThreads ? ['-a'] : []), '-p', '-c', cores.join(','), String(pid)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
}

/** The processes whose parent is `pid` (a postmaster's backends and workers). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      if (new RegExp(`^PPid:\\s*${pid}$`, 'm').test(status)) children.push(Number(entry));
    } catch {} // gone meanwhile
  }
  return children;
}

const parentOf = (pid: number) =>
  Number(/^PPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

const firstLine = (error: unknown) =>
  String((error as { stderr?: Buffer }).stderr ?? (error as Error).message)
    .trim()
    .split('\n')[0];

/**
 * Splits the allowed cores: the client gets a quarter (at least one), the server the rest
 * (16 callers' worth of backends do most of the work). Pins this process now, the server by
 * `pin()`, which it also runs once here.
 */
export async function pinServerAndClient(options: PinningOptions): Promise<Pinning> {
  const cores = allowedCores();
  if (!options.enabled) return unpinned('--no-pin', cores.length);
  if (process.platform !== 'linux') return unpinned(`${process.platform}, not Linux`, cores.length);
  if (cores.length < 2) return unpinned('only one core', cores.length);
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
  } catch {
    return unpinned('taskset (util-linux) not found', cores.length);
  }
  // The backend of this connection is a child of the postmaster, if the server runs here.
  const [backend] = await options.sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
  let postmaster: number;
  try {
    postmaster = parentOf(Number(backend?.pid));
    if (!/postgres|postmaster/.test(readFileSync(`/proc/${postmaster}/comm`, 'utf8')))
      throw new Error('not a postmaster');
  } catch {
    return unpinned('the server does not run on this machine', cores.length);
  }
  const clientCount = Math.max(1, Math.floor(cores.length / 4));
  const serverCores = cores.slice(0, cores.length - clientCount);
  const clientCores = cores.slice(cores.length - clientCount);
  const serverPids = async (): Promise<number[]> => {
    if (options.ownServer) return [postmaster, ...childrenOf(postmaster)];
    const rows = await options.sql<{ pid: number }[]>`
      select pid from pg_stat_activity
      where datname like ${`${options.databasePrefix}%`} and pid <> pg_backend_pid()`;
    return [...rows.map((r) => r.pid), Number(backend?.pid)];
  };
  const pin = async () => {
    for (const pid of await serverPids()) {
      try {
        taskset(pid, serverCores, false);
      } catch (error) {
        // A backend that exited meanwhile is fine; a refusal is not.
        if (/No such process/i.test(firstLine(error) ?? '')) continue;
        throw error;
      }
    }
  };
  try {
    taskset(process.pid, clientCores, true);
    await pin();
  } catch (error) {
    try {
      taskset(process.pid, cores, true);
    } catch {}
    return unpinned(`taskset failed: ${firstLine(error)}`, cores.length);
  }
  const which = options.ownServer
    ? `the server (postmaster ${postmaster} and its processes)`
    : `this run's backends of the shared server (postmaster ${postmaster} left alone)`;
  return {
    pinned: true,
    serverCores,
    clientCores,
    summary: `pinning: ${which} on core${serverCores.length > 1 ? 's' : ''} ${serverCores.join(',')}, the client (Node ${process.pid}) on core${clientCores.length > 1 ? 's' : ''} ${clientCores.join(',')}`,
    pin,
  };
}
