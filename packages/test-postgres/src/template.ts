import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type postgres from 'postgres';
import { LockClass, lock, lockShared, tryLock, unlock, unlockShared } from './locks.js';
import { quoteIdent, urlForDatabase } from './names.js';

/** sha256 over every file of a folder (relative path and content), in a stable order. */
export function hashFolder(folder: string): string {
  const hash = createHash('sha256');
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else
        hash
          .update(path.relative(folder, full))
          .update('\0')
          .update(readFileSync(full))
          .update('\0');
    }
  };
  walk(folder);
  return hash.digest('hex');
}

/**
 * The template's name: a new set of migrations (or a new server version) gets a new
 * template, so a changed migration file can never be served from a stale one.
 */
export function templateName(prefix: string, parts: string[]): string {
  const key = createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 12);
  return `${prefix}_tpl_${key}`;
}

async function databaseExists(sql: postgres.Sql, name: string): Promise<boolean> {
  const rows = await sql`select 1 from pg_database where datname = ${name}`;
  return rows.length > 0;
}

export async function dropTemplate(sql: postgres.Sql, name: string): Promise<void> {
  if (!(await databaseExists(sql, name))) return;
  await sql.unsafe(`alter database ${quoteIdent(name)} is_template false`);
  await sql.unsafe(`drop database if exists ${quoteIdent(name)} with (force)`);
}

// The migrator's backend may still be exiting when its client says it has closed.
async function renameDatabase(sql: postgres.Sql, from: string, to: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await sql.unsafe(`alter database ${quoteIdent(from)} rename to ${quoteIdent(to)}`);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== '55006' || attempt >= 50) throw error;
      await sleep(20);
    }
  }
}

export interface AcquiredTemplate {
  name: string;
  /** False when another run (or an earlier, crashed one) had built it already. */
  built: boolean;
}

/**
 * Makes sure the migrated template exists and registers this run as one of its users.
 * Under the BUILD lock, so parallel runs on one server build it once: it is built under a
 * temporary name and renamed when complete, so a crash mid-build never leaves a
 * half-migrated template behind under the real name (a failed migration drops it; a
 * crashed run's is removed by the next run).
 */
export async function acquireTemplate(
  sql: postgres.Sql,
  options: {
    name: string;
    serverUrl: string;
    buildSuffix: string;
    migrate: (url: string) => Promise<unknown>;
  },
): Promise<AcquiredTemplate> {
  const { name } = options;
  await lock(sql, LockClass.BUILD, name);
  try {
    let built = false;
    if (!(await databaseExists(sql, name))) {
      const partial = await sql<{ datname: string }[]>`
        select datname from pg_database where starts_with(datname, ${`${name}_b`})`;
      for (const { datname } of partial) {
        await sql.unsafe(`drop database if exists ${quoteIdent(datname)} with (force)`);
      }
      const building = `${name}_b${options.buildSuffix}`;
      await sql.unsafe(`create database ${quoteIdent(building)}`);
      try {
        await options.migrate(urlForDatabase(options.serverUrl, building));
      } catch (error) {
        await sql.unsafe(`drop database if exists ${quoteIdent(building)} with (force)`);
        throw error;
      }
      await renameDatabase(sql, building, name);
      // No connections: a stray session on the template would make every clone fail.
      await sql.unsafe(
        `alter database ${quoteIdent(name)} is_template true allow_connections false`,
      );
      built = true;
    }
    await lockShared(sql, LockClass.USE, name);
    return { name, built };
  } finally {
    await unlock(sql, LockClass.BUILD, name);
  }
}

/** Unregisters this run; the last run using the template drops it. */
export async function releaseTemplate(sql: postgres.Sql, name: string): Promise<boolean> {
  await lock(sql, LockClass.BUILD, name);
  try {
    await unlockShared(sql, LockClass.USE, name);
    if (!(await tryLock(sql, LockClass.USE, name))) return false;
    try {
      await dropTemplate(sql, name);
      return true;
    } finally {
      await unlock(sql, LockClass.USE, name);
    }
  } finally {
    await unlock(sql, LockClass.BUILD, name);
  }
}
