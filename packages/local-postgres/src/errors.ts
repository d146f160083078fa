/**
 * What went wrong starting a local PostgreSQL, with a stable `code` to branch on. The
 * message is one line that says why and what to do.
 */
export class LocalPostgresError extends Error {
  constructor(
    readonly code: 'POSTGRES_UNREACHABLE' | 'POSTGRES_UNSAFE_DIR' | 'POSTGRES_START_FAILED',
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'LocalPostgresError';
  }
}
