import type { Database, Transaction } from '../client.js';
import { ReservationRefundError, sqlStateOf } from './errors.js';
import {
  type CreditChangeInput,
  type CreditChangeResult,
  deductCredits,
  refundCredits,
} from './ledger.js';
import { parse, reservationInput } from './validation.js';

export type ReservationInput = Omit<CreditChangeInput, 'idempotencyKey'>;

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
  const parsed = parse(reservationInput, input);
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
          error: error instanceof Error ? error.message.slice(0, 500) : String(error).slice(0, 500),
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
