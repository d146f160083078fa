import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import type postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  isPortFree,
  removeLeftoverDatabases,
  removeLeftoverServers,
  startEmbeddedPostgres,
} from '../src/index.js';
import { LockClass, lock, lockShared } from '../src/locks.js';
import { throwawayBase } from '../src/throwaway-dirs.js';
import { databaseNames, serverConnection } from './support.js';

const prefix = 'bragdoc_lefttest';
const current = { run: `${prefix}_rcurrent`, template: `${prefix}_tpl_cccccccccccc` };
let sql: postgres.Sql;
let other: postgres.Sql;

beforeEach(() => {
  sql = serverConnection();
  other = serverConnection();
});
afterEach(async () => {
  for (const name of await databaseNames(sql, prefix)) {
    await sql.unsafe(`alter database "${name}" is_template false`);
    await sql.unsafe(`drop database "${name}" with (force)`);
  }
  await Promise.all([sql.end(), other.end()]);
});

const create = (name: string) => sql.unsafe(`create database "${name}"`);

describe('removeLeftoverDatabases()', () => {
  it('drops the databases of a run that is gone (its lock is free)', async () => {
    await create(`${prefix}_rcrashed_aaaaaaaa`);
    await create(`${prefix}_rcrashed_bbbbbbbb`);
    const removed = await removeLeftoverDatabases(sql, prefix, current);
    expect(removed.sort()).toEqual([`${prefix}_rcrashed_aaaaaaaa`, `${prefix}_rcrashed_bbbbbbbb`]);
    expect(await databaseNames(sql, prefix)).toEqual([]);
  });

  it('keeps the databases of a run that is still going (its lock is held)', async () => {
    await create(`${prefix}_rlive_aaaaaaaa`);
    await lock(other, LockClass.RUN, `${prefix}_rlive`);
    expect(await removeLeftoverDatabases(sql, prefix, current)).toEqual([]);
    expect(await databaseNames(sql, prefix)).toEqual([`${prefix}_rlive_aaaaaaaa`]);
  });

  it('drops a template no run uses, keeps one in use and the current one', async () => {
    await create(`${prefix}_tpl_aaaaaaaaaaaa`);
    await create(`${prefix}_tpl_bbbbbbbbbbbb`);
    await create(current.template);
    await lockShared(other, LockClass.USE, `${prefix}_tpl_bbbbbbbbbbbb`);
    expect(await removeLeftoverDatabases(sql, prefix, current)).toEqual([
      `${prefix}_tpl_aaaaaaaaaaaa`,
    ]);
    expect(await databaseNames(sql, prefix)).toEqual([
      `${prefix}_tpl_bbbbbbbbbbbb`,
      current.template,
    ]);
  });

  it('drops an unfinished template build', async () => {
    await create(`${prefix}_tpl_aaaaaaaaaaaa_bxyz`);
    expect(await removeLeftoverDatabases(sql, prefix, current)).toEqual([
      `${prefix}_tpl_aaaaaaaaaaaa_bxyz`,
    ]);
  });

  it('never touches databases of a longer prefix that starts with this one', async () => {
    // "bragdoc_lefttest" and "bragdoc_lefttest_reports": the second's run ids must not
    // read as runs of the first.
    const other = `${prefix}_reports_rcrashed_aaaaaaaa`;
    await create(other);
    try {
      expect(await removeLeftoverDatabases(sql, prefix, current)).toEqual([]);
      expect(await databaseNames(sql, other)).toEqual([other]);
    } finally {
      await sql.unsafe(`drop database "${other}"`);
    }
  });
});

describe('removeLeftoverServers()', () => {
  let base: string;
  beforeEach(() => {
    base = mkdtempSync(path.join(throwawayBase(), 'leftover-test-'));
    chmodSync(base, 0o755);
  });
  afterEach(() => rmSync(base, { recursive: true, force: true }));

  const deadPid = () => spawnSync('true').pid;
  const clusterDir = (owner: number | undefined) => {
    const dir = path.join(base, `bragdoc-test-pg-${Math.random().toString(36).slice(2, 8)}`);
    mkdirSync(dir, { mode: 0o755 });
    if (owner !== undefined)
      writeFileSync(path.join(dir, 'owner.json'), JSON.stringify({ pid: owner }));
    return dir;
  };

  it('stops and deletes the running cluster of a process that is gone', async () => {
    const dir = clusterDir(deadPid());
    const server = await startEmbeddedPostgres({
      dataDir: path.join(dir, 'data'),
      throwaway: true,
    });
    server.detach(); // as a crashed run would have left it: running, owned by nobody
    expect(await isPortFree(server.port)).toBe(false);

    expect(await removeLeftoverServers(base)).toEqual([dir]);
    expect(existsSync(dir)).toBe(false);
    expect(await isPortFree(server.port)).toBe(true);
  });

  it('leaves alone the cluster of a live process', async () => {
    const dir = clusterDir(process.pid);
    expect(await removeLeftoverServers(base)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
  });

  it('deletes an old folder without an owner (a run that died while creating it)', async () => {
    const dir = clusterDir(undefined);
    const anHourAgo = new Date(Date.now() - 3600_000);
    utimesSync(dir, anHourAgo, anHourAgo);
    expect(await removeLeftoverServers(base)).toEqual([dir]);
  });

  it('leaves alone a fresh folder without an owner (a parallel run creating it)', async () => {
    const dir = clusterDir(undefined);
    expect(await removeLeftoverServers(base)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
  });
});
