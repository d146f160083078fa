import { DatabaseError } from '../errors.js';

/** Base of every error of the credit operations; `code` is stable, `message` is for people. */
export abstract class CreditsError extends DatabaseError {}

/** The input was refused before the database was touched. `field` names the offending one. */
export class InvalidInputError extends CreditsError {
  readonly code: 'INVALID_INPUT' | 'INVALID_CURSOR' = 'INVALID_INPUT';

  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`Invalid ${field}: ${reason}`);
  }
}

/** A cursor that this query did not produce, or that was altered. */
export class InvalidCursorError extends InvalidInputError {
  override readonly code = 'INVALID_CURSOR' as const;

  constructor(reason: string) {
    super('cursor', reason);
  }
}

export type BalanceName = 'free_credits' | 'free_chat_messages';

export class InsufficientCreditsError extends CreditsError {
  readonly code = 'INSUFFICIENT_CREDITS';

  constructor(
    readonly userId: string,
    readonly balance: BalanceName,
    readonly required: number,
    readonly available: number,
  ) {
    super(
      `User ${userId} has ${available} ${balance} but ${required} is required; nothing was written.`,
    );
  }
}

/**
 * A plan change named a plan that is not a row of credit_ledger.credit_plan (BC022), or no plan
 * is the default (`plan` null): nothing was written. Plans are the owner's data, added in a
 * migration.
 */
export class PlanNotFoundError extends CreditsError {
  readonly code = 'PLAN_NOT_FOUND';

  constructor(
    readonly plan: string | null,
    readonly plans: string[],
  ) {
    super(
      plan === null
        ? 'No plan of credit_ledger.credit_plan is the default; nothing was written. Mark one is_default in a migration.'
        : `Plan "${plan}" does not exist (plans: ${plans.join(', ') || 'none'}); nothing was written. Plans are rows of credit_ledger.credit_plan, added in a migration.`,
    );
  }
}

export class UserNotFoundError extends CreditsError {
  readonly code = 'USER_NOT_FOUND';

  constructor(readonly userId: string) {
    super(`User ${userId} does not exist; nothing was written.`);
  }
}

export class IdempotencyConflictError extends CreditsError {
  readonly code = 'IDEMPOTENCY_CONFLICT';

  constructor(
    readonly userId: string,
    readonly idempotencyKey: string,
    readonly existingTransactionId: string,
  ) {
    super(
      `Idempotency key "${idempotencyKey}" of user ${userId} was already used, with other arguments, ` +
        `by transaction ${existingTransactionId}; nothing was written. Use a new key for a new request.`,
    );
  }
}

export class RefundExceedsDeductionError extends CreditsError {
  readonly code = 'REFUND_EXCEEDS_DEDUCTION';

  constructor(
    readonly refundOf: string,
    readonly deducted: number,
    readonly refunded: number,
    readonly requested: number,
  ) {
    super(
      `Refunding ${requested} would exceed charge ${refundOf}: ${deducted} charged, ` +
        `${refunded} refunded already; nothing was written.`,
    );
  }
}

export type InvalidRefundReason =
  | 'not_found'
  | 'other_user'
  | 'not_a_deduction'
  | 'other_feature'
  | 'covered_by_plan';

export class InvalidRefundTargetError extends CreditsError {
  readonly code = 'INVALID_REFUND_TARGET';

  constructor(
    readonly refundOf: string,
    readonly reason: InvalidRefundReason,
  ) {
    const why = {
      not_found: 'does not exist',
      other_user: "is another user's",
      not_a_deduction: 'is neither a deduction nor a settlement (a charge)',
      other_feature: 'spent another feature type (another balance)',
      covered_by_plan: 'was covered by an unlimited plan and took no credits',
    }[reason];
    super(`refundOf ${refundOf} ${why}; nothing was written.`);
  }
}

/**
 * A write sent to a connection that cannot write: a streaming replica (hot standby), or a
 * session or database set to `default_transaction_read_only`. Nothing was written.
 */
export class ReadOnlyDatabaseError extends CreditsError {
  readonly code = 'READ_ONLY_DATABASE';

  constructor(
    readonly operation: string,
    /** The server's 25006 error: `sqlStateOf` still reads it (a replica's read falls back on it). */
    cause?: unknown,
  ) {
    super(
      `The database refused ${operation} as read-only (a replica, or a read-only session); nothing was written. Send writes to the primary.`,
      { cause },
    );
  }
}

/** A grant or refund would take a balance past the largest integer PostgreSQL stores. */
export class BalanceOutOfRangeError extends CreditsError {
  readonly code = 'BALANCE_OUT_OF_RANGE';

  constructor(readonly userId: string) {
    super(`The balance of user ${userId} would exceed 2147483647; nothing was written.`);
  }
}

/** A capped refund inside a REPEATABLE READ transaction, where the cap cannot be checked safely. */
export class UnsupportedIsolationError extends CreditsError {
  readonly code = 'UNSUPPORTED_ISOLATION';

  constructor() {
    super(
      'A refund of a deduction cannot run under REPEATABLE READ; use READ COMMITTED or SERIALIZABLE.',
    );
  }
}

/**
 * The ledger's triggers are missing or disabled (a database built with `drizzle-kit push`, or
 * a trigger disabled by hand): nothing was written, and no balance is made up.
 */
export class LedgerNotInstalledError extends CreditsError {
  readonly code = 'LEDGER_NOT_INSTALLED';

  constructor() {
    super(
      'The credits ledger is not installed in this database: its triggers are missing or disabled, ' +
        'so nothing was written. Apply the migrations with `pnpm db:migrate` (never `drizzle-kit push`), ' +
        'and run `pnpm credits:verify` to see what is wrong.',
    );
  }
}

/**
 * A trigger that is not the ledger's runs inside ledger writes, with a function the owner of
 * the ledger tables does not own (one a role with the TRIGGER privilege created): it could
 * change a balance or a row after the ledger checked it, so nothing was written.
 */
export class ForeignLedgerTriggerError extends CreditsError {
  readonly code = 'FOREIGN_LEDGER_TRIGGER';

  /** The triggers, as `name on table (function f)`. */
  constructor(readonly triggers: string) {
    super(
      `A trigger that is not the credits ledger's runs inside its writes (${triggers}), so nothing was written: ` +
        'its function could change a balance or a row after the ledger checked it. ' +
        'Drop the trigger (as the owner of the table), or have the owner of the ledger tables own its function.',
    );
  }
}

/**
 * A foreign key of a table the ledger's owner does not own references the trail or
 * "CreditHold": it could keep a hold from ever closing (every write of its user, and the
 * sweeper, would then fail on it), so every ledger write refuses while it exists.
 */
export class ForeignLedgerReferenceError extends CreditsError {
  readonly code = 'FOREIGN_LEDGER_REFERENCE';

  /** The constraints, as `name on table (owner r, references t)`. */
  constructor(readonly constraints: string) {
    super(
      `A foreign key of a table the credits ledger's owner does not own references a ledger table (${constraints}), so nothing was written: ` +
        'it could keep a hold from ever closing. Drop the constraint, or have the owner of the ledger tables own its table.',
    );
  }
}

/**
 * What the user took for a feature today (UTC), with this change, would pass that feature's
 * daily limit (a row of credit_ledger.credit_limit): nothing was written. A hold counts in
 * full when it is taken; the room comes back at `resetsAt` (midnight UTC).
 */
export type CapPeriod = 'day' | 'week' | 'month';

/**
 * A cap of credit_ledger.credit_limit would be exceeded (BC020): what the user took for the
 * feature in the period, plus this request, is more than the cap of its plan (or of every
 * plan, `plan` null). Nothing was written; `resetsAt` says when the period ends. A daily cap
 * throws its subclass DailyLimitExceededError (`DAILY_LIMIT_EXCEEDED`), as before caps had periods.
 */
export class CapExceededError extends CreditsError {
  readonly code: 'CAP_EXCEEDED' | 'DAILY_LIMIT_EXCEEDED' = 'CAP_EXCEEDED';

  constructor(
    readonly userId: string,
    readonly featureType: string,
    readonly limit: number,
    readonly used: number,
    readonly requested: number,
    readonly resetsAt: Date,
    readonly period: CapPeriod = 'day',
    readonly plan: string | null = null,
  ) {
    const per = { day: 'daily', week: 'weekly', month: 'monthly' }[period];
    super(
      `User ${userId} has taken ${used} of its ${per} limit of ${limit} for ${featureType}` +
        `${plan === null ? '' : ` on plan ${plan}`}, so ${requested} more would exceed it; ` +
        `nothing was written. The limit resets at ${resetsAt.toISOString()}.`,
    );
  }
}

export class DailyLimitExceededError extends CapExceededError {
  override readonly code = 'DAILY_LIMIT_EXCEEDED' as const;
}

/**
 * The user has more holds past their expiry than one write gives back before it (100): the
 * write refused at once, writing nothing, rather than take seconds. Called on a `Database`,
 * the package gives them back in batches (each its own statement) and writes again, so this
 * reaches the caller only from inside its own transaction: run expireCreditHolds for the user
 * outside it (or wait for credits:expire-holds), then retry.
 */
export class HoldsExpiryBacklogError extends CreditsError {
  readonly code = 'HOLDS_EXPIRY_BACKLOG';
  readonly retryable = true;

  constructor(
    readonly userId: string,
    readonly limit: number,
  ) {
    super(
      `User ${userId} has more than ${limit} holds past their expiry to give back before this change; nothing was written. ` +
        'Give them back with expireCreditHolds({ userId }) outside this transaction, then retry.',
    );
  }
}

/**
 * credits:verify compares a database with the ledger its migrations define; this database
 * has not applied every migration of the package's folder (`pending`), or has applied some
 * the folder does not know (`unknown`, a newer package applied them). Nothing was checked:
 * the definitions would be the wrong ones.
 */
export class LedgerVersionMismatchError extends CreditsError {
  readonly code = 'LEDGER_VERSION_MISMATCH';

  constructor(
    readonly pending: string[],
    readonly unknown: number,
  ) {
    super(
      pending.length > 0
        ? `${pending.length} migration${pending.length === 1 ? '' : 's'} pending (${pending.join(', ')}): run pnpm db:migrate, then verify again; nothing was checked.`
        : `The database has ${unknown} migration${unknown === 1 ? '' : 's'} this package does not know: verify with the version of the package that applied them; nothing was checked.`,
    );
  }
}

/**
 * A lock the ledger needed (the user's row, a hold's row) stayed held by another transaction
 * for longer than the ledger waits (its functions' lock_timeout, 5 s): nothing was written.
 * Retrying is safe with the same idempotency key; a transaction that keeps a user's row
 * locked (SELECT … FOR UPDATE, a long transaction around a credit call) is the cause.
 */
export class LedgerLockTimeoutError extends CreditsError {
  readonly code = 'LEDGER_LOCK_TIMEOUT';
  readonly retryable = true;

  constructor(readonly userId: string) {
    super(
      `A credit change of user ${userId} waited too long for a lock another transaction holds, so nothing was written. ` +
        "Retry it (with the same idempotency key); if it keeps failing, find the transaction that holds the user's row locked (pg_locks, pg_stat_activity).",
    );
  }
}

/**
 * A ledger write under REPEATABLE READ or SERIALIZABLE while a role other than the tables'
 * owner holds TRIGGER on them: the transaction's snapshot cannot show a trigger such a role
 * created after it was taken, so the ledger cannot rule one out, and wrote nothing.
 */
export class UnsafeTriggerPrivilegeError extends CreditsError {
  readonly code = 'UNSAFE_TRIGGER_PRIVILEGE';

  /** The roles holding TRIGGER on the ledger's tables, as `a, b` (PUBLIC for everyone). */
  constructor(readonly roles: string) {
    super(
      `Under REPEATABLE READ or SERIALIZABLE the credits ledger cannot see a trigger created after the transaction's snapshot, ` +
        `and ${roles} may create one (they hold TRIGGER on its tables), so nothing was written. ` +
        'Write at READ COMMITTED (the default), or REVOKE TRIGGER ON "User", "CreditTransaction", "CreditHold" FROM those roles.',
    );
  }
}

/**
 * The server's messages are translated (lc_messages), and the ledger's guard reads the call
 * stack in English: every write is refused until the setting is English.
 */
export class UnsupportedServerLocaleError extends CreditsError {
  readonly code = 'UNSUPPORTED_SERVER_LOCALE';

  constructor() {
    super(
      "The credits ledger needs the server's messages in English and they are not, so nothing was " +
        "written. Set lc_messages to 'C' for this database (ALTER DATABASE … SET lc_messages = 'C', as a superuser).",
    );
  }
}

/**
 * An UPDATE, DELETE or TRUNCATE of a trail row, or a change of "CreditHold" by hand (BC005):
 * both only grow through the ledger, so nothing was changed. `reason` is the server's message.
 */
export class LedgerAppendOnlyError extends CreditsError {
  readonly code = 'LEDGER_APPEND_ONLY';

  constructor(readonly reason: string) {
    super(
      `${reason}. The credit trail is append-only and "CreditHold" lists its open holds, so nothing was changed. ` +
        'Correct a balance with a new row (grantCredits, deductCredits, refundCredits); settle, void or expire a hold through the ledger.',
    );
  }
}

/**
 * A balance, head or id of "User" changed other than by the ledger applying a trail row
 * (BC006): an UPDATE of "User" that touches them is refused, so nothing was changed.
 */
export class BalanceOutsideLedgerError extends CreditsError {
  readonly code = 'BALANCE_OUTSIDE_LEDGER';

  constructor(readonly reason: string) {
    super(
      `${reason}, so nothing was changed. Change a balance with grantCredits, deductCredits or refundCredits ` +
        '(a row of "CreditTransaction"), never an UPDATE of "User"\'s credit columns.',
    );
  }
}

/**
 * A trail row out of its user's order (BC008): two rows of one user in one statement, a
 * change of a user in the statement that creates it, or a grant claiming to be an opening
 * row. Nothing was written. `reason` is the server's message, `hint` what to do instead.
 */
export class LedgerWriteOrderError extends CreditsError {
  readonly code = 'LEDGER_WRITE_ORDER';

  constructor(
    readonly reason: string,
    readonly hint: string | undefined,
  ) {
    super(`${reason}, so nothing was written. ${hint ?? 'Write one row per user per statement.'}`);
  }
}

/**
 * A ledger function ran other than as its own trigger (BC010): attached to another table or
 * event by the owner, say. Nothing was changed.
 */
export class LedgerFunctionMisuseError extends CreditsError {
  readonly code = 'LEDGER_FUNCTION_MISUSE';

  constructor(readonly reason: string) {
    super(
      `${reason}, so nothing was changed. The ledger's functions run only as the triggers its migrations create: ` +
        'drop the trigger that calls one elsewhere, and run `pnpm credits:verify` to see what else differs.',
    );
  }
}

/** withCreditReservation: `fn` failed and so did the void of its hold. */
export class ReservationRefundError extends CreditsError {
  readonly code = 'RESERVATION_REFUND_FAILED';

  constructor(
    readonly reservationId: string,
    readonly original: unknown,
    refundError: unknown,
  ) {
    super(
      `The credits held by hold ${reservationId} could not be given back after the work failed. ` +
        'They come back on their own when the hold expires; to give them back now, retry voidCreditHold with this holdId.',
      { cause: refundError },
    );
  }
}

export type HoldNotFoundReason = 'not_found' | 'other_user' | 'not_a_hold' | 'other_feature';

/** settleCreditHold / voidCreditHold: the holdId names no hold of this user. */
export class HoldNotFoundError extends CreditsError {
  readonly code = 'HOLD_NOT_FOUND';

  constructor(
    readonly holdId: string,
    readonly reason: HoldNotFoundReason,
  ) {
    const why = {
      not_found: 'does not exist',
      other_user: "is another user's",
      not_a_hold: 'is a trail row that is not a hold',
      other_feature: 'holds another balance',
    }[reason];
    super(`Hold ${holdId} ${why}; nothing was written. Pass the holdId that holdCredits returned.`);
  }
}

export type HoldOutcome = 'settled' | 'voided' | 'expired';

/** The hold is closed already: settled, voided or expired. Nothing was written. */
export abstract class HoldClosedError extends CreditsError {
  abstract override readonly code: 'HOLD_ALREADY_SETTLED' | 'HOLD_ALREADY_VOIDED' | 'HOLD_EXPIRED';

  constructor(
    readonly holdId: string,
    readonly outcome: HoldOutcome,
    /** The trail row that closed it; null when it expired and the expiry is not written yet. */
    readonly closedBy: string | null,
    readonly expiresAt: Date,
    message: string,
  ) {
    super(message);
  }
}

export class HoldAlreadySettledError extends HoldClosedError {
  readonly code = 'HOLD_ALREADY_SETTLED';

  constructor(
    holdId: string,
    closedBy: string,
    /** What the settlement charged. */
    readonly charged: number,
    expiresAt: Date,
  ) {
    super(
      holdId,
      'settled',
      closedBy,
      expiresAt,
      `Hold ${holdId} was settled already (for ${charged}, by ${closedBy}); nothing was written.`,
    );
  }
}

export class HoldAlreadyVoidedError extends HoldClosedError {
  readonly code = 'HOLD_ALREADY_VOIDED';

  constructor(holdId: string, closedBy: string, expiresAt: Date) {
    super(
      holdId,
      'voided',
      closedBy,
      expiresAt,
      `Hold ${holdId} was voided already (by ${closedBy}): its credits are back; nothing was written.`,
    );
  }
}

export class HoldExpiredError extends HoldClosedError {
  readonly code = 'HOLD_EXPIRED';

  constructor(holdId: string, closedBy: string | null, expiresAt: Date) {
    super(
      holdId,
      'expired',
      closedBy,
      expiresAt,
      `Hold ${holdId} expired at ${expiresAt.toISOString()} and its credits were given back; nothing was written. ` +
        'Take holds with an expiresInMs longer than the work they cover.',
    );
  }
}

/** A settlement of more than the hold holds, or a void/expiry of another amount. */
export class HoldAmountError extends CreditsError {
  readonly code = 'SETTLE_EXCEEDS_HOLD';

  constructor(
    readonly holdId: string,
    readonly held: number,
    readonly requested: number,
  ) {
    super(
      `Hold ${holdId} holds ${held}, so ${requested} cannot be settled from it; nothing was written. ` +
        'Settle at most the held amount, and charge any more with deductCredits.',
    );
  }
}

/** An expire row for a hold that is not past its expiry yet. */
export class HoldNotDueError extends CreditsError {
  readonly code = 'HOLD_NOT_DUE';

  constructor(
    readonly holdId: string,
    readonly expiresAt: Date,
  ) {
    super(
      `Hold ${holdId} expires at ${expiresAt.toISOString()}, not yet; nothing was written. Void it to give it back now.`,
    );
  }
}

// postgres.js names the fields table_name, column_name, constraint_name; node-postgres and
// PGlite (pg-protocol's DatabaseError) table, column, constraint.
/**
 * A statement prepared on one server connection was missing on the next: a transaction-mode
 * pooler without prepared-statement support (PgBouncer before 1.21, Neon's and Supabase's
 * pooled URLs) between the app and the server, with prepared statements on. Nothing was
 * written by the failed statement.
 */
export class PreparedStatementsUnsupportedError extends CreditsError {
  readonly code = 'PREPARED_STATEMENTS_UNSUPPORTED';

  constructor(cause: unknown) {
    super(
      'The server lost a prepared statement between transactions: a transaction-mode pooler ' +
        'without prepared-statement support is in the way. Add ?pgbouncer=true to the pooled ' +
        'URL (or createDatabase(url, { prepare: false })), or use the direct URL.',
      { cause },
    );
  }
}

/**
 * A credit operation got no answer within the database's `operationTimeoutMs`. The caller has
 * control back; the statement may still be applied by the server. Retrying a write is safe
 * with the same idempotency key (it applies once); without one, read the trail first.
 */
export class OperationTimeoutError extends CreditsError {
  readonly code = 'OPERATION_TIMEOUT';
  readonly retryable = true;

  constructor(
    readonly operation: string,
    readonly timeoutMs: number,
  ) {
    super(
      `${operation} got no answer within ${timeoutMs} ms. It may still be applied: retry it with the same ` +
        'idempotency key (it applies once), or read the trail before retrying a write without one.',
    );
  }
}

/**
 * The connection to the database was lost while the call ran (a backend terminated, a server
 * restarting, a network reset), or none could be made (a server down: refused, or no answer
 * within the connect timeout). The change may or may not have been applied: a retry with the
 * same idempotency key is safe (it applies once); reads are always safe to retry; a write
 * without a key is not, read the trail first.
 */
export class ConnectionLostError extends CreditsError {
  readonly code = 'CONNECTION_LOST';
  readonly retryable = true;
  /** The driver's own code of the fault: 57P01, ECONNRESET, ECONNREFUSED, CONNECTION_CLOSED… */
  readonly faultCode: string;

  constructor(
    readonly operation: string,
    cause: unknown,
    /** How many times the call was tried (more than 1 when the retry policy retried it). */
    readonly attempts = 1,
  ) {
    const fault = connectionFault(cause);
    const what = fault?.connecting
      ? 'could not connect to the database'
      : 'lost its connection to the database';
    const tries = attempts > 1 ? ` (tried ${attempts} times)` : '';
    super(
      `${operation} ${what}${tries}: ${fault?.message ?? String(cause)}. A retry with the same idempotency ` +
        'key is safe (it applies once); reads are safe to retry; read the trail before retrying a write without a key.',
      { cause },
    );
    this.faultCode = fault?.code ?? 'UNKNOWN';
  }
}

// PostgreSQL's connection exceptions (class 08) and shutdowns (57P01–57P03); Node's socket
// errors; postgres.js's own.
const CONNECTION_CODES = new Set([
  '57P01',
  '57P02',
  '57P03',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
]);

// Faults that mean no connection was made: nothing of the call reached the server.
const CONNECTING_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'CONNECT_TIMEOUT',
  '57P03',
]);

// node-postgres reports a lost connection with a bare Error and one of these messages
// (pg 8: lib/client.js, pg-pool): no code to read.
const NODE_POSTGRES_MESSAGES = new Map([
  ['Connection terminated unexpectedly', 'CONNECTION_TERMINATED'],
  ['Client has encountered a connection error and is not queryable', 'CONNECTION_TERMINATED'],
  ['Connection terminated due to connection timeout', 'CONNECT_TIMEOUT'],
]);

interface ConnectionFault {
  code: string;
  message: string;
  /** The fault happened before a connection was made. */
  connecting: boolean;
}

/**
 * The lost connection `error` (or a cause of it, such as drizzle's DrizzleQueryError's) is,
 * when it is one rather than an answer of the server: its code and the driver's message
 * (never drizzle's wrapper message, which holds the query and its parameters).
 */
export function connectionFault(error: unknown): ConnectionFault | undefined {
  for (
    let e: unknown = error, depth = 0;
    e && depth < 5;
    e = (e as { cause?: unknown }).cause, depth++
  ) {
    const code = (e as { code?: unknown }).code;
    const message = e instanceof Error ? e.message : String(e);
    if (typeof code === 'string' && (CONNECTION_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code)))
      return { code, message, connecting: CONNECTING_CODES.has(code) || code === '08001' };
    // An AggregateError (ECONNREFUSED on each address of a host name) has its code on its parts.
    if (e instanceof AggregateError) {
      const inner = e.errors.map(connectionFault).find((f) => f !== undefined);
      if (inner) return inner;
    }
    const pgCode = e instanceof Error && code === undefined && NODE_POSTGRES_MESSAGES.get(message);
    if (pgCode) return { code: pgCode, message, connecting: pgCode === 'CONNECT_TIMEOUT' };
  }
  return undefined;
}

/** Whether `error` (or its cause) is a lost connection rather than an answer of the server. */
export function isConnectionLost(error: unknown): boolean {
  return connectionFault(error) !== undefined;
}

interface PgError {
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
  table_name?: string;
  column_name?: string;
  constraint_name?: string;
  table?: string;
  column?: string;
  constraint?: string;
  severity?: string;
}

// Columns only the ledger's BEFORE INSERT trigger fills: NULL there means it did not run.
const TRIGGER_SET_COLUMNS = new Set(['seq', 'hash', 'balance_after']);

const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * The server's error, when it is one. Node's own errors carry a string `code` too, some of
 * SQLSTATE shape (EPIPE, EPERM): only an error with the server's `severity` counts.
 */
function pgErrorOf(error: unknown): PgError | undefined {
  const cause = (error as { cause?: unknown })?.cause;
  const candidate = (cause ?? error) as PgError;
  return typeof candidate?.code === 'string' &&
    SQLSTATE.test(candidate.code) &&
    typeof candidate.severity === 'string'
    ? candidate
    : undefined;
}

export function sqlStateOf(error: unknown): string | undefined {
  return pgErrorOf(error)?.code;
}

/** The constraint a server error names (a unique violation's index), whatever the driver. */
export function constraintOf(error: unknown): string | undefined {
  const pg = pgErrorOf(error);
  return pg?.constraint_name ?? pg?.constraint;
}

/**
 * Every SQLSTATE of class BC the ledger's sources (ledger/) raise, and the `code` of the typed
 * error toCreditsError turns it into: the one registry of the ledger's error codes. Some only
 * raw SQL meets (the append-only trail, a balance changed by hand, a row out of the user's
 * order, a trigger function run by hand); toCreditsError types them for an app's own SQL.
 * test/credits/error-registry.test.ts fails when a source raises a code missing here, one is
 * not turned into its error, its error is not exported, or the README does not name it.
 */
export const LEDGER_SQLSTATES = {
  BC001: ['INSUFFICIENT_CREDITS'],
  BC002: ['USER_NOT_FOUND'],
  BC003: ['REFUND_EXCEEDS_DEDUCTION'],
  BC004: ['INVALID_REFUND_TARGET'],
  BC005: ['LEDGER_APPEND_ONLY'],
  BC006: ['BALANCE_OUTSIDE_LEDGER'],
  BC007: ['UNSUPPORTED_ISOLATION'],
  BC008: ['LEDGER_WRITE_ORDER'],
  BC009: ['LEDGER_NOT_INSTALLED'],
  BC010: ['LEDGER_FUNCTION_MISUSE'],
  BC011: ['UNSUPPORTED_SERVER_LOCALE'],
  BC012: ['HOLD_NOT_FOUND'],
  BC013: ['HOLD_ALREADY_SETTLED', 'HOLD_ALREADY_VOIDED', 'HOLD_EXPIRED'],
  BC014: ['SETTLE_EXCEEDS_HOLD'],
  BC015: ['HOLD_NOT_DUE'],
  BC016: ['INVALID_INPUT'],
  BC017: ['FOREIGN_LEDGER_TRIGGER'],
  BC018: ['UNSAFE_TRIGGER_PRIVILEGE'],
  BC019: ['FOREIGN_LEDGER_REFERENCE'],
  BC020: ['DAILY_LIMIT_EXCEEDED', 'CAP_EXCEEDED'],
  BC021: ['HOLDS_EXPIRY_BACKLOG'],
  BC022: ['PLAN_NOT_FOUND'],
  BC023: ['INVALID_INPUT'],
  BC024: ['INVALID_INPUT'],
} as const satisfies Record<`BC${string}`, readonly string[]>;

/**
 * Turns an error carrying one of the ledger's SQLSTATEs (`BC…`, LEDGER_SQLSTATES) into the
 * package's typed error, and returns any other error unchanged: a driver's error, drizzle's
 * (its `cause`), from the package or from an app's own SQL (a raw INSERT into the trail
 * beyond the balance becomes InsufficientCreditsError, so a route's catch can send 402). The
 * user comes from the error's DETAIL.
 */
export function toCreditsError(error: unknown): unknown {
  const pg = pgErrorOf(error);
  return pg && /^BC\d{3}$/.test(pg.code ?? '') ? typed(error, pg, undefined) : error;
}

/**
 * What a ledger write for `userId` failed with: its BC codes as toCreditsError types them,
 * and the server's own errors such a write meets (a lock timeout, an int4 overflow, a
 * statement a pooler lost, the triggers missing), which only the write's context says are
 * the ledger's.
 */
export function toLedgerWriteError(error: unknown, userId: string): unknown {
  const pg = pgErrorOf(error);
  return pg ? typed(error, pg, userId) : error;
}

function typed(error: unknown, pg: PgError, writeUserId: string | undefined): unknown {
  const detail = (() => {
    try {
      return JSON.parse(pg.detail ?? '{}') as Record<string, unknown>;
    } catch {
      return {};
    }
  })();
  // The write's user, or the one the ledger names in DETAIL (every BC error of a user does).
  const userId = writeUserId || String(detail.userId ?? '');
  const reason = pg.message ?? 'refused by the credits ledger';
  switch (pg.code) {
    case 'BC001':
      return new InsufficientCreditsError(
        userId,
        detail.balance as BalanceName,
        Number(detail.required),
        Number(detail.available),
      );
    case 'BC002':
      return new UserNotFoundError(userId);
    case 'BC003':
      return new RefundExceedsDeductionError(
        String(detail.refundOf),
        Number(detail.deducted),
        Number(detail.refunded),
        Number(detail.requested),
      );
    case 'BC004':
      return new InvalidRefundTargetError(
        String(detail.refundOf),
        detail.reason as InvalidRefundReason,
      );
    case 'BC007':
      return new UnsupportedIsolationError();
    case 'BC009':
      return new LedgerNotInstalledError();
    case 'BC011':
      return new UnsupportedServerLocaleError();
    case 'BC017':
      return new ForeignLedgerTriggerError(String(detail.triggers));
    case 'BC018':
      return new UnsafeTriggerPrivilegeError(String(detail.roles));
    case 'BC020': {
      const period = (detail.period ?? 'day') as CapPeriod;
      return new (period === 'day' ? DailyLimitExceededError : CapExceededError)(
        userId,
        String(detail.featureType),
        Number(detail.limit),
        Number(detail.used),
        Number(detail.requested),
        new Date(String(detail.resetsAt)),
        period,
        detail.plan == null ? null : String(detail.plan),
      );
    }
    case 'BC021':
      return new HoldsExpiryBacklogError(userId, Number(detail.limit));
    case 'BC019':
      return new ForeignLedgerReferenceError(String(detail.constraints));
    case 'BC005':
      return new LedgerAppendOnlyError(reason);
    case 'BC006':
      return new BalanceOutsideLedgerError(reason);
    case 'BC008':
      return new LedgerWriteOrderError(reason, pg.hint);
    case 'BC010':
      return new LedgerFunctionMisuseError(reason);
    case '55P03':
      return new LedgerLockTimeoutError(userId);
    case '23502':
      return (pg.table_name ?? pg.table) === 'CreditTransaction' &&
        TRIGGER_SET_COLUMNS.has(pg.column_name ?? pg.column ?? '')
        ? new LedgerNotInstalledError()
        : error;
    case '22003':
      return new BalanceOutOfRangeError(userId);
    case '25006':
      return writeUserId === undefined
        ? error
        : new ReadOnlyDatabaseError(userId ? `a write for user ${userId}` : 'a write', pg);
    case '26000':
      return new PreparedStatementsUnsupportedError(error);
    case 'BC012':
      return new HoldNotFoundError(String(detail.holdId), detail.reason as HoldNotFoundReason);
    case 'BC013': {
      const holdId = String(detail.holdId);
      const expiresAt = new Date(String(detail.expiresAt));
      const closedBy = detail.closedBy == null ? null : String(detail.closedBy);
      if (detail.outcome === 'settled' && closedBy)
        return new HoldAlreadySettledError(holdId, closedBy, Number(detail.amount), expiresAt);
      if (detail.outcome === 'voided' && closedBy)
        return new HoldAlreadyVoidedError(holdId, closedBy, expiresAt);
      return new HoldExpiredError(holdId, closedBy, expiresAt);
    }
    case 'BC014':
      return new HoldAmountError(
        String(detail.holdId),
        Number(detail.held),
        Number(detail.requested),
      );
    case 'BC015':
      return new HoldNotDueError(String(detail.holdId), new Date(String(detail.expiresAt)));
    case 'BC016':
    case 'BC023':
      return new InvalidInputError(String(detail.field), String(detail.reason));
    case 'BC024':
      return new InvalidInputError(
        'allocations',
        'an expire_grant row takes off all that remains of one due grant of its user and balance',
      );
    case 'BC022':
      return new PlanNotFoundError(
        detail.plan == null ? null : String(detail.plan),
        Array.isArray(detail.plans) ? detail.plans.map(String) : [],
      );
    default:
      return error;
  }
}
