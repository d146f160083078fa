import type { Database, Transaction } from '../client.js';
import { InvalidInputError, ReservationRefundError, sqlStateOf } from './errors.js';
import { type CreditHoldResult, holdCredits, settleCreditHold, voidCreditHold } from './holds.js';
import type { CreditChangeInput } from './ledger.js';
import {
  parse,
  parseChange,
  reservationInput,
  reservationOptions,
  usedAmount,
} from './validation.js';

export type ReservationInput = Omit<CreditChangeInput, 'idempotencyKey'>;

export interface ReservationOptions {
  /** How long the hold lasts if the process dies during `fn` (default 10 minutes, 1 s to 24 h). */
  expiresInMs?: number;
}

/** What `fn` gets: the hold, and a way to charge less than all of it. */
export interface CreditReservation extends CreditHoldResult {
  /**
   * Charge `amount` (0 to the held amount) instead of the whole hold when `fn` returns: the
   * rest is given back. 0 gives it all back. The last call counts.
   */
  use(amount: number): void;
}

const MAX_ERROR_CODE_POINTS = 500;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * The work's error for the void's metadata. It must pass the metadata validation, or the void
 * fails and the credits stay held until the hold expires: cut by code points (a UTF-16 cut
 * can split a surrogate pair) and NUL and lone surrogates, which PostgreSQL text cannot
 * hold, become U+FFFD.
 */
function errorNote(error: unknown): string {
  let message: string;
  try {
    message = error instanceof Error ? error.message : String(error);
  } catch {
    message = 'the work threw a value that cannot be printed';
  }
  // Two UTF-16 units per code point at most: no need to split a 1 MB message whole.
  const head = Array.from(String(message).slice(0, 2 * MAX_ERROR_CODE_POINTS + 1))
    .slice(0, MAX_ERROR_CODE_POINTS)
    .join('');
  return head.replaceAll('\u0000', '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * Hold, run, settle: holds `amount` (so two concurrent calls can never spend the same
 * credit), runs `fn`, and settles the hold when `fn` returns (for all of it, or what `fn`
 * passed to `reservation.use`), or voids it when `fn` throws, and rethrows. If the process
 * dies during `fn` (a serverless function killed at its maximum duration, an OOM kill, a
 * deploy), the hold expires after `expiresInMs` and its credits come back on their own.
 *
 * Inside a caller's transaction, at any isolation level, hold, settlement and void are part
 * of it: if `fn` aborted the transaction, its rollback takes the hold away with it, and
 * `fn`'s error is rethrown.
 */
export async function withCreditReservation<T>(
  db: Database | Transaction,
  input: ReservationInput,
  fn: (reservation: CreditReservation) => Promise<T>,
  options: ReservationOptions = {},
): Promise<T> {
  const parsed = parseChange(reservationInput, input);
  const { expiresInMs } = parse(reservationOptions, options, 'options');
  const hold = await holdCredits(db, { ...parsed, expiresInMs });
  let used = hold.transaction.amount;
  const reservation: CreditReservation = {
    ...hold,
    use(amount: number) {
      const value = parse(usedAmount, amount, 'amount');
      if (value > hold.transaction.amount)
        throw new InvalidInputError(
          'amount',
          `must be at most the held ${hold.transaction.amount}`,
        );
      used = value;
    },
  };
  let value: T;
  try {
    value = await fn(reservation);
  } catch (error) {
    try {
      await voidCreditHold(db, {
        holdId: hold.holdId,
        userId: parsed.userId,
        reason: 'reservation_failed',
        metadata: { error: errorNote(error) },
      });
    } catch (voidError) {
      // 25P02: `fn` failed inside the caller's transaction and aborted it. The hold goes when
      // that transaction rolls back, so there is nothing to give back.
      if (sqlStateOf(voidError) === '25P02') throw error;
      throw new ReservationRefundError(hold.holdId, error, voidError);
    }
    throw error;
  }
  if (used === 0)
    await voidCreditHold(db, { holdId: hold.holdId, userId: parsed.userId, reason: 'unused' });
  else await settleCreditHold(db, { holdId: hold.holdId, userId: parsed.userId, amount: used });
  return value;
}
