export { type CreditBalance, getCreditBalance } from './balance.js';
export {
  type BalanceName,
  BalanceOutOfRangeError,
  ConnectionLostError,
  CreditsError,
  ForeignLedgerTriggerError,
  HoldAlreadySettledError,
  HoldAlreadyVoidedError,
  HoldAmountError,
  HoldClosedError,
  HoldExpiredError,
  HoldNotDueError,
  HoldNotFoundError,
  type HoldNotFoundReason,
  type HoldOutcome,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidCursorError,
  InvalidInputError,
  type InvalidRefundReason,
  InvalidRefundTargetError,
  LedgerNotInstalledError,
  OperationTimeoutError,
  PreparedStatementsUnsupportedError,
  RefundExceedsDeductionError,
  ReservationRefundError,
  UnsafeTriggerPrivilegeError,
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
  type CreditHoldResult,
  type ExpireHoldsInput,
  type ExpireHoldsResult,
  expireCreditHolds,
  type HoldInput,
  holdCredits,
  type SettleInput,
  settleCreditHold,
  type VoidInput,
  voidCreditHold,
} from './holds.js';
export {
  type CreditChangeInput,
  type CreditChangeResult,
  deductCredits,
  grantCredits,
  type RefundInput,
  refundCredits,
} from './ledger.js';
export {
  type CreditReservation,
  type ReservationInput,
  type ReservationOptions,
  withCreditReservation,
} from './reservation.js';
export {
  DEFAULT_RETRY_POLICY,
  type RetryEvent,
  type RetryPolicy,
  setRetryPolicy,
} from './retry.js';
export { setOperationTimeout } from './timeout.js';
export {
  DEFAULT_HOLD_EXPIRY_MS,
  DEFAULT_PAGE_SIZE,
  MAX_AMOUNT,
  MAX_EXPIRE_BATCH,
  MAX_HOLD_EXPIRY_MS,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  MAX_METADATA_BYTES,
  MAX_METADATA_DEPTH,
  MAX_PAGE_SIZE,
  MIN_HOLD_EXPIRY_MS,
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
