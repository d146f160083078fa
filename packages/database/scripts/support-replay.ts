import { eq } from 'drizzle-orm';
import type { Database } from '../src/client.js';
import { IdempotencyConflictError } from '../src/credits/errors.js';
import { creditTransaction } from '../src/schema.js';
import { printable } from './support-print.js';

/** A support command that was already done under its key, with other arguments. */
export class AlreadyDoneError extends Error {}

/**
 * What a support command's conflict on its idempotency key means to the person who ran it:
 * the action was already done, by that row, with other arguments (a reason retyped, another
 * actor). Said plainly, with the row, so that nobody "fixes" it with a new key and does it
 * twice. Anything else is rethrown as it is.
 */
export async function alreadyUnderKey(
  db: Database,
  command: string,
  error: unknown,
): Promise<never> {
  if (!(error instanceof IdempotencyConflictError)) throw error;
  const [row] = await db
    .select()
    .from(creditTransaction)
    .where(eq(creditTransaction.id, error.existingTransactionId));
  const reason = (row?.metadata as { reason?: unknown } | null)?.reason;
  const what = row
    ? `${row.operation} of ${row.amount} at ${row.createdAt.toISOString()}${typeof reason === 'string' ? `, reason "${reason}"` : ''}${row.actor ? `, by ${row.actor}` : ''}`
    : 'a row since removed with its user';
  throw new AlreadyDoneError(
    printable(
      `already done under key ${error.idempotencyKey}: row ${error.existingTransactionId} (${what}); nothing written now. ` +
        `This run's arguments differ from that one's. Only to ${command === 'credits:grant' ? 'grant' : 'refund'} a second time on purpose, rerun with a new --key.`,
    ),
  );
}
