import { sql } from 'drizzle-orm';
import {
  check,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  text,
  timestamp,
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
  },
  (t) => [
    // `amount` is a magnitude; `operation` carries the direction. A zero or negative
    // amount would make "sum of deducts" and "sum of refunds" lie.
    check('credit_tx_amount_positive', sql`${t.amount} > 0`),
    // Serves the ON DELETE CASCADE from "User" and per-user counts. The composite index
    // below could serve them too (same leading column); this one is smaller to scan.
    index('credit_tx_user_id_idx').on(t.userId),
    // Serves analytics over a time window for all users (range queries on created_at).
    index('credit_tx_created_at_idx').on(t.createdAt),
    // Serves a user's history, newest first, paginated by (created_at, id).
    index('credit_tx_user_created_at_idx').on(t.userId, t.createdAt),
  ],
);

export type CreditTransaction = typeof creditTransaction.$inferSelect;
export type NewCreditTransaction = typeof creditTransaction.$inferInsert;
