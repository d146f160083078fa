import { type CreditTransaction, creditTransaction } from '../schema.js';

/** A row as drizzle's postgres.js client returns it unmapped: column names, driver values. */
interface RawRow {
  id: string;
  user_id: string;
  amount: number;
  operation: CreditTransaction['operation'];
  feature_type: CreditTransaction['featureType'];
  metadata: unknown;
  created_at: string | Date;
  balance_after: number;
  // int8 arrives as a string from postgres.js and node-postgres, as a number or bigint elsewhere.
  seq: string | number | bigint;
  hash: string;
  idempotency_key: string | null;
  refund_of: string | null;
  hold_id: string | null;
  hold_expires_at: string | Date | null;
  covered_by_plan: string | null;
  actor: string | null;
  source: CreditTransaction['source'];
  grant_expires_at: string | Date | null;
  allocations: unknown;
}

const t = creditTransaction;

/**
 * Maps a raw row to a CreditTransaction exactly as drizzle's select would (the history
 * tests compare the two), using the columns' own decoders for the two values that need one.
 * Written as one object literal: drizzle's generic result mapping cost ~65 µs per 50-row
 * page in `pnpm bench`, a fifth of the page's latency; this costs ~12 µs, most of it the
 * Date parsing that postgres.js does for a hand-written query too. The return type makes
 * a column added to the schema a compile error here until it is mapped.
 */
/**
 * A timestamptz as drizzle's column would decode it: postgres.js (through drizzle) and
 * node-postgres's prepared queries give its text, node-postgres's and PGlite's plain queries
 * a Date already.
 */
const toDate = (value: string | Date): Date =>
  value instanceof Date ? value : (t.createdAt.mapFromDriverValue(value) as Date);

export function toCreditTransaction(raw: Record<string, unknown>): CreditTransaction {
  const row = raw as unknown as RawRow;
  return {
    id: row.id,
    userId: row.user_id,
    amount: row.amount,
    operation: row.operation,
    featureType: row.feature_type,
    metadata:
      row.metadata == null
        ? null
        : (t.metadata.mapFromDriverValue(row.metadata) as CreditTransaction['metadata']),
    createdAt: toDate(row.created_at),
    balanceAfter: row.balance_after,
    seq: Number(row.seq),
    hash: row.hash,
    idempotencyKey: row.idempotency_key,
    refundOf: row.refund_of,
    holdId: row.hold_id,
    holdExpiresAt: row.hold_expires_at == null ? null : toDate(row.hold_expires_at),
    coveredByPlan: row.covered_by_plan,
    actor: row.actor,
    source: row.source,
    grantExpiresAt: row.grant_expires_at == null ? null : toDate(row.grant_expires_at),
    allocations:
      row.allocations == null
        ? null
        : (t.allocations.mapFromDriverValue(row.allocations) as CreditTransaction['allocations']),
  };
}

type Values = Record<string, unknown>;

/**
 * Runs a prepared select of whole CreditTransaction rows and maps them with
 * toCreditTransaction. drizzle's postgres.js prepared queries have an `all()` that returns
 * the driver's rows unmapped; it is not in their public type, so it is looked up here, and
 * the mapped `execute()` is used if a drizzle release drops it (the history tests compare
 * both paths against a plain drizzle select).
 */
export async function runRows(
  query: { execute: (values: Values) => Promise<CreditTransaction[]> },
  values: Values,
): Promise<CreditTransaction[]> {
  const raw = (query as unknown as { all?: (values: Values) => Promise<Values[]> }).all;
  if (typeof raw !== 'function') return query.execute(values);
  return (await raw.call(query, values)).map(toCreditTransaction);
}
