import { and, desc, eq, gte, lt, lte, or, type SQL } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import {
  type CreditTransaction,
  creditTransaction,
  type FeatureType,
  type OperationType,
} from '../schema.js';
import { decodeCursor, encodeCursor, type Position } from './cursor.js';
import { historyInput, parse, rangeInput } from './validation.js';

export interface CreditTransactionPage {
  /** Newest first. */
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

/**
 * Rows strictly after `position` in (created_at DESC, id DESC) order. Written as
 * `created_at <= $t and (created_at < $t or id < $id)` rather than a row comparison, so
 * that `created_at <= $t` is an index condition on both indexes that serve the lists.
 */
function after(position: Position | undefined): SQL | undefined {
  if (!position) return undefined;
  return and(
    lte(t.createdAt, position.createdAt),
    or(lt(t.createdAt, position.createdAt), lt(t.id, position.id)),
  );
}

function page(rows: CreditTransaction[], limit: number, scope: string): CreditTransactionPage {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items,
    nextCursor:
      rows.length > limit && last
        ? encodeCursor({ createdAt: last.createdAt, id: last.id }, scope)
        : null,
  };
}

/** The user-history query; served by credit_tx_user_created_at_idx. Exported for EXPLAIN tests. */
export function userHistoryQuery(
  db: Database | Transaction,
  input: { userId: string; limit: number; operation?: OperationType; featureType?: FeatureType },
  position?: Position,
) {
  return db
    .select()
    .from(t)
    .where(
      and(
        eq(t.userId, input.userId),
        input.operation ? eq(t.operation, input.operation) : undefined,
        input.featureType ? eq(t.featureType, input.featureType) : undefined,
        after(position),
      ),
    )
    .orderBy(desc(t.createdAt), desc(t.id))
    .limit(input.limit + 1);
}

/** The all-users range query; served by credit_tx_created_at_idx. Exported for EXPLAIN tests. */
export function rangeQuery(
  db: Database | Transaction,
  input: { from: Date; to: Date; limit: number },
  position?: Position,
) {
  return db
    .select()
    .from(t)
    .where(and(gte(t.createdAt, input.from), lt(t.createdAt, input.to), after(position)))
    .orderBy(desc(t.createdAt), desc(t.id))
    .limit(input.limit + 1);
}

/**
 * A user's credit history, newest first, keyset-paginated on (created_at, id): a page
 * boundary inside rows sharing one created_at neither skips nor repeats a row. Never OFFSET.
 */
export async function listCreditTransactions(
  db: Database | Transaction,
  input: ListCreditTransactionsInput,
): Promise<CreditTransactionPage> {
  const parsed = parse(historyInput, input);
  const scope = `user|${parsed.userId}|${parsed.operation ?? ''}|${parsed.featureType ?? ''}`;
  const position = parsed.cursor ? decodeCursor(parsed.cursor, scope) : undefined;
  return page(await userHistoryQuery(db, parsed, position), parsed.limit, scope);
}

/** All users' transactions with from <= created_at < to, newest first, paginated the same way. */
export async function listCreditTransactionsInRange(
  db: Database | Transaction,
  input: ListCreditTransactionsInRangeInput,
): Promise<CreditTransactionPage> {
  const parsed = parse(rangeInput, input);
  const scope = `range|${parsed.from.toISOString()}|${parsed.to.toISOString()}`;
  const position = parsed.cursor ? decodeCursor(parsed.cursor, scope) : undefined;
  return page(await rangeQuery(db, parsed, position), parsed.limit, scope);
}
