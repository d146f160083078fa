import { sql } from 'drizzle-orm';
import {
  type AnyPgColumn,
  check,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

/**
 * Timestamps are `timestamptz(3)`: an audit trail must not depend on the server's
 * time zone, and millisecond precision makes a JS `Date` round-trip exactly, so a
 * `(created_at, id)` cursor built from a returned row can never skip a row.
 */
const timestamptz = (name: string) =>
  timestamp(name, { withTimezone: true, precision: 3, mode: 'date' });

export const operationTypeValues = ['deduct', 'refund', 'grant'] as const;
export const operationTypeEnum = pgEnum('operation_type', operationTypeValues);
export type OperationType = (typeof operationTypeValues)[number];

export const featureTypeValues = [
  // Document generation: brag docs, performance reviews, weekly reports.
  'document_generation',
  // Workstream clustering: ML-powered workstream generation.
  'workstream_clustering',
  // Chat tool call: tool calls within chat.
  'chat_tool_call',
  // Chat message: a chat message from a free user.
  'chat_message',
] as const;
export const featureTypeEnum = pgEnum('feature_type', featureTypeValues);
export type FeatureType = (typeof featureTypeValues)[number];

export const user = pgTable(
  'User',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    email: text('email').notNull().unique('user_email_unique'),
    name: text('name'),
    freeCredits: integer('free_credits').notNull().default(10),
    freeChatMessages: integer('free_chat_messages').notNull().default(20),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  },
  (t) => [
    // A balance is spent with a conditional UPDATE; the CHECK is the last line of
    // defence so that no code path can ever overdraw it.
    check('user_free_credits_non_negative', sql`${t.freeCredits} >= 0`),
    check('user_free_chat_messages_non_negative', sql`${t.freeChatMessages} >= 0`),
  ],
);

export type User = typeof user.$inferSelect;
export type NewUser = typeof user.$inferInsert;

/**
 * The credits ledger: one row per balance change, append-only. Rows are written by
 * `src/credits/` through an INSERT whose trigger (migration 0002) applies the change to
 * "User" in the same statement and records `balance_after`; UPDATE, DELETE and TRUNCATE
 * are refused, except the rows removed with their user (ON DELETE CASCADE).
 */
export const creditTransaction = pgTable(
  'CreditTransaction',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    amount: integer('amount').notNull(),
    operation: operationTypeEnum('operation').notNull(),
    featureType: featureTypeEnum('feature_type').notNull(),
    metadata: jsonb('metadata').$type<Record<string, unknown>>(),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    // The balance this row changed (free_chat_messages for chat_message, free_credits
    // otherwise), after the change. Set by the ledger trigger; null only on rows written
    // before it existed.
    balanceAfter: integer('balance_after'),
    // A retried request carries the same key and gets the first result back.
    idempotencyKey: text('idempotency_key'),
    // The deduction a refund gives back; the trigger caps the refunds of one deduction at
    // its amount.
    refundOf: uuid('refund_of').references((): AnyPgColumn => creditTransaction.id),
  },
  (t) => [
    // `amount` is a magnitude; `operation` carries the direction. A zero or negative
    // amount would make "sum of deducts" and "sum of refunds" lie.
    check('credit_tx_amount_positive', sql`${t.amount} > 0`),
    check('credit_tx_balance_after_non_negative', sql`${t.balanceAfter} >= 0`),
    check(
      'credit_tx_refund_of_only_on_refunds',
      sql`${t.refundOf} is null or ${t.operation} = 'refund'`,
    ),
    // Serves the ON DELETE CASCADE from "User" and per-user counts. The composite index
    // below could serve them too (same leading column); this one is smaller to scan.
    index('credit_tx_user_id_idx').on(t.userId),
    // Serves analytics over a time window for all users (range queries on created_at).
    index('credit_tx_created_at_idx').on(t.createdAt),
    // Serves a user's history, newest first, paginated by (created_at, id).
    index('credit_tx_user_created_at_idx').on(t.userId, t.createdAt),
    // Idempotency: the same key applies once per user. The unique index is the guarantee;
    // a read-then-write check would let two concurrent retries both pass.
    uniqueIndex('credit_tx_user_idempotency_key_idx')
      .on(t.userId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
    // Serves the trigger's "sum of refunds of this deduction" and the refund_of foreign key.
    index('credit_tx_refund_of_idx').on(t.refundOf).where(sql`${t.refundOf} is not null`),
  ],
);

export type CreditTransaction = typeof creditTransaction.$inferSelect;
export type NewCreditTransaction = typeof creditTransaction.$inferInsert;
