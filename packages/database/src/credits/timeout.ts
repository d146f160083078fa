import type { Database, Transaction } from '../client.js';
import { ConnectionLostError, isConnectionLost, OperationTimeoutError } from './errors.js';
import { everyServerOf } from './replicas.js';

const budgets = new WeakMap<object, number>();

/**
 * Bounds every credit operation called on `db` to `ms`: past it, the call throws
 * OperationTimeoutError instead of waiting on (a pooler that lost a statement, a server that
 * stopped answering). createDatabase sets it from `operationTimeoutMs`; any other drizzle
 * database can be given one with this. Calls inside a transaction are not bounded: the
 * transaction they belong to is the caller's to bound.
 */
export function setOperationTimeout(db: Database | Transaction, ms: number | undefined): void {
  for (const target of everyServerOf(db)) {
    if (ms === undefined) budgets.delete(target);
    else budgets.set(target, ms);
  }
}

/**
 * Runs `operation` within the budget of `db`, if it has one, and turns a lost connection into
 * ConnectionLostError. The statement itself is not cancelled (the driver offers no way through
 * drizzle): a write may still be applied after the timeout, which is why the error says a
 * retry must carry the same idempotency key.
 */
export async function withinBudget<T>(
  db: Database | Transaction,
  name: string,
  operation: () => Promise<T>,
): Promise<T> {
  try {
    return await bounded(db, name, operation);
  } catch (error) {
    if (isConnectionLost(error)) throw new ConnectionLostError(name, error);
    throw error;
  }
}

async function bounded<T>(
  db: Database | Transaction,
  name: string,
  operation: () => Promise<T>,
): Promise<T> {
  const ms = budgets.get(db);
  if (ms === undefined) return operation();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      operation(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new OperationTimeoutError(name, ms)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
