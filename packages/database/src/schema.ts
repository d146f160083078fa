import { relations, sql } from 'drizzle-orm';
import {
  type AnyPgColumn,
  bigint,
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

export const operationTypeValues = [
  'deduct',
  'refund',
  'grant',
  // Credit holds (migration 0004). A hold takes its amount from the balance now; exactly one
  // of the next three closes it: `settle` charges `amount` of it (at most the held amount)
  // and gives the rest back, `void` gives it all back, `expire` gives it all back once the
  // hold is past its expiry. Four values, not flags on a deduct or a refund: a hold is not
  // yet spent, and a settlement's balance change (held minus charged) is not its amount, so
  // neither reads as what it is under the old three.
  'hold',
  'settle',
  'void',
  'expire',
  // A grant's expiry (migration 0014): what remained of a grant past its `grant_expires_at`
  // comes off the balance, once, with this row (`allocations` names the grant). Not `expire`,
  // which gives a hold back: this one takes.
  'expire_grant',
] as const;
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
  // No feature (migration 0014): a grant of credits, or a grant's expiry, is for no feature,
  // so that per-feature figures count only what was spent on each.
  'none',
] as const;
export const featureTypeEnum = pgEnum('feature_type', featureTypeValues);
export type FeatureType = (typeof featureTypeValues)[number];

/**
 * Where a grant's credits came from (migration 0014). `refund`: credits given back that no
 * earlier grant can take back (a refund without `refundOf`, or of a use from before credit
 * sources existed); `carried_over`: a balance from before credit sources existed.
 */
export const creditSourceValues = [
  'opening',
  'allowance',
  'purchase',
  'promotional',
  'support',
  'refund',
  'carried_over',
] as const;
export const creditSourceEnum = pgEnum('credit_source', creditSourceValues);
export type CreditSource = (typeof creditSourceValues)[number];

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
    // The head of this user's trail: the `seq` and `hash` of the last CreditTransaction row
    // applied to the balances above. Written only by the ledger triggers (migration 0003),
    // which refuse any other change; `credits:verify` checks the trail ends exactly here, so
    // a trail cut short (even to nothing) is found. Negative for the instant between
    // inserting a user and writing its opening rows, inside the same statement.
    ledgerSeq: bigint('ledger_seq', { mode: 'number' }).notNull().default(0),
    ledgerHash: text('ledger_hash'),
  },
  (t) => [
    // A balance changes only through a trail row (the ledger's triggers refuse an UPDATE of
    // it, and refuse a row that would overdraw it); the CHECK is the last line of defence, so
    // that no code path can ever overdraw it.
    check('user_free_credits_non_negative', sql`${t.freeCredits} >= 0`),
    check('user_free_chat_messages_non_negative', sql`${t.freeChatMessages} >= 0`),
  ],
);

export type User = typeof user.$inferSelect;
export type NewUser = typeof user.$inferInsert;

/**
 * The credits ledger: one row per balance change, append-only. Rows are written by
 * `src/credits/` through an INSERT; the ledger triggers (migration 0003) number it, record
 * `balance_after`, `created_at` and `hash`, and apply it to "User" in the same statement.
 * UPDATE, DELETE and TRUNCATE are refused, except the rows removed with their user
 * (ON DELETE CASCADE). Never create these tables with `drizzle-kit push`: it would create
 * them without the triggers (see the README).
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
    // When the change was applied, set by the trigger under the user's lock (never the
    // inserter's value). For time-window queries; apply order is `seq`.
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    // The next three are set by the ledger trigger, whatever an INSERT says. Inserts send
    // NULL for them (the $defaultFn): the trigger replaces it, and where the trigger is
    // missing or disabled NOT NULL refuses the row (LEDGER_NOT_INSTALLED), so no row is
    // ever written with a made-up value.
    //
    // The balance this row changed (free_chat_messages for chat_message, free_credits
    // otherwise), after the change.
    balanceAfter: integer('balance_after')
      .notNull()
      .$defaultFn(() => sql`null`),
    // Apply order within the user's trail: 1, 2, 3… with no gaps, assigned under the user's
    // lock. History, cursors and the balance chain follow it.
    seq: bigint('seq', { mode: 'number' })
      .notNull()
      .$defaultFn(() => sql`null`),
    // sha256 (hex) of the previous row's hash and this row's fields: an edit made with the
    // triggers disabled breaks the chain, which `credits:verify` reports.
    hash: text('hash')
      .notNull()
      .$defaultFn(() => sql`null`),
    // A retried request carries the same key and gets the first result back.
    idempotencyKey: text('idempotency_key'),
    // The deduction a refund gives back; the trigger caps the refunds of one deduction at
    // its amount.
    refundOf: uuid('refund_of').references((): AnyPgColumn => creditTransaction.id),
    // On a settle, void or expire row: the hold (the `hold` row's id) it closes. Set only on
    // those; the trigger checks it is an open hold of this user and balance.
    holdId: uuid('hold_id'),
    // On a hold row: when it expires if nothing closed it, set by the inserter within the
    // bounds the trigger checks (src/credits/holds.ts computes it on the server's clock).
    holdExpiresAt: timestamptz('hold_expires_at'),
    // On a deduct or hold row written while the user's plan was unlimited, that plan (set by
    // the trigger, never the inserter): the row records the use and what it would have cost
    // (`amount`, still the cost in credits or messages), and moves no balance. The rows that
    // close such a hold carry it too. NULL on every metered row.
    coveredByPlan: text('covered_by_plan'),
    // Who made the change, when a person or a system acting for one did (support, an admin
    // tool, a billing webhook): free text the caller supplies, hashed with the row.
    actor: text('actor'),
    // On a row that creates a grant (a grant, and a row that gives back credits no earlier
    // grant can take back): where its credits came from. Set by the trigger when omitted.
    source: creditSourceEnum('source'),
    // On a grant row: when what remains of it expires (comes off the balance with an
    // `expire_grant` row). NULL: never.
    grantExpiresAt: timestamptz('grant_expires_at'),
    // On a row that takes credits from grants or gives them back: which grants, and how many
    // of each ({"<grant id>": n}). Set by the trigger (the inserter names the grant only on an
    // `expire_grant` row, which the trigger checks).
    allocations: jsonb('allocations').$type<Record<string, number>>(),
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
    // Serves per-user time-window queries (user and created_at range).
    index('credit_tx_user_created_at_idx').on(t.userId, t.createdAt),
    // A user's history, newest first in apply order, keyset-paginated on seq: it reads only
    // that user's rows, however active or dormant they are. Unique: one row per position.
    uniqueIndex('credit_tx_user_seq_idx').on(t.userId, t.seq),
    // Idempotency: the same key applies once per user. The unique index is the guarantee;
    // a read-then-write check would let two concurrent retries both pass.
    uniqueIndex('credit_tx_user_idempotency_key_idx')
      .on(t.userId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
    // Serves the trigger's "sum of refunds of this deduction" and the refund_of foreign key.
    index('credit_tx_refund_of_idx').on(t.refundOf).where(sql`${t.refundOf} is not null`),
    // A hold is closed once: settled, voided or expired, never two of them, even by
    // transactions whose snapshots cannot see each other. Also finds a hold's closing row.
    uniqueIndex('credit_tx_hold_close_idx').on(t.holdId).where(sql`${t.holdId} is not null`),
  ],
);

/**
 * The open credit holds: one row per hold that is neither settled, voided nor expired yet,
 * written and removed only by the ledger's triggers (migration 0004) as the trail's hold and
 * closing rows are applied, and refused any other change. The trail is the record (every
 * hold, settlement, give-back and expiry is a CreditTransaction row); this table is its index
 * of what is still open, so that finding due holds reads only those, however long the trail.
 */
export const creditHold = pgTable(
  'CreditHold',
  {
    // The hold row's id in the trail.
    id: uuid('id')
      .primaryKey()
      .references((): AnyPgColumn => creditTransaction.id, { onDelete: 'cascade' }),
    userId: uuid('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    amount: integer('amount').notNull(),
    featureType: featureTypeEnum('feature_type').notNull(),
    expiresAt: timestamptz('expires_at').notNull(),
    createdAt: timestamptz('created_at').notNull(),
    // The hold row's covered_by_plan: a hold an unlimited plan covers takes nothing from
    // the balance, so it is not counted as held.
    coveredByPlan: text('covered_by_plan'),
  },
  (t) => [
    // Serves a user's due holds (expired under the user's lock by every ledger write and
    // balance read) and the amount held on a balance.
    index('credit_hold_user_expires_idx').on(t.userId, t.expiresAt),
    // Serves the sweeper (`expireCreditHolds`): the earliest due holds of every user.
    index('credit_hold_expires_idx').on(t.expiresAt),
  ],
);

export type CreditHold = typeof creditHold.$inferSelect;

/**
 * The plan changes of every user, append-only and hash-chained per user like the trail: a
 * user's plan changes only through a row here (`setUserPlan`, or the ledger itself when a
 * time-bound plan lapses), which says from what to what, until when, by whom and why. The
 * ledger's triggers (ledger/triggers/CreditPlanChange.sql) lock the user as trail writes do,
 * so a plan change is entirely before or after any credit operation; they number, date and
 * hash the row and record the user's current plan in credit_ledger.user_plan, which the
 * ledger reads under the user's lock. The plans themselves are rows of credit_ledger.credit_plan.
 */
export const creditPlanChange = pgTable(
  'CreditPlanChange',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    // Position in the user's plan changes: 1, 2, 3… Set by the trigger.
    seq: bigint('seq', { mode: 'number' })
      .notNull()
      .$defaultFn(() => sql`null`),
    // The plan the user was on, set by the trigger (the default plan before any change).
    fromPlan: text('from_plan')
      .notNull()
      .$defaultFn(() => sql`null`),
    plan: text('plan').notNull(),
    // When the plan lapses back to the default plan; NULL for no end.
    until: timestamptz('until'),
    reason: text('reason'),
    actor: text('actor'),
    idempotencyKey: text('idempotency_key'),
    // The user's trail head (CreditTransaction.seq) when the plan changed: trail rows with a
    // higher seq were written on this plan, so the two chains are ordered exactly, even
    // within one millisecond. Set by the trigger.
    trailSeq: bigint('trail_seq', { mode: 'number' })
      .notNull()
      .$defaultFn(() => sql`null`),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    // sha256 of the previous change's hash and this row's fields. Set by the trigger.
    hash: text('hash')
      .notNull()
      .$defaultFn(() => sql`null`),
  },
  (t) => [
    // A plan that has already lapsed when it is set would be recorded and never apply.
    check(
      'credit_plan_change_until_after_change',
      sql`${t.until} is null or ${t.until} > ${t.createdAt}`,
    ),
    // A user's plan changes in order, and the ledger's read of the current plan's history.
    uniqueIndex('credit_plan_change_user_seq_idx').on(t.userId, t.seq),
    // A retried setUserPlan carries the same key and gets the first change back.
    uniqueIndex('credit_plan_change_user_idempotency_key_idx')
      .on(t.userId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
  ],
);

export type CreditPlanChange = typeof creditPlanChange.$inferSelect;

export type CreditTransaction = typeof creditTransaction.$inferSelect;
export type NewCreditTransaction = typeof creditTransaction.$inferInsert;

// Relations for drizzle's relational queries (`db.query.user.findFirst({ with: … })`). They
// describe the foreign keys above and the two links the ledger's triggers check instead of
// one (refund_of, hold_id); they create nothing in the database.
export const userRelations = relations(user, ({ many }) => ({
  creditTransactions: many(creditTransaction),
  creditHolds: many(creditHold),
  planChanges: many(creditPlanChange),
}));

export const creditPlanChangeRelations = relations(creditPlanChange, ({ one }) => ({
  user: one(user, { fields: [creditPlanChange.userId], references: [user.id] }),
}));

export const creditTransactionRelations = relations(creditTransaction, ({ one, many }) => ({
  user: one(user, { fields: [creditTransaction.userId], references: [user.id] }),
  // A refund's deduction, and a deduction's refunds.
  refundOf: one(creditTransaction, {
    fields: [creditTransaction.refundOf],
    references: [creditTransaction.id],
    relationName: 'refund',
  }),
  refunds: many(creditTransaction, { relationName: 'refund' }),
  // A settle, void or expire row's hold, and a hold's closing row (at most one).
  hold: one(creditTransaction, {
    fields: [creditTransaction.holdId],
    references: [creditTransaction.id],
    relationName: 'hold',
  }),
  closings: many(creditTransaction, { relationName: 'hold' }),
}));

export const creditHoldRelations = relations(creditHold, ({ one }) => ({
  user: one(user, { fields: [creditHold.userId], references: [user.id] }),
  transaction: one(creditTransaction, {
    fields: [creditHold.id],
    references: [creditTransaction.id],
  }),
}));
