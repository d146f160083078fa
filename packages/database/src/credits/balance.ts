import { eq, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import { creditHold, user } from '../schema.js';
import { sqlStateOf, UserNotFoundError } from './errors.js';
import { type CreditGrant, expireCreditGrants, grantsSql, toLiveGrants } from './grants.js';
import { expireCreditHolds } from './holds.js';
import { runStatement } from './ledger.js';
import { allowanceDueSql, currentPlanSql, toUserPlan, type UserPlan } from './plans.js';
import { prepared } from './prepared.js';
import { onPrimary } from './replicas.js';
import { withRetry } from './retry.js';
import { withinBudget } from './timeout.js';
import { parse, userIdInput } from './validation.js';

export interface CreditBalance {
  /** What can be spent now: held credits are not in it (a hold takes them when it is taken). */
  freeCredits: number;
  freeChatMessages: number;
  /** Taken by open holds, and given back by any of them that is voided, expired or settled for less. */
  heldCredits: number;
  heldChatMessages: number;
  /** The user's plan: on an unlimited one, deductions and holds are recorded and move no balance. */
  plan: UserPlan;
  /**
   * The grants the balances are made of, with what remains of each and its expiry: spending
   * takes from the soonest-expiring first. `freeCredits` is the sum of the `free_credits`
   * ones, `freeChatMessages` of the others.
   */
  grants: CreditGrant[];
}

function balanceQuery(db: Database | Transaction) {
  return prepared(db, 'credit_balance', () =>
    db
      .select({
        freeCredits: user.freeCredits,
        freeChatMessages: user.freeChatMessages,
        heldCredits:
          sql<number>`coalesce(sum(${creditHold.amount}) filter (where ${creditHold.featureType} <> 'chat_message' and ${creditHold.coveredByPlan} is null), 0)`.mapWith(
            Number,
          ),
        heldChatMessages:
          sql<number>`coalesce(sum(${creditHold.amount}) filter (where ${creditHold.featureType} = 'chat_message' and ${creditHold.coveredByPlan} is null), 0)`.mapWith(
            Number,
          ),
        due: sql<boolean>`coalesce(bool_or(${creditHold.expiresAt} <= pg_catalog.clock_timestamp()), false)`,
        grants: sql<string>`${grantsSql(sql`${user.id}`)}::text`,
        allowanceDue: sql<boolean>`${allowanceDueSql(sql`${user.id}`)}`,
        plan: sql<string>`${currentPlanSql(sql`${user.id}`)}::text`,
      })
      .from(user)
      .leftJoin(creditHold, eq(creditHold.userId, user.id))
      .where(eq(user.id, sql.placeholder('userId')))
      .groupBy(user.id),
  );
}

/**
 * The user's balances and what open holds take from them. A hold past its expiry is given
 * back first (an expire row, under the user's lock), so the balance read never counts a
 * hold that is over; on a read-only connection (a replica) that cannot be written, it is
 * reported as held.
 */
export async function getCreditBalance(
  db: Database | Transaction,
  userId: string,
): Promise<CreditBalance> {
  db = onPrimary(db);
  const id = parse(userIdInput, userId, 'userId');
  return withRetry(db, 'getCreditBalance', true, () =>
    withinBudget(db, 'getCreditBalance', () => readBalance(db, id)),
  );
}

const EXPIRE_BATCH = 100;

/**
 * The balance as a read-only connection computes it, whatever the connection: due holds
 * reported held, due grants not counted, the period's allowance not granted yet, and nothing
 * written. For a statement, which must not write even inside a caller's read-write
 * transaction.
 */
export function readBalanceWithoutWriting(
  db: Database | Transaction,
  userId: string,
): Promise<CreditBalance> {
  return readBalance(db, parse(userIdInput, userId, 'userId'), false);
}

async function readBalance(
  db: Database | Transaction,
  id: string,
  mayWrite = true,
): Promise<CreditBalance> {
  const read = () => balanceQuery(db).execute({ userId: id });
  let [row] = await read();
  let readOnly = !mayWrite;
  if (mayWrite && row && (row.due || row.allowanceDue || toLiveGrants(row.grants).due)) {
    const holdsDue = row.due;
    const grantsDue = toLiveGrants(row.grants).due;
    const allowanceDue = row.allowanceDue;
    try {
      // In batches, each its own statement outside a caller's transaction: a user with
      // thousands of due holds gets them back in bounded steps, not one statement of seconds.
      while (
        holdsDue &&
        (await expireCreditHolds(db, { userId: id, limit: EXPIRE_BATCH })).expired.length ===
          EXPIRE_BATCH
      );
      while (
        grantsDue &&
        (await expireCreditGrants(db, { userId: id, limit: EXPIRE_BATCH })).expired.length ===
          EXPIRE_BATCH
      );
      // The period's allowance, granted as the user's next write would (once per period).
      if (allowanceDue)
        await runStatement(db, (target) =>
          target.execute(sql`select credit_ledger.credit_allowance_apply(${id}::uuid)`),
        );
      [row] = await read();
    } catch (error) {
      if (sqlStateOf(error) !== '25006') throw error;
      readOnly = true;
    }
  }
  if (!row) throw new UserNotFoundError(id);
  const live = toLiveGrants(row.grants);
  const { due: _, grants: __, allowanceDue: ___, plan, ...balance } = row;
  // On a connection that cannot write (a replica), what is due to expire is computed, not
  // written: it is not counted, as a hold past its expiry is (see above).
  return {
    ...balance,
    freeCredits: balance.freeCredits - (readOnly ? live.dueCredits : 0),
    freeChatMessages: balance.freeChatMessages - (readOnly ? live.dueChatMessages : 0),
    plan: toUserPlan(plan),
    grants: live.grants,
  };
}
