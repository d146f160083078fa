/**
 * A process that dies in the middle of its work: it starts withCreditReservation, says
 * "working" on stdout once `fn` runs, and then waits for ever, for the test to SIGKILL it
 * (as a serverless platform kills a function at its maximum duration).
 */
import { createDatabase } from '../../src/client.js';
import { withCreditReservation } from '../../src/credits/index.js';

const [url = '', userId = '', expiresInMs = '1000'] = process.argv.slice(2);
const { db } = createDatabase(url, { max: 1 });
await withCreditReservation(
  db,
  { userId, amount: 3, featureType: 'document_generation', metadata: { stream: 'llm' } },
  async (reservation) => {
    process.stdout.write(`working ${reservation.holdId}\n`);
    await new Promise(() => setInterval(() => {}, 60_000));
  },
  { expiresInMs: Number(expiresInMs) },
);
