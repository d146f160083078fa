/**
 * Load for the fault test: workers deduct credits with idempotency keys and retry what the
 * package reports as retryable, while the test terminates this process's connections. Prints
 * one JSON line: how many unhandled rejections the process saw (each would end a Node.js
 * process by default), how many retries, and every error that was not retryable.
 */
import { createDatabase } from '../../src/client.js';
import { deductCredits } from '../../src/credits/index.js';

const [url = '', users = '', perWorker = '50'] = process.argv.slice(2);
const unhandledMessages: string[] = [];
process.on('unhandledRejection', (reason) => {
  unhandledMessages.push(String(reason));
});

const { db, close } = createDatabase(url, { max: 8, applicationName: 'bragdoc-fault-load' });
let retries = 0;
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
          if ((error as { retryable?: boolean }).retryable !== true || attempt >= 100) {
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
process.stdout.write(`${JSON.stringify({ unhandledMessages, retries, failures })}\n`);
