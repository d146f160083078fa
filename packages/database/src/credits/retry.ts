import type { Database, Transaction } from '../client.js';
import { ConnectionLostError } from './errors.js';
import { isTransaction } from './prepared.js';
import { everyServerOf } from './replicas.js';

/**
 * How a credit call is retried after a lost connection (CONNECTION_LOST): at most `attempts`
 * tries in all, waiting a jittered, doubling delay between them, and starting none later than
 * `deadlineMs` after the call began.
 */
export interface RetryPolicy {
  /** Tries in all, the first included. Default 6. */
  attempts?: number;
  /** The wait before the first retry, doubled for each one after. Default 100. */
  baseDelayMs?: number;
  /** The longest wait between two tries. Default 2,000. */
  maxDelayMs?: number;
  /**
   * No try starts later than this many milliseconds after the call began, so the call returns
   * or throws within `deadlineMs` plus one try (itself bounded by `operationTimeoutMs`, and
   * by the connect timeout while the server is unreachable). Default 10,000.
   */
  deadlineMs?: number;
  /** Told of each retry before its wait: for a log line or a metric. */
  onRetry?: (retry: RetryEvent) => void;
}

export interface RetryEvent {
  /** The operation, e.g. `deductCredits`. */
  operation: string;
  /** The try that failed: 1 for the first. */
  attempt: number;
  /** How long until the next try. */
  delayMs: number;
  error: ConnectionLostError;
}

type Resolved = Required<Omit<RetryPolicy, 'onRetry'>> & Pick<RetryPolicy, 'onRetry'>;

export const DEFAULT_RETRY_POLICY: Readonly<Required<Omit<RetryPolicy, 'onRetry'>>> = {
  attempts: 6,
  baseDelayMs: 100,
  maxDelayMs: 2_000,
  deadlineMs: 10_000,
};

const policies = new WeakMap<object, Resolved>();

function resolve(policy: RetryPolicy): Resolved {
  const resolved = { ...DEFAULT_RETRY_POLICY, ...policy };
  for (const key of ['attempts', 'baseDelayMs', 'maxDelayMs', 'deadlineMs'] as const) {
    const value = resolved[key];
    if (!Number.isFinite(value) || value < (key === 'attempts' ? 1 : 0))
      throw new RangeError(`retry.${key} must be a finite number ≥ ${key === 'attempts' ? 1 : 0}`);
  }
  return resolved;
}

/**
 * Turns retries after a lost connection on (a policy, or `true` for the defaults) or off
 * (`false` or undefined) for the credit calls made on `db`. createDatabase sets it from its
 * `retry` option; any other drizzle database (node-postgres, Neon's Pool) can be given one
 * with this. Off by default.
 *
 * Only calls a retry cannot apply twice are retried: deductCredits, refundCredits,
 * grantCredits and holdCredits that carry an `idempotencyKey` (the key applies once; a try
 * whose first attempt was applied gets it back as `replayed`), settleCreditHold and
 * voidCreditHold (a hold closes once; the holdId is their key), and the reads
 * (getCreditBalance, listCreditTransactions, listCreditTransactionsInRange). A write without a
 * key is never retried: its first try may have been applied. Nothing is retried inside a
 * caller's transaction (a lost connection takes the whole transaction with it), and neither
 * is OPERATION_TIMEOUT: the first statement may still be running and holding the user's lock,
 * so a retry would wait behind it, on a server already too slow, past the bound the caller set.
 */
export function setRetryPolicy(
  db: Database | Transaction,
  policy: RetryPolicy | boolean | undefined,
): void {
  for (const target of everyServerOf(db)) {
    if (policy === undefined || policy === false) policies.delete(target);
    else policies.set(target, resolve(policy === true ? {} : policy));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `run` (one try, given its number), again after a lost connection as `db`'s policy
 * allows, when `safe`: when a second try cannot apply the call twice. The last
 * ConnectionLostError is thrown with the number of tries made.
 */
export async function withRetry<T>(
  db: Database | Transaction,
  operation: string,
  safe: boolean,
  run: (attempt: number) => Promise<T>,
): Promise<T> {
  const policy = policies.get(db);
  if (!policy || !safe || isTransaction(db)) return run(1);
  const started = performance.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await run(attempt);
    } catch (error) {
      if (!(error instanceof ConnectionLostError)) throw error;
      // Doubling, with "equal jitter": at least half the step, so that callers cut off
      // together (a restart) spread out and still back off.
      const step = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const delayMs = Math.round(step / 2 + (Math.random() * step) / 2);
      const tooLate = performance.now() - started + delayMs > policy.deadlineMs;
      if (attempt >= policy.attempts || tooLate)
        throw attempt === 1 ? error : new ConnectionLostError(operation, error.cause, attempt);
      policy.onRetry?.({ operation, attempt, delayMs, error });
      await sleep(delayMs);
    }
  }
}
