import { eq } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import { user } from '../schema.js';
import { UserNotFoundError } from './errors.js';
import { parse, userIdInput } from './validation.js';

export interface CreditBalance {
  freeCredits: number;
  freeChatMessages: number;
}

export async function getCreditBalance(
  db: Database | Transaction,
  userId: string,
): Promise<CreditBalance> {
  const id = parse(userIdInput, userId, 'userId');
  const [row] = await db
    .select({ freeCredits: user.freeCredits, freeChatMessages: user.freeChatMessages })
    .from(user)
    .where(eq(user.id, id));
  if (!row) throw new UserNotFoundError(id);
  return row;
}
