import { sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import { sqlStateOf, UserNotFoundError } from './errors.js';
import { expireCreditHolds } from './holds.js';
import { rowsOf } from './prepared.js';
import { parse, userIdInput } from './validation.js';

export interface CreditBalance {
  /** What can be spent now: held credits are not in it (a hold takes them when it is taken). */
  freeCredits: number;
  freeChatMessages: number;
  /** Taken by open holds, and given back by any of them that is voided, expired or settled for less. */
  heldCredits: number;
  heldChatMessages: number;
}

interface BalanceRow {
  free_credits: number;
  free_chat_messages: number;
  // bigint sums: a string, number or bigint, depending on the driver.
  held_credits: string | number | bigint;
  held_chat_messages: string | number | bigint;
  due: boolean;
}

const read = async (db: Database | Transaction, id: string) =>
  rowsOf<BalanceRow>(
    await db.execute(sql`
    select u.free_credits, u.free_chat_messages,
           coalesce(sum(h.amount) filter (where h.feature_type <> 'chat_message'), 0) as held_credits,
           coalesce(sum(h.amount) filter (where h.feature_type = 'chat_message'), 0) as held_chat_messages,
           coalesce(bool_or(h.expires_at <= pg_catalog.clock_timestamp()), false) as due
      from public."User" u left join public."CreditHold" h on h.user_id = u.id
     where u.id = ${id}
     group by u.id`),
  );

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
  const id = parse(userIdInput, userId, 'userId');
  let [row] = await read(db, id);
  if (row?.due) {
    try {
      await expireCreditHolds(db, { userId: id, limit: 100_000 });
      [row] = await read(db, id);
    } catch (error) {
      if (sqlStateOf(error) !== '25006') throw error;
    }
  }
  if (!row) throw new UserNotFoundError(id);
  return {
    freeCredits: row.free_credits,
    freeChatMessages: row.free_chat_messages,
    heldCredits: Number(row.held_credits),
    heldChatMessages: Number(row.held_chat_messages),
  };
}
