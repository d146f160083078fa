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
 * What an app does at sign-up, in one transaction: create the user with no credits (its 20
 * free chat messages get their opening row from the ledger), then grant the welcome credits
 * through the ledger with a reason support can read, so every credit and chat message the
 * user ever has is explained by a row of the trail.
 */
export async function signUp(db: Database, email: string, name?: string): Promise<User> {
  return db.transaction(async (tx: Transaction) => {
    const [created] = await tx.insert(user).values({ email, name, freeCredits: 0 }).returning();
    if (!created) throw new Error(`Sign-up of ${email} returned no row`);
    await grantCredits(tx, {
      userId: created.id,
      amount: WELCOME_CREDITS,
      featureType: 'document_generation',
      metadata: { reason: 'welcome' },
      idempotencyKey: 'welcome',
    });
    // Read back: the row the INSERT returned predates the grant and the opening rows.
    const [current] = await tx.select().from(user).where(eq(user.id, created.id));
    if (!current) throw new Error(`Sign-up of ${email}: the user vanished`);
    return current;
  });
}

/** A user's trail, newest first in apply order (the package's listCreditTransactions paginates it). */
export function history(db: Database | Transaction, userId: string): Promise<CreditTransaction[]> {
  return db
    .select()
    .from(creditTransaction)
    .where(eq(creditTransaction.userId, userId))
    .orderBy(desc(creditTransaction.seq));
}
