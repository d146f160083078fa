import { parseArgs } from 'node:util';
import { createDatabase } from '../src/client.js';
import { expireCreditGrants } from '../src/credits/grants.js';
import { expireCreditHolds } from '../src/credits/holds.js';
import { MAX_EXPIRE_BATCH } from '../src/credits/validation.js';
import { redactUrl } from '../src/migrate/redact.js';
import { runCommand } from './run-command.js';

const usage = `Usage: pnpm credits:expire-holds [--limit N] [--batch N] [--quiet]

Gives back the credits of every hold in DATABASE_URL that is past its expiry, each with an
expire row in the trail, then takes off what remains of every grant past its expiry, each
with an expire_grant row, and prints what it did. For a cron job or a worker: the ledger does
not depend on it (each user's next write or balance read expires that user's due holds), it
only brings credits back for users who are not active. Safe to run at once with itself and
with the app. Exits 0 when it ran, 1 on an error.

  --limit N   expire at most N holds, and N grants, in all (default: all that are due)
  --batch N   holds (or grants) per transaction, 1–${MAX_EXPIRE_BATCH} (default 1000)
  --quiet     print only the summaries, not one line per hold or grant`;

const positive = (name: string, value: string | undefined): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new RangeError(`--${name} must be a positive whole number, got "${value}".`);
  return n;
};

async function run(): Promise<number> {
  const { values } = parseArgs({
    options: {
      limit: { type: 'string' },
      batch: { type: 'string', default: '1000' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const limit = positive('limit', values.limit) ?? Number.POSITIVE_INFINITY;
  const batch = positive('batch', values.batch) ?? 1000;
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error(
      'credits:expire-holds works on the database in DATABASE_URL, and it is not set. For the ' +
        'local one, start it with `pnpm db:dev` and set DATABASE_URL to the URL it prints.',
    );
    return 2;
  }
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:expire-holds' });
  const started = performance.now();
  let expired = 0;
  let credits = 0;
  let chatMessages = 0;
  try {
    // Batches until none is due (or the limit): each batch is its own transaction, so a
    // long run never holds many users' locks at once.
    while (expired < limit) {
      const { expired: rows } = await expireCreditHolds(db, {
        limit: Math.min(batch, limit - expired),
      });
      for (const row of rows) {
        if (row.featureType === 'chat_message') chatMessages += row.amount;
        else credits += row.amount;
        if (!values.quiet)
          console.log(
            `  expired hold ${row.holdId} of user ${row.userId}: ${row.amount} ${row.featureType === 'chat_message' ? 'chat messages' : 'credits'} back (trail seq ${row.seq})`,
          );
      }
      expired += rows.length;
      if (rows.length === 0) break;
    }
    const took = Math.round(performance.now() - started);
    console.log(
      `credits:expire-holds: ${redactUrl(url)}: expired ${expired} hold${expired === 1 ? '' : 's'} ` +
        `(${credits} credits and ${chatMessages} chat messages given back) in ${took} ms.`,
    );
    const grantsStarted = performance.now();
    let grants = 0;
    let lapsedCredits = 0;
    let lapsedChats = 0;
    while (grants < limit) {
      const { expired: rows } = await expireCreditGrants(db, {
        limit: Math.min(batch, limit - grants),
      });
      for (const row of rows) {
        if (row.featureType === 'chat_message') lapsedChats += row.amount;
        else lapsedCredits += row.amount;
        if (!values.quiet)
          console.log(
            `  expired grant ${Object.keys(row.allocations ?? {}).join(', ')} of user ${row.userId}: ${row.amount} ${row.featureType === 'chat_message' ? 'chat messages' : 'credits'} taken off (trail seq ${row.seq})`,
          );
      }
      grants += rows.length;
      if (rows.length === 0) break;
    }
    console.log(
      `credits:expire-holds: ${redactUrl(url)}: expired ${grants} grant${grants === 1 ? '' : 's'} ` +
        `(${lapsedCredits} credits and ${lapsedChats} chat messages taken off) in ${Math.round(performance.now() - grantsStarted)} ms.`,
    );
    return 0;
  } finally {
    await close();
  }
}

runCommand('credits:expire-holds', run, (error) => error instanceof RangeError);
