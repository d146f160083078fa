import { sql } from 'drizzle-orm';
import type { z } from 'zod';
import type { Database, Transaction } from '../client.js';
import { type CreditTransaction, creditTransaction } from '../schema.js';
import {
  HoldAlreadySettledError,
  HoldAlreadyVoidedError,
  HoldNotFoundError,
  sqlStateOf,
  toLedgerWriteError,
} from './errors.js';
import { apply, type CreditChangeInput, type CreditChangeResult, runStatement } from './ledger.js';
import { prepared, rowsOf } from './prepared.js';
import { onPrimary } from './replicas.js';
import { withRetry } from './retry.js';
import { toCreditTransaction } from './rows.js';
import { withinBudget } from './timeout.js';
import {
  expireInput,
  holdInput,
  parse,
  parseChange,
  settleInput,
  voidInput,
} from './validation.js';

export interface HoldInput extends CreditChangeInput {
  /**
   * How long the hold lasts if nothing settles or voids it: then it expires and its credits
   * come back. 1 second to 24 hours; default 10 minutes (DEFAULT_HOLD_EXPIRY_MS). Make it
   * longer than the work it covers (a serverless function's maximum duration).
   */
  expiresInMs?: number;
}

export interface CreditHoldResult extends CreditChangeResult {
  /** The hold's id (its trail row's): what settleCreditHold and voidCreditHold take. */
  holdId: string;
  /** When it expires, on the server's clock, unless settled or voided first. */
  expiresAt: Date;
}

export interface SettleInput {
  holdId: string;
  /** The user the caller acts for: when given, another user's hold is refused (HOLD_NOT_FOUND). */
  userId?: string;
  /** What to charge: 1 to the held amount; the rest is given back. Default: all of it. */
  amount?: number;
  /** Recorded on the settle row (tokens used, model…). */
  metadata?: Record<string, unknown>;
  /** Who settled it, when a person or a tool acting for one did: stored on the row. */
  actor?: string;
}

export interface VoidInput {
  holdId: string;
  userId?: string;
  /** Why, for the trail (recorded as the void row's metadata.reason). */
  reason?: string;
  /** More context for the void row's metadata (its `reason` key is `reason`'s). */
  metadata?: Record<string, unknown>;
  /** Who voided it (support voiding a stuck hold): stored on the row. */
  actor?: string;
}

export interface ExpireHoldsInput {
  /** How many due holds to expire at most in this call (1–100,000, default 1,000). */
  limit?: number;
  /** Only this user's due holds (waiting for its lock rather than skipping it). */
  userId?: string;
}

export interface ExpireHoldsResult {
  /** The expire rows written, one per hold, earliest expiry first. */
  expired: CreditTransaction[];
}

const holdResult = (result: CreditChangeResult): CreditHoldResult => {
  const expiresAt = result.transaction.holdExpiresAt;
  if (!expiresAt) throw new Error(`trail row ${result.transaction.id} is not a hold`);
  return { ...result, holdId: result.transaction.id, expiresAt };
};

/**
 * Takes `amount` from the balance now, as a hold: two holds can never spend the same credit.
 * Exactly one of settleCreditHold, voidCreditHold or its expiry closes it later; the expiry
 * needs no running process (every later write or balance read of the user, and
 * expireCreditHolds, gives it back). Throws InsufficientCreditsError like deductCredits.
 */
export async function holdCredits(
  db: Database | Transaction,
  input: HoldInput,
): Promise<CreditHoldResult> {
  db = onPrimary(db);
  return holdResult(await apply(db, { operation: 'hold', ...parseChange(holdInput, input) }));
}

/** The hold a holdId names, for an error that says why none was closed. */
async function missingHold(
  db: Database | Transaction,
  holdId: string,
  userId: string | undefined,
): Promise<HoldNotFoundError> {
  const [row] = rowsOf(
    await db.execute(
      sql`select user_id, operation from public."CreditTransaction" where id = ${holdId}`,
    ),
  );
  if (!row) return new HoldNotFoundError(holdId, 'not_found');
  if (userId !== undefined && row.user_id !== userId)
    return new HoldNotFoundError(holdId, 'other_user');
  return new HoldNotFoundError(holdId, 'not_a_hold');
}

// A column of the hold a closing row names, read in the INSERT itself; NULL when there is no
// such hold of that user, which the trigger then refuses as an unknown user (BC002).
const ofHold = (column: string) =>
  sql`(select ${sql.raw(column)} from public."CreditTransaction"
        where id = ${sql.placeholder('holdId')}::uuid
          and (${sql.placeholder('userId')}::uuid is null or user_id = ${sql.placeholder('userId')}::uuid))`;

function closeStatement(db: Database | Transaction) {
  return prepared(db, 'credit_tx_close', () =>
    db
      .insert(creditTransaction)
      .values({
        userId: ofHold('user_id'),
        amount: sql`coalesce(${sql.placeholder('amount')}::int4, ${ofHold('amount')})`,
        operation: sql`${sql.placeholder('operation')}::public.operation_type`,
        featureType: ofHold('feature_type'),
        holdId: sql`${sql.placeholder('holdId')}::uuid`,
        metadata: sql`${sql.placeholder('metadata')}::jsonb`,
        actor: sql`${sql.placeholder('actor')}::text`,
      })
      .returning(),
  );
}

/**
 * One closing row for the hold, in one prepared statement: its user, balance and (unless
 * given) amount are the hold row's own, read in the INSERT, so no read of the hold goes
 * before it; the trigger checks the rest under the user's lock.
 */
async function close(
  db: Database | Transaction,
  operation: 'settle' | 'void',
  holdId: string,
  userId: string | undefined,
  amount: number | undefined,
  metadata: Record<string, unknown> | undefined,
  actor: string | undefined,
): Promise<CreditTransaction> {
  const values = {
    actor: actor ?? null,
    holdId,
    userId: userId ?? null,
    amount: amount ?? null,
    operation,
    metadata: metadata ? JSON.stringify(metadata) : null,
  };
  let rows: CreditTransaction[];
  try {
    rows = await runStatement(db, (target) => closeStatement(target).execute(values));
  } catch (error) {
    if (sqlStateOf(error) === 'BC002') throw await missingHold(db, holdId, userId);
    throw toLedgerWriteError(error, userId ?? '');
  }
  const [row] = rows;
  if (!row) throw new Error('INSERT … RETURNING returned no row');
  return row;
}

/**
 * Charges `amount` of the hold (default: all of it) and gives the rest back, in one trail row
 * linked to the hold. A retry of the same settlement returns the first one (`replayed`);
 * a hold settled for another amount, voided or expired throws HoldAlreadySettledError,
 * HoldAlreadyVoidedError or HoldExpiredError, and writes nothing.
 */
export async function settleCreditHold(
  db: Database | Transaction,
  input: SettleInput,
): Promise<CreditChangeResult> {
  db = onPrimary(db);
  const parsed = parseChange(settleInput, input);
  // A hold closes once, and the same settlement again replays: safe to retry.
  return withRetry(db, 'settleCreditHold', true, () =>
    withinBudget(db, 'settleCreditHold', () => settle(db, parsed)),
  );
}

async function settle(
  db: Database | Transaction,
  parsed: z.output<typeof settleInput>,
): Promise<CreditChangeResult> {
  try {
    const row = await close(
      db,
      'settle',
      parsed.holdId,
      parsed.userId,
      parsed.amount,
      parsed.metadata,
      parsed.actor,
    );
    return { transaction: row, balance: row.balanceAfter, replayed: false };
  } catch (error) {
    if (!(error instanceof HoldAlreadySettledError) || !error.closedBy) throw error;
    // The same settlement again (a retry after a lost reply): the first result.
    const first = await closingRow(db, error.closedBy);
    if (!first || first.amount !== (parsed.amount ?? first.held)) throw error;
    return { transaction: first.row, balance: first.row.balanceAfter, replayed: true };
  }
}

/** The row that closed a hold, and what the hold held. */
async function closingRow(
  db: Database | Transaction,
  id: string,
): Promise<{ row: CreditTransaction; amount: number; held: number } | undefined> {
  const [found] = rowsOf(
    await db.execute(
      sql`select c.*, h.amount as held from public."CreditTransaction" c
            join public."CreditTransaction" h on h.id = c.hold_id
           where c.id = ${id}`,
    ),
  );
  if (!found) return undefined;
  return {
    row: toCreditTransaction(found),
    amount: Number(found.amount),
    held: Number(found.held),
  };
}

/**
 * Gives the whole hold back, in one trail row linked to it (`reason` in its metadata).
 * A hold settled, voided or expired already throws (HOLD_ALREADY_SETTLED, …) and writes
 * nothing; but when the retry policy retried this call after a lost connection, a hold found
 * voided returns that void (`replayed`): the lost try may have been the one that voided it.
 */
export async function voidCreditHold(
  db: Database | Transaction,
  input: VoidInput,
): Promise<CreditChangeResult> {
  db = onPrimary(db);
  const parsed = parseChange(voidInput, input);
  const metadata =
    parsed.reason === undefined ? parsed.metadata : { ...parsed.metadata, reason: parsed.reason };
  // A hold closes once: safe to retry. A retry that finds the hold voided (by the try whose
  // reply was lost, or by anyone: either way its credits are back) returns that void.
  return withRetry(db, 'voidCreditHold', true, (attempt) =>
    withinBudget(db, 'voidCreditHold', async () => {
      try {
        const row = await close(
          db,
          'void',
          parsed.holdId,
          parsed.userId,
          undefined,
          metadata,
          parsed.actor,
        );
        return { transaction: row, balance: row.balanceAfter, replayed: false };
      } catch (error) {
        if (attempt === 1 || !(error instanceof HoldAlreadyVoidedError) || !error.closedBy)
          throw error;
        const first = await closingRow(db, error.closedBy);
        if (!first) throw error;
        return { transaction: first.row, balance: first.row.balanceAfter, replayed: true };
      }
    }),
  );
}

/**
 * Expires up to `limit` holds past their expiry, earliest first: each gets an expire row that
 * gives its credits back. For a cron job or worker (`pnpm credits:expire-holds`); correctness
 * does not depend on it, since each user's next write or balance read does the same for that
 * user. Safe to run concurrently with itself and with settlements: a hold closes once.
 * Runs at READ COMMITTED (its own transaction, or the caller's).
 */
export async function expireCreditHolds(
  db: Database | Transaction,
  input: ExpireHoldsInput = {},
): Promise<ExpireHoldsResult> {
  db = onPrimary(db);
  const parsed = parse(expireInput, input);
  const statement = (target: Database | Transaction) =>
    target.execute(
      sql`select * from credit_ledger.credit_holds_expire(${parsed.limit}::int4, ${parsed.userId ?? null}::uuid)`,
    );
  return withinBudget(db, 'expireCreditHolds', async () => {
    try {
      const rows = rowsOf(await runStatement(db, statement));
      return { expired: rows.map(toCreditTransaction) };
    } catch (error) {
      throw toLedgerWriteError(error, parsed.userId ?? '');
    }
  });
}
