import type { Database, Transaction } from '../client.js';

/** What drizzle's `withReplicas(primary, replicas)` returns, beside the Database it wraps. */
interface Replicated {
  $primary: Database;
  $replicas: Database[];
}

const replicated = (db: Database | Transaction): Replicated | undefined => {
  const candidate = db as unknown as Partial<Replicated>;
  return candidate.$primary && Array.isArray(candidate.$replicas)
    ? (candidate as Replicated)
    : undefined;
};

/**
 * The database a write, or a read that must see the caller's own writes, runs on. drizzle's
 * `withReplicas` sends `select` to a replica but `insert`, `execute` and `transaction` to the
 * primary: a ledger write's own reads (an idempotent retry's first result, a balance read
 * that first gives back due holds) would read a replica that has not replayed the write yet.
 * Such a database is therefore used through its primary, whole.
 */
export function onPrimary(db: Database | Transaction): Database | Transaction {
  return replicated(db)?.$primary ?? db;
}

/**
 * The database a read-only function (history, usage figures, the statement, verification)
 * runs on: for a `withReplicas` database one of its replicas, picked at random (as drizzle's
 * default picker does; a picker given to withReplicas is not visible here, and not used),
 * whole, so every statement of the call reads the same server.
 */
export function onReplica(db: Database | Transaction): Database | Transaction {
  const r = replicated(db);
  if (!r || r.$replicas.length === 0) return db;
  return r.$replicas[Math.floor(Math.random() * r.$replicas.length)] as Database;
}

/**
 * Every database a setting given to `db` must reach: for a `withReplicas` database, the
 * wrapper, its primary and each replica, since a call runs on one of them whole
 * (setOperationTimeout and setRetryPolicy key their settings on the database object).
 */
export function everyServerOf(db: Database | Transaction): (Database | Transaction)[] {
  const r = replicated(db);
  return r ? [db, r.$primary, ...r.$replicas] : [db];
}
