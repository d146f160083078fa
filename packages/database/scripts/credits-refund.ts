import { eq } from 'drizzle-orm';
import { createDatabase } from '../src/client.js';
import { getCreditBalance } from '../src/credits/balance.js';
import { InvalidRefundTargetError } from '../src/credits/errors.js';
import { refundCredits } from '../src/credits/ledger.js';
import { userIdInput } from '../src/credits/validation.js';
import { creditTransaction, user } from '../src/schema.js';
import { runCommand } from './run-command.js';
import {
  databaseUrl,
  parseCommandLine,
  requiredText,
  UsageError,
  wholeNumber,
} from './support-args.js';
import { printBalance, say, unitName } from './support-print.js';
import { AlreadyDoneError, alreadyUnderKey } from './support-replay.js';

const usage = `Usage: pnpm credits:refund <charge id> [--amount N] --reason TEXT --by WHO [--key K]

Refunds a charge in DATABASE_URL: a deduction, or the settlement of a hold (what a
reservation charged). Gives back all of it, or N with --amount, to the grants it came from
(what goes back to a grant that has expired since expires again at once). Records --reason
(in the row's metadata) and --by (its actor), prints what it did and the new balance.

Idempotent per charge and amount: the refund's key is "support-refund:<charge id>:<amount>"
unless --key is given, so running the same command twice refunds once. To refund the same
amount of a charge a second time on purpose, give a new --key. What the ledger refuses (more
than was charged, a charge of an unlimited plan, not a charge) is printed in one line, and
nothing is written.`;

async function run(): Promise<number> {
  const { values, positionals } = parseCommandLine({
    allowPositionals: true,
    options: {
      amount: { type: 'string' },
      reason: { type: 'string' },
      by: { type: 'string' },
      key: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const [chargeId, ...extra] = positionals;
  if (!chargeId || extra.length > 0) throw new UsageError(`give one charge id.\n\n${usage}`);
  const reason = requiredText('reason', values.reason, 'why the credits are refunded');
  const by = requiredText('by', values.by, 'who refunds them (an e-mail or a name)');
  const asked = wholeNumber('amount', values.amount);
  const id = userIdInput.safeParse(chargeId);
  if (!id.success)
    throw new UsageError(`the charge id must be a trail row's id (a UUID), got "${chargeId}".`);
  const url = databaseUrl('credits:refund');
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:refund' });
  try {
    const [charge] = await db
      .select({
        id: creditTransaction.id,
        userId: creditTransaction.userId,
        email: user.email,
        operation: creditTransaction.operation,
        amount: creditTransaction.amount,
        featureType: creditTransaction.featureType,
        createdAt: creditTransaction.createdAt,
      })
      .from(creditTransaction)
      .innerJoin(user, eq(user.id, creditTransaction.userId))
      .where(eq(creditTransaction.id, id.data));
    if (!charge) throw new InvalidRefundTargetError(chargeId, 'not_found');
    const amount = asked ?? charge.amount;
    const key = values.key ?? `support-refund:${charge.id}:${amount}`;
    const result = await refundCredits(db, {
      userId: charge.userId,
      amount,
      featureType: charge.featureType,
      refundOf: charge.id,
      metadata: { reason },
      actor: by,
      idempotencyKey: key,
    }).catch((error: unknown) => alreadyUnderKey(db, 'credits:refund', error));
    const unit = unitName(charge.featureType, amount);
    say(
      result.replayed
        ? `credits:refund: already done: ${amount} ${unit} of ${charge.operation} ${charge.id} were refunded to ${charge.email} by row ${result.transaction.id} (seq ${result.transaction.seq}, ${result.transaction.createdAt.toISOString()}, key ${key}); nothing written now.`
        : `credits:refund: refunded ${amount} ${unit} of ${charge.operation} ${charge.id} (${charge.amount} for ${charge.featureType} on ${charge.createdAt.toISOString()}) to ${charge.email}: row ${result.transaction.id}, seq ${result.transaction.seq}, by ${by}, key ${key}.`,
    );
    printBalance('credits:refund', charge.email, await getCreditBalance(db, charge.userId));
    return 0;
  } finally {
    await close();
  }
}

runCommand(
  'credits:refund',
  run,
  (error) => error instanceof UsageError || error instanceof AlreadyDoneError,
);
