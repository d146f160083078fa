import { and, desc, eq, gte, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import {
  type CreditTransaction,
  creditTransaction,
  type FeatureType,
  type OperationType,
} from '../schema.js';
import {
  decodeSeqCursor,
  decodeTimeCursor,
  encodeSeqCursor,
  encodeTimeCursor,
  type TimePosition,
} from './cursor.js';
import { prepared } from './prepared.js';
import { onReplica } from './replicas.js';
import { withRetry } from './retry.js';
import { runRows } from './rows.js';
import { withinBudget } from './timeout.js';
import { historyInput, parse, rangeInput } from './validation.js';

export interface CreditTransactionPage {
  /** Newest first: a user's history in apply order (seq), a range by (created_at, id). */
  items: CreditTransaction[];
  /** Pass it back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export interface ListCreditTransactionsInput {
  userId: string;
  /** 1–500, default 50. */
  limit?: number;
  cursor?: string;
  operation?: OperationType;
  featureType?: FeatureType;
}

export interface ListCreditTransactionsInRangeInput {
  /** Inclusive. */
  from: Date;
  /** Exclusive. */
  to: Date;
  limit?: number;
  cursor?: string;
}

const t = creditTransaction;
const p = sql.placeholder;

/** Which optional parts a query has; each combination is its own prepared statement. */
export interface HistoryVariant {
  operation: boolean;
  featureType: boolean;
  cursor: boolean;
}

/**
 * Rows strictly after the cursor position in (created_at DESC, id DESC) order. Written as
 * `created_at <= $at and (created_at < $at or id < $id)` rather than a row comparison, so
 * that `created_at <= $at` is an index condition on credit_tx_created_at_idx.
 */
function afterTimeCursor(): SQL | undefined {
  return and(lte(t.createdAt, p('at')), or(lt(t.createdAt, p('at')), lt(t.id, p('id'))));
}

/** The scope a cursor is bound to: it is refused by any other query. */
const userScope = (input: { userId: string; operation?: string; featureType?: string }) =>
  `user|${input.userId}|${input.operation ?? ''}|${input.featureType ?? ''}`;
const rangeScope = (input: { from: Date; to: Date }) =>
  `range|${input.from.toISOString()}|${input.to.toISOString()}`;

function page(
  rows: CreditTransaction[],
  limit: number,
  cursorOf: (last: CreditTransaction) => string,
): CreditTransactionPage {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items, nextCursor: rows.length > limit && last ? cursorOf(last) : null };
}

/**
 * The user-history query, with placeholders (userId, limit, and operation, featureType,
 * seq as the variant has them). Served by credit_tx_user_seq_idx, scanned backwards from the
 * user's newest row: it reads that user's rows only, however many other users' rows are
 * newer (a dormant heavy user) or older.
 */
export function userHistoryQuery(db: Database | Transaction, variant: HistoryVariant) {
  return db
    .select()
    .from(t)
    .where(
      and(
        eq(t.userId, p('userId')),
        variant.operation ? eq(t.operation, p('operation')) : undefined,
        variant.featureType ? eq(t.featureType, p('featureType')) : undefined,
        variant.cursor ? lt(t.seq, p('seq')) : undefined,
      ),
    )
    .orderBy(desc(t.seq))
    .limit(p('limit'));
}

/** The all-users range query (from, to, limit, and at, id with a cursor); served by credit_tx_created_at_idx. */
export function rangeQuery(db: Database | Transaction, variant: Pick<HistoryVariant, 'cursor'>) {
  return db
    .select()
    .from(t)
    .where(
      and(
        gte(t.createdAt, p('from')),
        lt(t.createdAt, p('to')),
        variant.cursor ? afterTimeCursor() : undefined,
      ),
    )
    .orderBy(desc(t.createdAt), desc(t.id))
    .limit(p('limit'));
}

const variantKey = (v: Partial<HistoryVariant>) =>
  `${v.operation ? 'o' : '-'}${v.featureType ? 'f' : '-'}${v.cursor ? 'c' : '-'}`;

// Timestamps go in as ISO strings: drizzle's postgres.js client leaves dates unserialised.
const timeCursorValues = (position: TimePosition | undefined) =>
  position ? { at: position.createdAt.toISOString(), id: position.id } : {};

/**
 * A user's credit history, newest first in the order the changes were applied (seq), so
 * that along it each balance_after is the previous one plus or minus the amount.
 * Keyset-paginated on seq; never OFFSET.
 */
export async function listCreditTransactions(
  db: Database | Transaction,
  input: ListCreditTransactionsInput,
): Promise<CreditTransactionPage> {
  db = onReplica(db);
  const parsed = parse(historyInput, input);
  const scope = userScope(parsed);
  const position = parsed.cursor ? decodeSeqCursor(parsed.cursor, scope) : undefined;
  const variant = {
    operation: parsed.operation !== undefined,
    featureType: parsed.featureType !== undefined,
    cursor: position !== undefined,
  };
  const query = prepared(db, `credit_history:${variantKey(variant)}`, () =>
    userHistoryQuery(db, variant),
  );
  // A read: safe to retry after a lost connection.
  const rows = await withRetry(db, 'listCreditTransactions', true, () =>
    withinBudget(db, 'listCreditTransactions', () =>
      runRows(query, {
        userId: parsed.userId,
        limit: parsed.limit + 1,
        ...(parsed.operation ? { operation: parsed.operation } : {}),
        ...(parsed.featureType ? { featureType: parsed.featureType } : {}),
        ...(position ? { seq: position.seq } : {}),
      }),
    ),
  );
  return page(rows, parsed.limit, (last) => encodeSeqCursor({ seq: last.seq }, scope));
}

/** All users' transactions with from <= created_at < to, newest first by (created_at, id). */
export async function listCreditTransactionsInRange(
  db: Database | Transaction,
  input: ListCreditTransactionsInRangeInput,
): Promise<CreditTransactionPage> {
  db = onReplica(db);
  const parsed = parse(rangeInput, input);
  const scope = rangeScope(parsed);
  const position = parsed.cursor ? decodeTimeCursor(parsed.cursor, scope) : undefined;
  const variant = { cursor: position !== undefined };
  const query = prepared(db, `credit_range:${variantKey(variant)}`, () => rangeQuery(db, variant));
  // A read: safe to retry after a lost connection.
  const rows = await withRetry(db, 'listCreditTransactionsInRange', true, () =>
    withinBudget(db, 'listCreditTransactionsInRange', () =>
      runRows(query, {
        from: parsed.from.toISOString(),
        to: parsed.to.toISOString(),
        limit: parsed.limit + 1,
        ...timeCursorValues(position),
      }),
    ),
  );
  return page(rows, parsed.limit, (last) =>
    encodeTimeCursor({ createdAt: last.createdAt, id: last.id }, scope),
  );
}
