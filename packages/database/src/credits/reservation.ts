import type { Database, Transaction } from '../client.js';
import { ReservationRefundError, sqlStateOf } from './errors.js';
import {
  type CreditChangeInput,
  type CreditChangeResult,
  deductCredits,
  refundCredits,
} from './ledger.js';
import { parseChange, reservationInput } from './validation.js';

export type ReservationInput = Omit<CreditChangeInput, 'idempotencyKey'>;

const MAX_ERROR_CODE_POINTS = 500;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * The work's error as refund metadata. It must pass the metadata validation, or the refund
 * fails and the user stays charged: cut by code points (a UTF-16 cut can split a surrogate
 * pair) and NUL and lone surrogates, which PostgreSQL text cannot hold, become U+FFFD.
 */
function refundErrorNote(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // Two UTF-16 units per code point at most: no need to split a 1 MB message whole.
  const head = Array.from(message.slice(0, 2 * MAX_ERROR_CODE_POINTS + 1))
    .slice(0, MAX_ERROR_CODE_POINTS)
    .join('');
  return head.replaceAll('\u0000', '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * Reserve, execute, refund on failure: deducts `amount` first (so two concurrent calls can
 * never spend the same credit), runs `fn`, and if `fn` throws, refunds the reservation
 * (linked by `refundOf`) and rethrows. The pattern for streaming LLM calls, where the
 * work happens between the charge and knowing whether it succeeded.
 */
export async function withCreditReservation<T>(
  db: Database | Transaction,
  input: ReservationInput,
  fn: (reservation: CreditChangeResult) => Promise<T>,
): Promise<T> {
  const parsed = parseChange(reservationInput, input);
  const reservation = await deductCredits(db, parsed);
  try {
    return await fn(reservation);
  } catch (error) {
    const id = reservation.transaction.id;
    try {
      await refundCredits(db, {
        userId: parsed.userId,
        amount: parsed.amount,
        featureType: parsed.featureType,
        refundOf: id,
        metadata: {
          reason: 'reservation_failed',
          error: refundErrorNote(error),
        },
        // A retry of this refund (or a second failure path) refunds once.
        idempotencyKey: `reservation-refund:${id}`,
      });
    } catch (refundError) {
      // 25P02: `fn` failed inside the caller's transaction and aborted it. The reservation
      // goes when that transaction rolls back, so there is nothing to refund.
      if (sqlStateOf(refundError) === '25P02') throw error;
      throw new ReservationRefundError(id, error, refundError);
    }
    throw error;
  }
}
