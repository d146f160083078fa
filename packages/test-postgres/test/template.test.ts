import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import {
  acquireTemplate,
  hashFolder,
  releaseTemplate,
  templateName,
  withSql,
} from '../src/index.js';
import { urlForDatabase } from '../src/names.js';
import { databaseNames, serverConnection } from './support.js';

const prefix = 'bragdoc_tpltest';
let folder: string;
let a: postgres.Sql;
let b: postgres.Sql;
let migrations: string[];

const migrate = async (url: string) => {
  migrations.push(url);
  await withSql(url, (sql) => sql`create table marker (id int)`);
};
const acquire = (sql: postgres.Sql, name: string) =>
  acquireTemplate(sql, {
    name,
    serverUrl: inject('testPostgres').serverUrl,
    buildSuffix: 'x1',
    migrate,
  });
const nameFor = (dir: string) => templateName(prefix, [hashFolder(dir), '17']);

beforeEach(() => {
  folder = mkdtempSync(path.join(tmpdir(), 'tpl-migrations-'));
  writeFileSync(path.join(folder, '0000_init.sql'), 'create table marker (id int);');
  migrations = [];
  a = serverConnection();
  b = serverConnection();
});
afterEach(async () => {
  for (const name of await databaseNames(a, prefix)) {
    await a.unsafe(`alter database "${name}" is_template false`);
    await a.unsafe(`drop database "${name}" with (force)`);
  }
  await Promise.all([a.end(), b.end()]);
  rmSync(folder, { recursive: true, force: true });
});

describe('the migrated template', () => {
  it('is built once, then reused by a run that starts while another holds it', async () => {
    const name = nameFor(folder);
    expect(await acquire(a, name)).toEqual({ name, built: true });
    expect(await acquire(b, name)).toEqual({ name, built: false });
    expect(migrations).toHaveLength(1);
  });

  it('is built once when two runs ask for it at the same moment', async () => {
    const name = nameFor(folder);
    const results = await Promise.all([acquire(a, name), acquire(b, name)]);
    expect(results.map((r) => r.built).sort()).toEqual([false, true]);
    expect(migrations).toHaveLength(1);
  });

  it('gets a new name, and so is rebuilt, when a migration file changes', async () => {
    const before = nameFor(folder);
    await acquire(a, before);
    writeFileSync(path.join(folder, '0000_init.sql'), 'create table marker (id bigint);');
    const after = nameFor(folder);
    expect(after).not.toBe(before);
    expect(await acquire(a, after)).toEqual({ name: after, built: true });
    expect(migrations).toHaveLength(2);
  });

  it('gets a new name when a migration file is added', () => {
    const copy = mkdtempSync(path.join(tmpdir(), 'tpl-migrations-'));
    cpSync(folder, copy, { recursive: true });
    writeFileSync(path.join(copy, '0001_next.sql'), 'select 1;');
    expect(nameFor(copy)).not.toBe(nameFor(folder));
    rmSync(copy, { recursive: true, force: true });
  });

  it('is migrated under a temporary name, which a failed migration drops', async () => {
    const name = nameFor(folder);
    let seen: string[] = [];
    const failing = acquireTemplate(a, {
      name,
      serverUrl: inject('testPostgres').serverUrl,
      buildSuffix: 'x2',
      migrate: async () => {
        seen = await databaseNames(b, name);
        throw new Error('migration failed');
      },
    });
    await expect(failing).rejects.toThrow('migration failed');
    expect(seen).toEqual([`${name}_bx2`]); // during the build, only the temporary name exists
    expect(await databaseNames(a, name)).toEqual([]);
    expect(await acquire(b, name)).toEqual({ name, built: true });
    expect(await databaseNames(a, name)).toEqual([name]);
  });

  it('refuses connections, so no stray session can block cloning', async () => {
    const name = nameFor(folder);
    await acquire(a, name);
    const connect = withSql(
      urlForDatabase(inject('testPostgres').serverUrl, name),
      (sql) => sql`select 1`,
    );
    await expect(connect).rejects.toThrow(/not currently accepting connections/);
  });

  it('is dropped by the last run that releases it, not before', async () => {
    const name = nameFor(folder);
    await acquire(a, name);
    await acquire(b, name);
    expect(await releaseTemplate(a, name)).toBe(false);
    expect(await databaseNames(a, name)).toEqual([name]);
    expect(await releaseTemplate(b, name)).toBe(true);
    expect(await databaseNames(a, name)).toEqual([]);
  });
});
