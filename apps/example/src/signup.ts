import { type Database, grantCredits, type Transaction } from '@bragdoc/database';
import {
  type CreditTransaction,
  creditTransaction,
  type User,
  user,
} from '@bragdoc/database/schema';
import { desc, eq } from 'drizzle-orm';

export { createDatabase } from '@bragdoc/database';

export const WELCOME_CREDITS = 10;

/**
 * What an app does at sign-up, in one transaction: create the user with no credits, then
 * grant the welcome credits through the ledger, so every credit (free_credits) the user
 * ever has is explained by a row of the trail. The free chat messages are not granted
 * here: they start at the column's default.
 */
export async function signUp(db: Database, email: string, name?: string): Promise<User> {
  return db.transaction(async (tx: Transaction) => {
    const [created] = await tx.insert(user).values({ email, name, freeCredits: 0 }).returning();
    if (!created) throw new Error(`Sign-up of ${email} returned no row`);
    const { balance } = await grantCredits(tx, {
      userId: created.id,
      amount: WELCOME_CREDITS,
      featureType: 'document_generation',
      metadata: { reason: 'welcome' },
      idempotencyKey: 'welcome',
    });
    return { ...created, freeCredits: balance };
  });
}

/** A user's trail, newest first (the package's listCreditTransactions paginates it). */
export function history(db: Database | Transaction, userId: string): Promise<CreditTransaction[]> {
  return db
    .select()
    .from(creditTransaction)
    .where(eq(creditTransaction.userId, userId))
    .orderBy(desc(creditTransaction.createdAt));
}
