import { randomUUID } from 'node:crypto';
import { and, count, eq, sql } from 'drizzle-orm';
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

/**
 * How many trail rows were written for the user (or all users) after its opening rows: the
 * ones the test's own operations wrote. 0 means "nothing was written".
 */
export async function trailSize(db: Database | Transaction, userId?: string): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(creditTransaction)
    .where(
      and(
        userId ? eq(creditTransaction.userId, userId) : undefined,
        sql`${creditTransaction.metadata} is distinct from '{"reason": "opening_balance"}'::jsonb`,
      ),
    );
  return row?.n ?? 0;
}

/**
 * The users whose balances are not the signed sum of their whole trail (opening rows
 * included): every credit must be explained by a row.
 */
export async function ledgerMismatches(db: Database | Transaction) {
  // A row an unlimited plan covered moves nothing; a hold takes its amount, a settlement gives
  // back what it did not charge, a void or an expiry gives back the whole hold.
  const rows = (await db.execute(sql`
    select u.id from "User" u
      left join (select t.user_id, t.feature_type,
                        case when t.covered_by_plan is not null then 0
                             when t.operation in ('deduct', 'hold', 'expire_grant') then -t.amount
                             when t.operation = 'settle' then h.amount - t.amount
                             else t.amount end as delta
                   from "CreditTransaction" t left join "CreditTransaction" h on h.id = t.hold_id) t
        on t.user_id = u.id
    group by u.id, u.free_credits, u.free_chat_messages
    having u.free_credits <> coalesce(sum(t.delta) filter (where t.feature_type <> 'chat_message'), 0)
        or u.free_chat_messages <> coalesce(sum(t.delta) filter (where t.feature_type = 'chat_message'), 0)`)) as unknown as {
    id: string;
  }[];
  return rows.map((r) => r.id);
}

/**
 * A feature no ledger rule treats specially (no limit, not the chat balance): the one a test
 * uses when the feature does not matter, so a rule scoped to another feature never breaks it.
 */
export const PLAIN_FEATURE = 'chat_tool_call' as const;
