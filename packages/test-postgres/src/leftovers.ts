import type postgres from 'postgres';
import { LockClass, tryLock, unlock } from './locks.js';
import { escapeRegExp, quoteIdent } from './names.js';
import { dropTemplate } from './template.js';

/**
 * Drops the databases of this prefix that no live run owns: those of runs that crashed
 * (their RUN lock is free), templates no run uses (USE and BUILD locks free) and
 * builds that never finished.
 */
export async function removeLeftoverDatabases(
  sql: postgres.Sql,
  prefix: string,
  own: { run: string; template: string },
): Promise<string[]> {
  const p = escapeRegExp(prefix);
  // Anchored to the whole name (run id, then 8 hex), so a longer prefix that starts with
  // this one ("app" and "app_reports") is never taken for one of this prefix's runs.
  const runDb = new RegExp(`^(${p}_r[0-9a-z]+)_[0-9a-f]{8}$`);
  const templateDb = new RegExp(`^(${p}_tpl_[0-9a-f]{12})(_b[0-9a-z]+)?$`);
  const rows = await sql<{ datname: string }[]>`
    select datname from pg_database where starts_with(datname, ${`${prefix}_`}) order by datname`;
  const removed: string[] = [];

  const runs = new Map<string, string[]>();
  for (const { datname } of rows) {
    const run = runDb.exec(datname)?.[1];
    if (run && run !== own.run) runs.set(run, [...(runs.get(run) ?? []), datname]);
  }
  for (const [run, databases] of runs) {
    if (!(await tryLock(sql, LockClass.RUN, run))) continue;
    try {
      for (const db of databases) {
        await sql.unsafe(`drop database if exists ${quoteIdent(db)} with (force)`);
        removed.push(db);
      }
    } finally {
      await unlock(sql, LockClass.RUN, run);
    }
  }

  for (const { datname } of rows) {
    const match = templateDb.exec(datname);
    const template = match?.[1];
    // The current template is reused, not rebuilt: it is renamed into place only when complete.
    if (!template || datname === own.template) continue;
    if (!(await tryLock(sql, LockClass.BUILD, template))) continue;
    try {
      if (match[2]) {
        // A build that never finished: nobody builds now, since we hold BUILD.
        await sql.unsafe(`drop database if exists ${quoteIdent(datname)} with (force)`);
        removed.push(datname);
      } else if (await tryLock(sql, LockClass.USE, template)) {
        await dropTemplate(sql, template);
        await unlock(sql, LockClass.USE, template);
        removed.push(datname);
      }
    } finally {
      await unlock(sql, LockClass.BUILD, template);
    }
  }
  return removed;
}
