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
      `Refunding ${requested} would exceed deduction ${refundOf}: ${deducted} deducted, ` +
        `${refunded} refunded already; nothing was written.`,
    );
  }
}

export type InvalidRefundReason = 'not_found' | 'other_user' | 'not_a_deduction' | 'other_feature';

export class InvalidRefundTargetError extends CreditsError {
  readonly code = 'INVALID_REFUND_TARGET';

  constructor(
    readonly refundOf: string,
    readonly reason: InvalidRefundReason,
  ) {
    const why = {
      not_found: 'does not exist',
      other_user: "is another user's",
      not_a_deduction: 'is not a deduction',
      other_feature: 'spent another feature type (another balance)',
    }[reason];
    super(`refundOf ${refundOf} ${why}; nothing was written.`);
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

/** withCreditReservation: `fn` failed and so did the refund of its reservation. */
export class ReservationRefundError extends CreditsError {
  readonly code = 'RESERVATION_REFUND_FAILED';

  constructor(
    readonly reservationId: string,
    readonly original: unknown,
    refundError: unknown,
  ) {
    super(
      `The reserved credits of transaction ${reservationId} could not be refunded after the work failed. ` +
        'Retry refundCredits with refundOf set to it (the refund is idempotent).',
      { cause: refundError },
    );
  }
}

interface PgError {
  code?: string;
  detail?: string;
  table_name?: string;
  column_name?: string;
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

/** Turns the ledger trigger's SQLSTATEs (class BC, migration 0002) into typed errors. */
export function toCreditsError(error: unknown, userId: string): unknown {
  const pg = pgErrorOf(error);
  if (!pg) return error;
  const detail = (() => {
    try {
      return JSON.parse(pg.detail ?? '{}') as Record<string, unknown>;
    } catch {
      return {};
    }
  })();
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
    case '23502':
      return pg.table_name === 'CreditTransaction' && TRIGGER_SET_COLUMNS.has(pg.column_name ?? '')
        ? new LedgerNotInstalledError()
        : error;
    case '22003':
      return new BalanceOutOfRangeError(userId);
    default:
      return error;
  }
}
