import { randomUUID } from 'node:crypto';
import { count, eq, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../../src/client.js';
import { creditTransaction, type NewUser, user } from '../../src/schema.js';

export async function createUser(db: Database | Transaction, values: Partial<NewUser> = {}) {
  const [row] = await db
    .insert(user)
    .values({ email: `${randomUUID()}@example.com`, ...values })
    .returning();
  if (!row) throw new Error('insert returned no row');
  return row;
}

export async function balances(db: Database | Transaction, userId: string) {
  const [row] = await db
    .select({ freeCredits: user.freeCredits, freeChatMessages: user.freeChatMessages })
    .from(user)
    .where(eq(user.id, userId));
  return row;
}

export async function trailSize(db: Database | Transaction, userId?: string): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(creditTransaction)
    .where(userId ? eq(creditTransaction.userId, userId) : undefined);
  return row?.n ?? 0;
}

/**
 * For every user and both balances: the balance at sign-up (the column default, or what
 * the row was inserted with, passed in `initial`) + grants + refunds − deducts = balance.
 * Returns the users for which it does not hold.
 */
export async function ledgerMismatches(
  db: Database,
  initial: (userId: string) => { freeCredits: number; freeChatMessages: number } = () => ({
    freeCredits: 10,
    freeChatMessages: 20,
  }),
) {
  const rows = (await db.execute(sql`
    select u.id, u.free_credits, u.free_chat_messages,
      coalesce(sum(case when t.feature_type <> 'chat_message' then
        case when t.operation = 'deduct' then -t.amount else t.amount end end), 0)::int as credits_delta,
      coalesce(sum(case when t.feature_type = 'chat_message' then
        case when t.operation = 'deduct' then -t.amount else t.amount end end), 0)::int as chat_delta
    from "User" u left join "CreditTransaction" t on t.user_id = u.id
    group by u.id`)) as unknown as {
    id: string;
    free_credits: number;
    free_chat_messages: number;
    credits_delta: number;
    chat_delta: number;
  }[];
  return rows.filter((r) => {
    const start = initial(r.id);
    return (
      start.freeCredits + r.credits_delta !== r.free_credits ||
      start.freeChatMessages + r.chat_delta !== r.free_chat_messages
    );
  });
}
