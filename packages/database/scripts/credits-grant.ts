import { randomUUID } from 'node:crypto';
import { createDatabase } from '../src/client.js';
import { getCreditBalance } from '../src/credits/balance.js';
import { grantCredits } from '../src/credits/ledger.js';
import { findUser } from '../src/credits/statement.js';
import { grantSourceValues } from '../src/credits/validation.js';
import { runCommand } from './run-command.js';
import {
  databaseUrl,
  isoInstant,
  parseCommandLine,
  requiredText,
  UsageError,
  wholeNumber,
} from './support-args.js';
import { printBalance, say, unitName } from './support-print.js';
import { AlreadyDoneError, alreadyUnderKey } from './support-replay.js';

const usage = `Usage: pnpm credits:grant <e-mail | user id> <amount> --reason TEXT --by WHO [--key K]
                          [--source support] [--expires DATE] [--chat-messages]

Grants credits (or chat messages) to a user in DATABASE_URL, as a grant with a source
(support unless --source says otherwise: ${grantSourceValues.join(', ')}) that never
expires, or expires at --expires. Records --reason (in the row's metadata) and --by (its
actor), prints what it did and the new balance.

Idempotent with --key: the same key grants once, and a retry prints the first grant. Without
--key the command makes one and prints it: rerun with that --key when you are unsure whether
a run went through.`;

async function run(): Promise<number> {
  const { values, positionals } = parseCommandLine({
    allowPositionals: true,
    options: {
      reason: { type: 'string' },
      by: { type: 'string' },
      key: { type: 'string' },
      source: { type: 'string', default: 'support' },
      expires: { type: 'string' },
      'chat-messages': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const [who, amountText, ...extra] = positionals;
  if (!who || amountText === undefined || extra.length > 0)
    throw new UsageError(`give an e-mail or user id and an amount.\n\n${usage}`);
  const amount = wholeNumber('amount', amountText) as number;
  const reason = requiredText('reason', values.reason, 'why the credits are granted');
  const by = requiredText('by', values.by, 'who grants them (an e-mail or a name)');
  const source = values.source as (typeof grantSourceValues)[number];
  if (!grantSourceValues.includes(source))
    throw new UsageError(
      `--source must be one of ${grantSourceValues.join(', ')}, got "${values.source}".`,
    );
  const expiresAt = isoInstant('expires', values.expires);
  const key = values.key ?? `support-grant:${randomUUID()}`;
  const featureType = values['chat-messages'] ? ('chat_message' as const) : undefined;
  const url = databaseUrl('credits:grant');
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:grant' });
  try {
    const target = await findUser(db, who);
    const result = await grantCredits(db, {
      userId: target.id,
      amount,
      source,
      metadata: { reason },
      actor: by,
      idempotencyKey: key,
      ...(expiresAt ? { expiresAt } : {}),
      ...(featureType ? { featureType } : {}),
    }).catch((error: unknown) => alreadyUnderKey(db, 'credits:grant', error));
    const unit = unitName(featureType ?? 'none', amount);
    const expiry = expiresAt ? `, expiring ${expiresAt.toISOString()}` : ', never expiring';
    say(
      result.replayed
        ? `credits:grant: already done: ${amount} ${unit} were granted to ${target.email} by row ${result.transaction.id} (seq ${result.transaction.seq}, ${result.transaction.createdAt.toISOString()}) under key ${key}; nothing written now.`
        : `credits:grant: granted ${amount} ${unit} (${source}${expiry}) to ${target.email}: row ${result.transaction.id}, seq ${result.transaction.seq}, by ${by}.`,
    );
    if (values.key === undefined)
      say(`credits:grant: key ${key}: to retry without granting twice, rerun with --key ${key}`);
    printBalance('credits:grant', target.email, await getCreditBalance(db, target.id));
    return 0;
  } finally {
    await close();
  }
}

runCommand(
  'credits:grant',
  run,
  (error) => error instanceof UsageError || error instanceof AlreadyDoneError,
);
