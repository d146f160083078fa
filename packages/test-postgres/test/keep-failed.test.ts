import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { isPortFree, withSql } from '../src/index.js';
import { urlForDatabase } from '../src/names.js';
import { databaseNames, serverConnection } from './support.js';

const fixture = fileURLToPath(new URL('./fixtures/keep-failed/vitest.config.ts', import.meta.url));
const prefix = 'bragdoc_keeptest_';
// vitest's CLI entry; its exports map does not expose it.
const vitestBin = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));

/**
 * This run's server URL with a password in it. A server on trust auth (the embedded one)
 * ignores it, so the redaction of kept URLs is tested on every provider.
 */
function serverUrlWithPassword(): { url: string; password: string } {
  const url = new URL(inject('testPostgres').serverUrl);
  url.password ||= 'kept-url-secret';
  return { url: url.toString(), password: url.password };
}

/** Runs the fixture suite (one failing test per file) in a child vitest on this run's server. */
function runFixture(
  keep: boolean,
  provider: 'url' | 'embedded' = 'url',
): Promise<{ code: number; output: string }> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEST_DATABASE_URL: serverUrlWithPassword().url,
    TEST_POSTGRES_PROVIDER: provider,
  };
  delete env.VITEST;
  delete env.VITEST_POOL_ID;
  delete env.VITEST_WORKER_ID;
  if (keep) env.TEST_POSTGRES_KEEP_FAILED = '1';
  else delete env.TEST_POSTGRES_KEEP_FAILED;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [vitestBin, 'run', '--config', fixture],
      { env, timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

afterEach(async () => {
  const sql = serverConnection();
  for (const name of await databaseNames(sql, prefix))
    await sql.unsafe(`drop database "${name}" with (force)`);
  await sql.end();
});

describe('TEST_POSTGRES_KEEP_FAILED', () => {
  it('keeps the databases of failed tests, prints their URLs, and drops the rest', async () => {
    const { code, output } = await runFixture(true);
    expect(code).toBe(1);
    const kept = [...output.matchAll(/kept the database of failed (.+): (postgres:\/\/\S+)/g)];
    expect(kept.map((m) => m[1]).sort()).toEqual([
      'test "fails after writing a row" (its file\'s database)',
      'test "fails alone"',
    ]);

    const sql = serverConnection();
    const left = await databaseNames(sql, prefix);
    await sql.end();
    expect(left).toHaveLength(2); // the two kept ones; the passing test's and the template are gone
    // The printed URLs hide the password; connect by database name.
    const { password } = serverUrlWithPassword();
    expect(output).not.toContain(password);
    for (const [, , url] of kept) expect(new URL(url ?? '').password).toBe('***');
    const perFileUrl = new URL(kept.find((m) => m[1]?.includes('its file'))?.[2] ?? '');
    const serverUrl = new URL(inject('testPostgres').serverUrl);
    const owners = await withSql(
      urlForDatabase(serverUrl.toString(), perFileUrl.pathname.slice(1)),
      (s) => s`select owner from marker order by id`,
    );
    expect(owners.map((r) => r.owner)).toEqual(['passing test', 'failing test']);
  });

  it('without it, a failed run leaves no database behind', async () => {
    const { code, output } = await runFixture(false);
    expect(code).toBe(1);
    expect(output).not.toContain('kept the database');
    const sql = serverConnection();
    expect(await databaseNames(sql, prefix)).toEqual([]);
    await sql.end();
  });

  it('a kept database is removed by the next run of the same suite', async () => {
    await runFixture(true);
    const sql = serverConnection();
    const kept = await databaseNames(sql, prefix);
    expect(kept).toHaveLength(2);
    const { output } = await runFixture(false);
    expect(output).toContain('removed 2 leftover(s) of earlier runs');
    const url = urlForDatabase(inject('testPostgres').serverUrl, kept[0] ?? '');
    await expect(withSql(url, (s) => s`select 1`)).rejects.toThrow(/does not exist/);
    await sql.end();
  });

  it('on the embedded provider, leaves the server running for the kept databases and says how to stop it', async () => {
    const { code, output } = await runFixture(true, 'embedded');
    expect(code).toBe(1);
    const stop = /stop it with: kill -INT (\d+) && rm -rf (\S+)/.exec(output);
    const kept = /kept the database of failed test "fails alone": (postgres:\/\/\S+)/.exec(output);
    expect(stop).not.toBeNull();
    expect(kept).not.toBeNull();
    const [, pid, dir] = stop as RegExpExecArray;
    const url = (kept as RegExpExecArray)[1] ?? '';
    try {
      const rows = await withSql(url, (s) => s`select owner from marker`);
      expect(rows.map((r) => r.owner)).toEqual(['per-test fail']);
    } finally {
      process.kill(Number(pid), 'SIGINT');
      for (let i = 0; i < 100 && (await isPortFree(Number(new URL(url).port))) === false; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      rmSync(dir ?? '', { recursive: true, force: true });
    }
    expect(await isPortFree(Number(new URL(url).port))).toBe(true);
  });
});
