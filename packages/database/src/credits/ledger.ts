import { and, eq, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import {
  type CreditSource,
  type CreditTransaction,
  creditTransaction,
  type FeatureType,
  type OperationType,
} from '../schema.js';
import {
  constraintOf,
  IdempotencyConflictError,
  PreparedStatementsUnsupportedError,
  sqlStateOf,
  toLedgerWriteError,
} from './errors.js';
import { isTransaction, prepared, rowsOf } from './prepared.js';
import { onPrimary } from './replicas.js';
import { withRetry } from './retry.js';
import { withinBudget } from './timeout.js';
import {
  deductInput,
  grantInput,
  type grantSourceValues,
  parseChange,
  refundInput,
} from './validation.js';

export interface CreditChangeInput {
  userId: string;
  /** A positive integer; the operation gives the direction. */
  amount: number;
  featureType: FeatureType;
  /** A plain JSON object of at most 8 KiB: model, tokens, request id… */
  metadata?: Record<string, unknown>;
  /** The same key for the same user applies once; a retry gets the first result back. */
  idempotencyKey?: string;
  /** Who made the change (support's e-mail, an admin tool, a webhook): stored on the row. */
  actor?: string;
}

export interface RefundInput extends CreditChangeInput {
  /** The deduction this refund gives back (same user, same feature type). */
  refundOf?: string;
}

export interface CreditChangeResult {
  /** The audit row, with `balanceAfter`. */
  transaction: CreditTransaction;
  /** The changed balance after the change (free_chat_messages for chat_message, else free_credits). */
  balance: number;
  /** True when an idempotency key had been used: nothing was written, the first result is returned. */
  replayed: boolean;
}

/** One trail row to write, as the operations of this folder describe it. */
export interface Change {
  operation: OperationType;
  userId: string;
  amount: number;
  featureType: FeatureType;
  metadata?: Record<string, unknown> | undefined;
  idempotencyKey?: string | undefined;
  refundOf?: string | undefined;
  actor?: string | undefined;
  /** A grant: where its credits came from, and when what remains of them expires. */
  source?: CreditSource | undefined;
  expiresAt?: Date | undefined;
  /** A hold: how long until it expires, from the server's clock at the INSERT. */
  expiresInMs?: number | undefined;
}

const result = (row: CreditTransaction, replayed: boolean): CreditChangeResult => ({
  transaction: row,
  balance: row.balanceAfter,
  replayed,
});

async function replay(
  db: Database | Transaction,
  change: Change,
  key: string,
): Promise<CreditChangeResult> {
  const [existing] = await db
    .select({
      row: creditTransaction,
      same: sql<boolean>`(
        ${creditTransaction.operation} = ${change.operation}
        and ${creditTransaction.amount} = ${change.amount}
        and ${creditTransaction.featureType} = ${change.featureType}
        and ${creditTransaction.refundOf} is not distinct from ${change.refundOf ?? null}::uuid
        and ${creditTransaction.holdId} is null
        and ${creditTransaction.actor} is not distinct from ${change.actor ?? null}::text
        and (${change.source ?? null}::public.credit_source is null or ${creditTransaction.source} = ${change.source ?? null}::public.credit_source)
        and ${creditTransaction.grantExpiresAt} is not distinct from ${change.expiresAt?.toISOString() ?? null}::timestamptz
        and ${creditTransaction.metadata} is not distinct from ${change.metadata ? JSON.stringify(change.metadata) : null}::jsonb
      )`,
    })
    .from(creditTransaction)
    .where(
      and(eq(creditTransaction.userId, change.userId), eq(creditTransaction.idempotencyKey, key)),
    );
  // The key was reported used (by the unique index, or by the trigger when the balance
  // would not cover the retry); it cannot vanish (the trail is append-only) unless the user
  // was deleted meanwhile.
  if (!existing) throw new Error(`Idempotency key "${key}" of user ${change.userId} vanished`);
  if (!existing.same) throw new IdempotencyConflictError(change.userId, key, existing.row.id);
  return result(existing.row, true);
}

// jsonb goes in as text with an explicit cast: drizzle's jsonb encoder would turn a null
// placeholder value into the JSON literal 'null' instead of SQL NULL.
const jsonbParam = (name: string) => sql`${sql.placeholder(name)}::jsonb`;

function insertStatement(db: Database | Transaction) {
  return prepared(db, 'credit_tx_insert', () =>
    db
      .insert(creditTransaction)
      .values({
        userId: sql.placeholder('userId'),
        amount: sql.placeholder('amount'),
        operation: sql.placeholder('operation'),
        featureType: sql.placeholder('featureType'),
        metadata: jsonbParam('metadata'),
        idempotencyKey: sql.placeholder('idempotencyKey'),
        refundOf: sql.placeholder('refundOf'),
        actor: sql.placeholder('actor'),
        source: sql`${sql.placeholder('source')}::public.credit_source`,
        grantExpiresAt: sql`${sql.placeholder('grantExpiresAt')}::timestamptz`,
        // On the server's clock, so that a client's clock cannot move a hold's expiry; the
        // trigger checks the bounds against the time it dates the row with.
        holdExpiresAt: sql`pg_catalog.clock_timestamp() + ${sql.placeholder('expiresInMs')}::int8 * interval '1 millisecond'`,
      })
      .returning(),
  );
}

const SERIALIZATION_RETRIES = 10;

/**
 * Runs a single-statement operation again when SERIALIZABLE (the server's or the role's
 * default_transaction_isolation) refused it with 40001: the statement was its own
 * transaction and was rolled back whole, so running it again is safe. Deductions, grants
 * and plain refunds of different users never get here (the ledger reads nothing another
 * user's write changes); a capped refund reads the trail's indexes, whose pages other users'
 * rows share, and can. Bounded, with a jittered backoff. Inside a caller's transaction
 * nothing can be retried: PostgreSQL requires the whole transaction to be.
 */
export async function retrySerializationFailures<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (sqlStateOf(error) !== '40001' || attempt >= SERIALIZATION_RETRIES) throw error;
      await new Promise((resolve) =>
        setTimeout(resolve, Math.random() * Math.min(250, 5 * 2 ** attempt)),
      );
    }
  }
}

/**
 * Runs one ledger statement: inside a caller's transaction in a savepoint, which keeps the
 * transaction usable when the statement is refused; otherwise as its own transaction, run
 * again on a serialization failure.
 */
export async function runStatement<T>(
  db: Database | Transaction,
  statement: (db: Database | Transaction) => Promise<T>,
): Promise<T> {
  if (isTransaction(db)) return db.transaction((tx) => statement(tx));
  try {
    return await retrySerializationFailures(() => statement(db));
  } catch (error) {
    const backlog = backlogOf(error);
    if (!backlog) throw error;
    await giveBackDueHolds(db, backlog.userId, backlog.limit);
    return retrySerializationFailures(() => statement(db));
  }
}

/** The user and bound of a refusal for too many due holds (BC021), if it is one. */
function backlogOf(error: unknown): { userId: string; limit: number } | undefined {
  if (sqlStateOf(error) !== 'BC021') return undefined;
  const cause = (error as { cause?: { detail?: string } }).cause ?? (error as { detail?: string });
  try {
    const detail = JSON.parse(cause.detail ?? '') as { userId?: unknown; limit?: unknown };
    return typeof detail.userId === 'string' && typeof detail.limit === 'number'
      ? { userId: detail.userId, limit: detail.limit }
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Gives back a user's due holds in batches of `batch`, each its own statement (so each
 * commits, and none takes longer than a write that expires that many), until a batch finds
 * fewer. A write that was refused for them can then run.
 */
async function giveBackDueHolds(db: Database, userId: string, batch: number): Promise<void> {
  for (;;) {
    const [row] = rowsOf(
      await retrySerializationFailures(() =>
        db.execute(
          sql`select count(*)::int as n from credit_ledger.credit_holds_expire(${batch}::int4, ${userId}::uuid)`,
        ),
      ),
    );
    if (Number(row?.n ?? 0) < batch) return;
  }
}

/**
 * One INSERT: the ledger triggers (migration 0003) lock the user, number and check the row,
 * record balance_after, and apply it to "User", all in this statement, so the balance and
 * its audit row are written together or not at all.
 */
export function apply(db: Database | Transaction, change: Change): Promise<CreditChangeResult> {
  const name = `${change.operation}Credits`;
  // Retried after a lost connection only with a key: the key applies once.
  return withRetry(db, name, change.idempotencyKey !== undefined, () =>
    withinBudget(db, name, () => applyNow(db, change)),
  );
}

async function applyNow(db: Database | Transaction, change: Change): Promise<CreditChangeResult> {
  const values = {
    userId: change.userId,
    amount: change.amount,
    operation: change.operation,
    featureType: change.featureType,
    metadata: change.metadata ? JSON.stringify(change.metadata) : null,
    idempotencyKey: change.idempotencyKey ?? null,
    refundOf: change.refundOf ?? null,
    actor: change.actor ?? null,
    source: change.source ?? null,
    grantExpiresAt: change.expiresAt?.toISOString() ?? null,
    expiresInMs: change.expiresInMs ?? null,
  };
  try {
    const rows = await runStatement(db, (target) => insertStatement(target).execute(values));
    const [row] = rows;
    if (!row) throw new Error('INSERT … RETURNING returned no row');
    // Behind a transaction-mode pooler with prepared statements on, the server can run a
    // statement another client connection prepared under the same name: never report that
    // as this change.
    if (
      row.userId !== change.userId ||
      row.operation !== change.operation ||
      row.amount !== change.amount
    )
      throw new PreparedStatementsUnsupportedError(
        new Error(`the INSERT returned another row (${row.operation} of ${row.amount})`),
      );
    return result(row, false);
  } catch (error) {
    const constraint = constraintOf(error);
    if (
      change.idempotencyKey &&
      sqlStateOf(error) === '23505' &&
      constraint === 'credit_tx_user_idempotency_key_idx'
    ) {
      return replay(db, change, change.idempotencyKey);
    }
    throw toLedgerWriteError(error, change.userId);
  }
}

/**
 * Spends credits: `chat_message` spends free_chat_messages, every other feature free_credits.
 * Throws InsufficientCreditsError (with `required` and `available`) or UserNotFoundError;
 * on any error nothing is written.
 */
export async function deductCredits(
  db: Database | Transaction,
  input: CreditChangeInput,
): Promise<CreditChangeResult> {
  db = onPrimary(db);
  return apply(db, { operation: 'deduct', ...parseChange(deductInput, input) });
}

/**
 * Gives credits back to the balance the feature spends. With `refundOf`, the refunds of
 * that deduction can never add up to more than it, even when they run concurrently.
 */
export async function refundCredits(
  db: Database | Transaction,
  input: RefundInput,
): Promise<CreditChangeResult> {
  db = onPrimary(db);
  return apply(db, { operation: 'refund', ...parseChange(refundInput, input) });
}

export interface GrantInput extends Omit<CreditChangeInput, 'featureType'> {
  /** Needed only to grant chat messages (`chat_message`); a grant of credits is for no feature. */
  featureType?: FeatureType;
  /** Where the credits came from; `promotional` when omitted. */
  source?: (typeof grantSourceValues)[number];
  /** When what remains of them expires (in the future); never when omitted. */
  expiresAt?: Date;
}

/**
 * Adds credits as a grant with a source and, maybe, an expiry: purchases, support grants,
 * promotions. Spending takes the soonest-expiring credits first; what remains of a grant at
 * its expiry comes off the balance with an expire_grant row.
 */
export async function grantCredits(
  db: Database | Transaction,
  input: GrantInput,
): Promise<CreditChangeResult> {
  db = onPrimary(db);
  return apply(db, { operation: 'grant', ...parseChange(grantInput, input) });
}
