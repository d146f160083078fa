/**
 * Runs fault-child.ts (keyed deductions under faults) in a child process, so that what would
 * end a Node.js process (an unhandled rejection, an uncaught exception) is counted for real,
 * and checks afterwards that every key was charged exactly once.
 */
import { spawn } from 'node:child_process';
import { withSql } from '@bragdoc/test-postgres';
import { expect } from 'vitest';
import { packageDir } from '../run-script.js';

export interface LoadOptions {
  driver?: 'postgres-js' | 'node-postgres';
  retry?: 'loop' | 'policy';
  attempts?: number;
  deadlineMs?: number;
}

export interface LoadReport {
  exitCode: number | null;
  unhandledMessages: string[];
  uncaughtMessages: string[];
  retries: number;
  failures: string[];
}

export interface Load {
  /** Resolves when the child has exited, with what it printed. */
  done: Promise<LoadReport>;
  /** False once the child has exited. */
  running: () => boolean;
}

export function startLoad(
  url: string,
  userIds: string[],
  perWorker: number,
  options: LoadOptions = {},
): Load {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'test/credits/fault-child.ts',
      url,
      userIds.join(','),
      String(perWorker),
      JSON.stringify(options),
    ],
    { cwd: packageDir, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  let running = true;
  const done = new Promise<LoadReport>((resolve) => {
    child.on('exit', (exitCode) => {
      running = false;
      const last = out.trim().split('\n').at(-1) || '{}';
      const printed = JSON.parse(last) as Partial<LoadReport>;
      resolve({
        exitCode,
        unhandledMessages: printed.unhandledMessages ?? ['(the child printed no report)'],
        uncaughtMessages: printed.uncaughtMessages ?? [],
        retries: printed.retries ?? 0,
        failures: printed.failures ?? [],
      });
    });
  });
  return { done, running: () => running };
}

/** How many of the load's deductions are in the trail so far. */
export function chargedSoFar(url: string): Promise<number> {
  return withSql(url, async (sql) => {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from "CreditTransaction" where idempotency_key like 'fault-%'`;
    return row?.n ?? 0;
  });
}

/** Every key charged once: one row per key, and each balance is what its rows explain. */
export async function expectChargedOnce(
  url: string,
  userIds: string[],
  perWorker: number,
  opening: number,
): Promise<void> {
  await withSql(url, async (sql) => {
    const [counts] = await sql<{ rows: number; keys: number }[]>`
      select count(*)::int as rows, count(distinct (user_id, idempotency_key))::int as keys
        from "CreditTransaction" where idempotency_key like 'fault-%'`;
    expect(counts).toEqual({ rows: userIds.length * perWorker, keys: userIds.length * perWorker });
    const balances = await sql<{ free_credits: number }[]>`
      select free_credits from "User" where id = any(${userIds}::uuid[])`;
    expect(balances.map((b) => b.free_credits)).toEqual(userIds.map(() => opening - perWorker));
  });
}
