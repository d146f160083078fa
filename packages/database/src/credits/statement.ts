import { and, desc, eq, gte, inArray, isNotNull, lt, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import {
  type CreditHold,
  type CreditPlanChange,
  type CreditTransaction,
  creditHold,
  creditTransaction,
  user,
} from '../schema.js';
import { type CreditBalance, readBalanceWithoutWriting } from './balance.js';
import { InvalidInputError, UserNotFoundError } from './errors.js';
import { listPlanChanges } from './plans.js';
import { isTransaction, rowsOf } from './prepared.js';
import { onReplica } from './replicas.js';
import { userIdInput } from './validation.js';
import { type LedgerVerification, verifyLedger } from './verify.js';

/** At most this many trail rows in one statement (`limit`). */
export const MAX_STATEMENT_ROWS = 100_000;
/** Trail rows in a statement when `limit` is not given. */
export const DEFAULT_STATEMENT_ROWS = 200;

export interface CreditStatementInput {
  /** The user's id, or its e-mail (matched exactly, else case-insensitively when only one user matches). */
  user: string;
  /** Only trail rows written at or after this time (the balances and holds are always current). */
  since?: Date;
  /** The newest rows to include, 1–100,000 (default 200). */
  limit?: number;
  /** Run the user's credits:verify (default true). */
  verify?: boolean;
}

export interface StatementUser {
  id: string;
  email: string;
  name: string | null;
  createdAt: Date;
}

/** One row of the trail, with both balances after it and what refunded it. */
export interface StatementRow {
  transaction: CreditTransaction;
  /** What the row did to its balance (free credits, or chat messages for `chat_message`): signed. */
  change: number;
  /** The balance the row moved (or would have moved, when an unlimited plan covered it). */
  unit: 'credits' | 'chat_messages';
  /** The free credits and chat messages after the row. */
  credits: number;
  chatMessages: number;
  /** What the row was for, in a sentence a person reads. */
  description: string;
  /** The refunds of this row (a deduction or a settlement's charge), oldest first. */
  refunds: { id: string; amount: number; createdAt: Date }[];
}

/** Where the statement was read: the primary, or a streaming replica and how far behind it is. */
export interface StatementSource {
  /** True on a standby (`pg_is_in_recovery()`): due expiries are computed, never written. */
  replica: boolean;
  /** On a replica, the commit time of the last transaction it replayed. */
  lastReplayedAt: Date | null;
  /** On a replica, seconds from that commit to `readAt`: how stale it may be (it is also large when the primary is idle). */
  lagSeconds: number | null;
  /** On a replica, whether it has replayed all it received from the primary. */
  caughtUp: boolean | null;
}

export interface CreditStatement {
  /** The server's clock when the statement was read; every part is read in one snapshot. */
  readAt: Date;
  user: StatementUser;
  /** The plan, the balances, what open holds take, and the live grants with their expiry. */
  balance: CreditBalance;
  /** Open holds, soonest expiry first; `overdue` ones are given back by the next write. */
  holds: (CreditHold & { overdue: boolean })[];
  /** The plan changes, newest first (at most 100). */
  planChanges: CreditPlanChange[];
  /** The trail, newest first: at most `limit` rows written since `since`. */
  rows: StatementRow[];
  /** How many trail rows the user has in all since `since`; more than `rows.length` when cut by `limit`. */
  rowCount: number;
  /** The user's credits:verify (`verifyLedger` for this user), or null when not asked. */
  verification: LedgerVerification | null;
  source: StatementSource;
}

const t = creditTransaction;
const unitOf = (row: Pick<CreditTransaction, 'featureType'>) =>
  row.featureType === 'chat_message' ? 'chat_messages' : 'credits';

/**
 * Finds a user by id or e-mail: an exact e-mail first, then a case-insensitive one when it
 * names exactly one user (support types what the customer wrote). Throws UserNotFoundError.
 */
export async function findUser(
  db: Database | Transaction,
  idOrEmail: string,
): Promise<StatementUser> {
  db = onReplica(db);
  if (typeof idOrEmail !== 'string' || idOrEmail.trim() === '' || idOrEmail.length > 320)
    throw new InvalidInputError('user', 'must be a user id or an e-mail');
  const wanted = idOrEmail.trim();
  const columns = { id: user.id, email: user.email, name: user.name, createdAt: user.createdAt };
  const id = userIdInput.safeParse(wanted);
  if (id.success) {
    const [row] = await db.select(columns).from(user).where(eq(user.id, id.data));
    if (row) return row;
  }
  const [exact] = await db.select(columns).from(user).where(eq(user.email, wanted));
  if (exact) return exact;
  const loose = await db
    .select(columns)
    .from(user)
    .where(sql`lower(${user.email}) = lower(${wanted})`)
    .limit(2);
  if (loose.length === 1 && loose[0]) return loose[0];
  throw new UserNotFoundError(wanted);
}

/** What a trail row was for, as support would say it. */
export function describeTransaction(row: CreditTransaction): string {
  const unit = row.featureType === 'chat_message' ? 'chat message' : 'credit';
  const n = (amount: number) => `${amount} ${unit}${amount === 1 ? '' : 's'}`;
  const feature = row.featureType.replaceAll('_', ' ');
  const covered = row.coveredByPlan
    ? `, covered by the ${row.coveredByPlan} plan (no balance moved)`
    : '';
  const expiry = row.grantExpiresAt ? `, expiring ${row.grantExpiresAt.toISOString()}` : '';
  const meta = (row.metadata ?? {}) as Record<string, unknown>;
  const reason = typeof meta.reason === 'string' ? `: ${meta.reason}` : '';
  switch (row.operation) {
    case 'grant':
      if (meta.reason === 'opening_balance') return `Opening balance of ${n(row.amount)}`;
      return `Granted ${n(row.amount)} (${row.source ?? 'grant'}${expiry})${reason}`;
    case 'deduct':
      return `Used ${n(row.amount)} for ${feature}${covered}`;
    case 'refund':
      return row.refundOf
        ? `Refunded ${n(row.amount)} of charge ${row.refundOf}${reason}`
        : `Refunded ${n(row.amount)} (a grant of its own)${reason}`;
    case 'hold':
      return `Held ${n(row.amount)} for ${feature} until ${row.holdExpiresAt?.toISOString() ?? '?'}${covered}`;
    case 'settle':
      return `Charged ${n(row.amount)} for ${feature} from hold ${row.holdId}${covered}`;
    case 'void':
      return `Released hold ${row.holdId} (${n(row.amount)})${reason}`;
    case 'expire':
      return `Hold ${row.holdId} expired: ${n(row.amount)} given back`;
    case 'expire_grant':
      return `${n(row.amount)} of a grant expired unused`;
    default:
      return `${row.operation} of ${n(row.amount)}`;
  }
}

/**
 * A user's story in one read, for support and for an app's own admin page: who, which plan,
 * the balances and the live grants they are made of, open holds, plan changes, the trail
 * newest first with both balances after each row and the refunds of each charge, and this
 * user's `verifyLedger` result. Read-only, in one REPEATABLE READ READ ONLY transaction, so
 * every part agrees: due holds and grants are computed as given back or expired, never
 * written (as on a replica, where it runs unchanged: pass the replica's database). Inside a
 * caller's transaction it reads in that transaction's snapshot instead.
 */
export async function getCreditStatement(
  db: Database | Transaction,
  input: CreditStatementInput,
): Promise<CreditStatement> {
  db = onReplica(db);
  const limit = input.limit ?? DEFAULT_STATEMENT_ROWS;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_STATEMENT_ROWS)
    throw new InvalidInputError('limit', `must be a whole number from 1 to ${MAX_STATEMENT_ROWS}`);
  if (input.since !== undefined && !(input.since instanceof Date && !Number.isNaN(+input.since)))
    throw new InvalidInputError('since', 'must be a valid Date');
  const read = (tx: Database | Transaction) => readStatement(tx, input, limit);
  if (isTransaction(db)) return read(db);
  return db.transaction(read, { isolationLevel: 'repeatable read', accessMode: 'read only' });
}

async function readStatement(
  db: Database | Transaction,
  input: CreditStatementInput,
  limit: number,
): Promise<CreditStatement> {
  const who = await findUser(db, input.user);
  const [server] = rowsOf<{
    read_at: string | Date;
    replica: boolean;
    replayed_at: string | Date | null;
    caught_up: boolean | null;
  }>(
    await db.execute(sql`
      select pg_catalog.clock_timestamp() as read_at, pg_catalog.pg_is_in_recovery() as replica,
             pg_catalog.pg_last_xact_replay_timestamp() as replayed_at,
             case when pg_catalog.pg_is_in_recovery()
                  then pg_catalog.pg_last_wal_receive_lsn() is not distinct from pg_catalog.pg_last_wal_replay_lsn()
             end as caught_up`),
  );
  if (!server) throw new Error('the server returned no clock');
  const readAt = new Date(server.read_at);
  const replayedAt = server.replayed_at === null ? null : new Date(server.replayed_at);
  const balance = await readBalanceWithoutWriting(db, who.id);
  const holds = await db
    .select()
    .from(creditHold)
    .where(eq(creditHold.userId, who.id))
    .orderBy(creditHold.expiresAt, creditHold.id);
  const planChanges = await listPlanChanges(db, who.id, 100);
  const since = input.since ? gte(t.createdAt, input.since) : undefined;
  // Newest first through credit_tx_user_seq_idx; the count says whether `limit` cut it.
  const trail = await db
    .select()
    .from(t)
    .where(and(eq(t.userId, who.id), since))
    .orderBy(desc(t.seq))
    .limit(limit);
  const [counted] = await db
    .select({ n: sql<number>`count(*)`.mapWith(Number) })
    .from(t)
    .where(and(eq(t.userId, who.id), since));
  const rows = await withRunningBalances(db, who.id, trail);
  const verification =
    input.verify === false ? null : await verifyLedger(db, { userId: who.id, limit: 100 });
  return {
    readAt,
    user: who,
    balance,
    holds: holds.map((h) => ({ ...h, overdue: h.expiresAt <= readAt })),
    planChanges,
    rows,
    rowCount: counted?.n ?? rows.length,
    verification,
    source: {
      replica: server.replica,
      lastReplayedAt: server.replica ? replayedAt : null,
      lagSeconds: server.replica && replayedAt ? Math.max(0, (+readAt - +replayedAt) / 1000) : null,
      caughtUp: server.replica ? server.caught_up : null,
    },
  };
}

/**
 * Both balances after each row (newest first in, newest first out). A row's balance_after is
 * its own balance's; the other balance is carried from the row before, starting from each
 * balance just before the oldest row shown.
 */
async function withRunningBalances(
  db: Database | Transaction,
  userId: string,
  trail: CreditTransaction[],
): Promise<StatementRow[]> {
  const oldest = trail.at(-1);
  if (!oldest) return [];
  const before = async (chat: boolean) => {
    const [row] = await db
      .select({ balance: t.balanceAfter })
      .from(t)
      .where(
        and(
          eq(t.userId, userId),
          lt(t.seq, oldest.seq),
          chat ? eq(t.featureType, 'chat_message') : sql`${t.featureType} <> 'chat_message'`,
        ),
      )
      .orderBy(desc(t.seq))
      .limit(1);
    return row?.balance ?? 0;
  };
  let credits = await before(false);
  let chatMessages = await before(true);
  const charges = trail.filter((r) => r.operation === 'deduct' || r.operation === 'settle');
  const refunds = new Map<string, StatementRow['refunds']>();
  // The refunds of the charges shown (refunds come after what they refund, so any of them may
  // be newer than the rows shown, or cut by `since`): the user's refund rows, by refund_of.
  for (let i = 0; i < charges.length; i += 5000) {
    const ids = charges.slice(i, i + 5000).map((r) => r.id);
    const found = await db
      .select({ id: t.id, refundOf: t.refundOf, amount: t.amount, createdAt: t.createdAt })
      .from(t)
      .where(and(eq(t.userId, userId), isNotNull(t.refundOf), inArray(t.refundOf, ids)))
      .orderBy(t.seq);
    for (const r of found) {
      if (!r.refundOf) continue;
      const list = refunds.get(r.refundOf) ?? [];
      list.push({ id: r.id, amount: r.amount, createdAt: r.createdAt });
      refunds.set(r.refundOf, list);
    }
  }
  const out: StatementRow[] = [];
  for (let i = trail.length - 1; i >= 0; i--) {
    const row = trail[i] as CreditTransaction;
    const unit = unitOf(row);
    const previous = unit === 'chat_messages' ? chatMessages : credits;
    if (unit === 'chat_messages') chatMessages = row.balanceAfter;
    else credits = row.balanceAfter;
    const change = row.balanceAfter - previous;
    // A settlement's row charges its amount and moves the balance by what it gave back.
    const givenBack =
      row.operation === 'settle' && change > 0 ? `; ${change} of the hold given back` : '';
    out.push({
      transaction: row,
      change,
      unit,
      credits,
      chatMessages,
      description: `${describeTransaction(row)}${givenBack}`,
      refunds: refunds.get(row.id) ?? [],
    });
  }
  return out.reverse();
}
