import { createHash } from 'node:crypto';
import { InvalidCursorError } from './errors.js';

/** A position in a (created_at DESC, id DESC) listing: the last row of a page. */
export interface Position {
  createdAt: Date;
  id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const digest = (text: string, length: number) =>
  createHash('sha256').update(text).digest('base64url').slice(0, length);

/**
 * Cursors are opaque: base64url JSON of the position and a tag of the query it belongs
 * to, plus a checksum. A cursor from another query (another user, other filters) or one
 * altered in any byte is refused. The checksum detects corruption and casual edits; it is
 * not a signature, and needs none: a forged position only reads rows the query allows.
 */
export function encodeCursor(position: Position, scope: string): string {
  const body = Buffer.from(
    JSON.stringify([position.createdAt.getTime(), position.id, digest(scope, 8)]),
  ).toString('base64url');
  return `${body}.${digest(body, 12)}`;
}

export function decodeCursor(cursor: string, scope: string): Position {
  const [body, checksum, ...rest] = cursor.split('.');
  if (!body || !checksum || rest.length > 0)
    throw new InvalidCursorError('is not a cursor of this API');
  if (digest(body, 12) !== checksum)
    throw new InvalidCursorError('was altered (checksum mismatch)');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw new InvalidCursorError('is not a cursor of this API');
  }
  if (!Array.isArray(parsed) || parsed.length !== 3)
    throw new InvalidCursorError('is not a cursor of this API');
  const [time, id, tag] = parsed as [unknown, unknown, unknown];
  if (
    !Number.isSafeInteger(time) ||
    // ±8.64e15 ms is the range of a JS Date; beyond it `new Date` is invalid.
    Math.abs(time as number) > 8.64e15 ||
    typeof id !== 'string' ||
    !UUID.test(id) ||
    typeof tag !== 'string'
  ) {
    throw new InvalidCursorError('is not a cursor of this API');
  }
  if (tag !== digest(scope, 8)) {
    throw new InvalidCursorError('belongs to another query (other user, filters or range)');
  }
  return { createdAt: new Date(time as number), id };
}
