import { type SQL, sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import type { CreditSource, CreditTransaction } from '../schema.js';
import { toLedgerWriteError } from './errors.js';
import { runStatement } from './ledger.js';
import { rowsOf } from './prepared.js';
import { onPrimary } from './replicas.js';
import { toCreditTransaction } from './rows.js';
import { withinBudget } from './timeout.js';
import { expireInput, parse } from './validation.js';

/** A grant a balance is made of, with what remains of it. */
export interface CreditGrant {
  /** The id of the trail row that created it (a carried-over balance's is its own). */
  id: string;
  /** The balance it is part of. */
  balance: 'free_credits' | 'free_chat_messages';
  source: CreditSource;
  /** What was granted. */
  amount: number;
  /** What remains of it: spending takes from the soonest-expiring grant first. */
  remaining: number;
  /** When what remains of it expires; null for never. */
  expiresAt: Date | null;
  createdAt: Date;
}

export interface ExpireGrantsResult {
  /** The expire_grant rows written, one per grant, earliest expiry first. */
  expired: CreditTransaction[];
}

/**
 * Takes off the balances what remains of up to `limit` grants past their expiry, earliest
 * first, each with an expire_grant row. For a cron job (`pnpm credits:expire-holds` runs it
 * too); correctness does not depend on it, since each user's next write or balance read does
 * the same for that user. Safe to run concurrently with itself and with every write: a grant
 * expires once.
 */
export async function expireCreditGrants(
  db: Database | Transaction,
  input: { limit?: number; userId?: string } = {},
): Promise<ExpireGrantsResult> {
  db = onPrimary(db);
  const parsed = parse(expireInput, input);
  const statement = (target: Database | Transaction) =>
    target.execute(
      sql`select * from credit_ledger.credit_grants_expire(${parsed.limit}::int4, ${parsed.userId ?? null}::uuid)`,
    );
  return withinBudget(db, 'expireCreditGrants', async () => {
    try {
      const rows = rowsOf(await runStatement(db, statement));
      return { expired: rows.map(toCreditTransaction) };
    } catch (error) {
      throw toLedgerWriteError(error, parsed.userId ?? '');
    }
  });
}

/**
 * The SQL of a user's grants with something remaining, as JSON, for a user id expression: one
 * read inside the balance query, so a balance read stays one round trip.
 */
export const grantsSql = (userId: SQL) => sql`(
  select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
           'id', g.id, 'chat', g.chat, 'source', g.source, 'amount', g.amount,
           'remaining', g.remaining, 'expiresAt', g.expires_at, 'createdAt', g.created_at,
           'due', coalesce(g.expires_at <= pg_catalog.clock_timestamp(), false))
           order by g.chat, g.expires_at, g.created_at, g.id), '[]')
    from credit_ledger.credit_grant g
   where g.user_id = ${userId} and g.remaining > 0)`;

/**
 * grantsSql's JSON as the live grants: a grant past its expiry is left out, and counted in
 * `dueCredits`/`dueChatMessages` (on a connection that cannot write, its remainder is still in
 * the balance column until a write takes it off).
 */
export function toLiveGrants(json: string | undefined): {
  grants: CreditGrant[];
  due: boolean;
  dueCredits: number;
  dueChatMessages: number;
} {
  const rows = JSON.parse(json ?? '[]') as {
    id: string;
    chat: boolean;
    source: CreditSource;
    amount: number;
    remaining: number;
    expiresAt: string | null;
    createdAt: string;
    due: boolean;
  }[];
  let dueCredits = 0;
  let dueChatMessages = 0;
  const grants: CreditGrant[] = [];
  for (const r of rows) {
    if (r.due) {
      if (r.chat) dueChatMessages += r.remaining;
      else dueCredits += r.remaining;
      continue;
    }
    grants.push({
      id: r.id,
      balance: r.chat ? 'free_chat_messages' : 'free_credits',
      source: r.source,
      amount: r.amount,
      remaining: r.remaining,
      expiresAt: r.expiresAt === null ? null : new Date(r.expiresAt),
      createdAt: new Date(r.createdAt),
    });
  }
  return { grants, due: dueCredits + dueChatMessages > 0, dueCredits, dueChatMessages };
}
