export { type CreditBalance, getCreditBalance } from './balance.js';
export {
  type BalanceName,
  BalanceOutOfRangeError,
  CreditsError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidCursorError,
  InvalidInputError,
  type InvalidRefundReason,
  InvalidRefundTargetError,
  LedgerNotInstalledError,
  RefundExceedsDeductionError,
  ReservationRefundError,
  UnsupportedIsolationError,
  UnsupportedServerLocaleError,
  UserNotFoundError,
} from './errors.js';
export {
  type CreditTransactionPage,
  type ListCreditTransactionsInput,
  type ListCreditTransactionsInRangeInput,
  listCreditTransactions,
  listCreditTransactionsInRange,
} from './history.js';
export {
  type CreditChangeInput,
  type CreditChangeResult,
  deductCredits,
  grantCredits,
  type RefundInput,
  refundCredits,
} from './ledger.js';
export { type ReservationInput, withCreditReservation } from './reservation.js';
export {
  DEFAULT_PAGE_SIZE,
  MAX_AMOUNT,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  MAX_METADATA_BYTES,
  MAX_METADATA_DEPTH,
  MAX_PAGE_SIZE,
} from './validation.js';
export {
  type LedgerAnchor,
  type LedgerVerification,
  type LedgerViolation,
  ledgerFingerprint,
  ledgerHeads,
  type VerifyLedgerOptions,
  verifyLedger,
} from './verify.js';
