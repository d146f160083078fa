/**
 * Every error this package throws on purpose extends `DatabaseError` and carries a
 * stable `code`, so callers can branch on `err.code` without matching messages.
 */
export abstract class DatabaseError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
