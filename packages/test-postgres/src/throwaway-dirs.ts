import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const DIR_PREFIX = 'bragdoc-test-pg-';

/** A tmpfs keeps a throwaway cluster off the disk, where initdb and CREATE DATABASE are slow. */
export function throwawayBase(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

export interface ThrowawayDir {
  /** Holds `owner.json` and the cluster's `data/`. */
  dir: string;
  dataDir: string;
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
  return { dir, dataDir: path.join(dir, 'data') };
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

/**
 * Stops and deletes the embedded clusters of runs whose process is gone (a crash, a
 * killed worker, a kept database from an earlier run). Live runs' clusters are left alone.
 */
export async function removeLeftoverServers(base = throwawayBase()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of readdirSync(base).filter((n) => n.startsWith(DIR_PREFIX))) {
    const dir = path.join(base, name);
    const owner = readPid(path.join(dir, 'owner.json'), (t) =>
      String((JSON.parse(t) as { pid?: number }).pid),
    );
    if (owner !== undefined && alive(owner)) continue;
    const postmaster = readPid(path.join(dir, 'data', 'postmaster.pid'), (t) => t.split('\n')[0]);
    if (postmaster !== undefined && alive(postmaster)) {
      // SIGQUIT: immediate shutdown; the data is thrown away anyway.
      process.kill(postmaster, 'SIGQUIT');
      for (let i = 0; i < 100 && alive(postmaster); i++) await sleep(50);
    }
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
