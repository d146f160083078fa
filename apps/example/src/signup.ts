import { createDatabase, type Database, type Transaction } from '@bragdoc/database';
import {
  type CreditTransaction,
  creditTransaction,
  type User,
  user,
} from '@bragdoc/database/schema';
import { desc, eq } from 'drizzle-orm';

export { createDatabase };

/**
 * What an app does at sign-up: create the user and record the welcome grant, in one
 * transaction. The free balances come from the schema's defaults.
 */
export async function signUp(db: Database, email: string, name?: string): Promise<User> {
  return db.transaction(async (tx: Transaction) => {
    const [created] = await tx.insert(user).values({ email, name }).returning();
    if (!created) throw new Error(`Sign-up of ${email} returned no row`);
    await tx.insert(creditTransaction).values({
      userId: created.id,
      amount: created.freeCredits,
      operation: 'grant',
      featureType: 'document_generation',
      metadata: { reason: 'welcome' },
    });
    return created;
  });
}

/** A user's trail, newest first. */
export function history(db: Database | Transaction, userId: string): Promise<CreditTransaction[]> {
  return db
    .select()
    .from(creditTransaction)
    .where(eq(creditTransaction.userId, userId))
    .orderBy(desc(creditTransaction.createdAt));
}
