import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const DIR_PREFIX = 'bragdoc-test-pg-';
// A cluster with a template and a few clones needs well under this; Docker gives
// containers a 64 MiB /dev/shm by default, which is not enough.
const MIN_TMPFS_BYTES = 1024 ** 3;
// A folder this young without owner.json may be a parallel run that is creating it.
const OWNERLESS_GRACE_MS = 60_000;

/** A tmpfs keeps a throwaway cluster off the disk, where initdb and CREATE DATABASE are slow. */
export function throwawayBase(): string {
  try {
    const fs = statfsSync('/dev/shm');
    if (fs.bavail * fs.bsize >= MIN_TMPFS_BYTES) return '/dev/shm';
  } catch {
    // no /dev/shm (macOS, Windows)
  }
  return tmpdir();
}

export interface ThrowawayDir {
  /** Holds `owner.json` and the cluster's `data/`. */
  dir: string;
  dataDir: string;
  remove: () => void;
  /** Leaves the folder in place when this process exits (a detached, kept server). */
  forget: () => void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(file: string, pick: (text: string) => string | undefined): number | undefined {
  try {
    const pid = Number(pick(readFileSync(file, 'utf8')));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

const postmasterPidFile = (dir: string) => path.join(dir, 'data', 'postmaster.pid');

function postmasterPid(dir: string): number | undefined {
  return readPid(postmasterPidFile(dir), (t) => t.split('\n')[0]);
}

/** Whether `pid` is a postgres serving this folder's data (not a reused pid), where /proc tells. */
function servesDir(pid: number, dir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(path.join(dir, 'data'));
  } catch {
    return !existsSync('/proc'); // no /proc to ask: trust postmaster.pid
  }
}

const owned = new Set<string>();
let exitHookInstalled = false;

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * When the process exits with a cluster still up (Ctrl-C: vitest exits 1 ms after the
 * signal, before any async stop can finish), stop it with SIGQUIT (immediate shutdown),
 * wait until it has removed its postmaster.pid (the child stays a zombie until we exit,
 * so its pid alone says nothing), then delete its folder.
 */
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const dir of owned) {
      const postmaster = postmasterPid(dir);
      if (postmaster !== undefined && alive(postmaster)) {
        process.kill(postmaster, 'SIGQUIT');
        for (let i = 0; i < 200 && existsSync(postmasterPidFile(dir)); i++) sleepSync(10);
      }
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  });
}

/**
 * A folder for one run's embedded cluster, stamped with the owning process, so a later
 * run can tell a live neighbour's cluster from a leftover of a run that crashed.
 */
export function createThrowawayDir(): ThrowawayDir {
  const dir = mkdtempSync(path.join(throwawayBase(), DIR_PREFIX));
  // The server runs as `postgres` when we are root: it must be able to enter the folder.
  chmodSync(dir, 0o755);
  writeFileSync(
    path.join(dir, 'owner.json'),
    JSON.stringify({ pid: process.pid, startedAt: new Date() }),
  );
  owned.add(dir);
  installExitHook();
  return {
    dir,
    dataDir: path.join(dir, 'data'),
    remove: () => {
      owned.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
    forget: () => {
      owned.delete(dir);
    },
  };
}

async function removeLeftover(dir: string): Promise<boolean> {
  const stat = statSync(dir);
  // Another user's leftovers are theirs to clean (and we could not).
  if (process.getuid && stat.uid !== process.getuid()) return false;
  const owner = readPid(path.join(dir, 'owner.json'), (t) =>
    String((JSON.parse(t) as { pid?: number }).pid),
  );
  if (owner === undefined && Date.now() - stat.mtimeMs < OWNERLESS_GRACE_MS) return false;
  if (owner !== undefined && alive(owner)) return false;
  const postmaster = postmasterPid(dir);
  if (postmaster !== undefined && alive(postmaster) && servesDir(postmaster, dir)) {
    // SIGQUIT: immediate shutdown; the data is thrown away anyway.
    process.kill(postmaster, 'SIGQUIT');
    for (let i = 0; i < 100 && alive(postmaster); i++) await sleep(50);
  }
  rmSync(dir, { recursive: true, force: true });
  return true;
}

/**
 * Stops and deletes the embedded clusters of runs whose process is gone (a crash, a
 * killed worker, a kept database from an earlier run). Live runs' clusters, other users'
 * folders and folders still being created are left alone; a folder that cannot be
 * cleaned is skipped, never a reason to fail the run.
 */
export async function removeLeftoverServers(base = throwawayBase()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of readdirSync(base).filter((n) => n.startsWith(DIR_PREFIX))) {
    const dir = path.join(base, name);
    try {
      if (await removeLeftover(dir)) removed.push(dir);
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}
