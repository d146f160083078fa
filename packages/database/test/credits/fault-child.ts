/**
 * Load for the fault tests: workers deduct credits with idempotency keys while the test
 * terminates this process's connections or restarts the server. Prints one JSON line: the
 * unhandled rejections and uncaught exceptions the process saw (each would end a Node.js
 * process by default), how many retries, and every error that was not retried to success.
 *
 *   fault-child.ts <url> <user ids, comma-separated> <deductions per worker> [options JSON]
 *
 * Options: `driver` (`postgres-js`, default, or `node-postgres`); `retry`: `loop` (default:
 * the caller retries what is `retryable`, as the README shows) or `policy` (the package's
 * retry policy, with `attempts` and `deadlineMs`).
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { createDatabase, type Database } from '../../src/client.js';
import { deductCredits, type RetryPolicy, setRetryPolicy } from '../../src/credits/index.js';
import * as schema from '../../src/schema.js';

interface Options {
  driver?: 'postgres-js' | 'node-postgres';
  retry?: 'loop' | 'policy';
  attempts?: number;
  deadlineMs?: number;
}

const [url = '', users = '', perWorker = '50', json = '{}'] = process.argv.slice(2);
const options = JSON.parse(json) as Options;
const unhandledMessages: string[] = [];
process.on('unhandledRejection', (reason) => {
  unhandledMessages.push(String(reason));
});
const uncaughtMessages: string[] = [];
process.on('uncaughtException', (error) => {
  uncaughtMessages.push(String(error));
});

const applicationName = 'bragdoc-fault-load';
let retries = 0;
const policy: RetryPolicy | undefined =
  options.retry === 'policy'
    ? {
        attempts: options.attempts ?? 20,
        baseDelayMs: 20,
        maxDelayMs: 250,
        deadlineMs: options.deadlineMs ?? 20_000,
        onRetry: () => {
          retries++;
        },
      }
    : undefined;

function connect(): { db: Database; close: () => Promise<void> } {
  if (options.driver === 'node-postgres') {
    const pool = new pg.Pool({ connectionString: url, max: 8, application_name: applicationName });
    // An idle client whose connection is lost makes the pool emit 'error': with no listener,
    // that is an uncaught exception (see the README, Deploying). The pool drops the client.
    pool.on('error', () => {});
    const db = drizzle(pool, { schema });
    setRetryPolicy(db, policy);
    return { db, close: () => pool.end() };
  }
  const handle = createDatabase(url, { max: 8, applicationName, retry: policy });
  return handle;
}

const { db, close } = connect();
const failures: string[] = [];
await Promise.all(
  users.split(',').map(async (userId, worker) => {
    for (let i = 0; i < Number(perWorker); i++) {
      for (let attempt = 1; ; attempt++) {
        try {
          await deductCredits(db, {
            userId,
            amount: 1,
            featureType: 'chat_tool_call',
            idempotencyKey: `fault-${worker}-${i}`,
          });
          break;
        } catch (error) {
          const retryable = (error as { retryable?: boolean }).retryable === true;
          if (policy || !retryable || attempt >= 100) {
            failures.push(`${(error as { code?: string }).code}: ${String(error)}`);
            break;
          }
          retries++;
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
        }
      }
    }
  }),
);
await close();
// Let any late rejection surface before counting.
await new Promise((resolve) => setTimeout(resolve, 200));
process.stdout.write(
  `${JSON.stringify({ unhandledMessages, uncaughtMessages, retries, failures })}\n`,
);
