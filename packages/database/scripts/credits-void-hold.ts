import { eq } from 'drizzle-orm';
import { createDatabase } from '../src/client.js';
import { getCreditBalance } from '../src/credits/balance.js';
import { voidCreditHold } from '../src/credits/holds.js';
import { user } from '../src/schema.js';
import { runCommand } from './run-command.js';
import { databaseUrl, parseCommandLine, requiredText, UsageError } from './support-args.js';
import { printBalance, say, unitName } from './support-print.js';

const usage = `Usage: pnpm credits:void-hold <hold id> --reason TEXT --by WHO

Releases a stuck hold in DATABASE_URL (a job that died holding credits): gives all it holds
back to the grants it took from, with a void row recording --reason and --by. Prints what
it did and the new balance. A hold already settled, voided or expired is refused in one
line, and nothing is written; running it twice voids once.`;

async function run(): Promise<number> {
  const { values, positionals } = parseCommandLine({
    allowPositionals: true,
    options: {
      reason: { type: 'string' },
      by: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const [holdId, ...extra] = positionals;
  if (!holdId || extra.length > 0) throw new UsageError(`give one hold id.\n\n${usage}`);
  const reason = requiredText('reason', values.reason, 'why the hold is released');
  const by = requiredText('by', values.by, 'who releases it (an e-mail or a name)');
  const url = databaseUrl('credits:void-hold');
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:void-hold' });
  try {
    const result = await voidCreditHold(db, { holdId, reason, actor: by });
    const [owner] = await db
      .select({ email: user.email })
      .from(user)
      .where(eq(user.id, result.transaction.userId));
    const email = owner?.email ?? result.transaction.userId;
    say(
      `credits:void-hold: released hold ${holdId} of ${email}: ${result.transaction.amount} ${unitName(result.transaction.featureType, result.transaction.amount)} given back, row ${result.transaction.id}, seq ${result.transaction.seq}, by ${by}.`,
    );
    printBalance('credits:void-hold', email, await getCreditBalance(db, result.transaction.userId));
    return 0;
  } finally {
    await close();
  }
}

runCommand('credits:void-hold', run, (error) => error instanceof UsageError);
