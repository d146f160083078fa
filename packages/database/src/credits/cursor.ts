import { createHash } from 'node:crypto';
import { InvalidCursorError } from './errors.js';

/** A position in a user's history (seq DESC): the seq of the last row of a page. */
export interface SeqPosition {
  seq: number;
}

/** A position in a (created_at DESC, id DESC) listing: the last row of a page. */
export interface TimePosition {
  createdAt: Date;
  id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Years 1–9999, the range the API's own dates are validated to. PostgreSQL parses a wider
// range, but not every millisecond a Date holds (22008), so a forged cursor must stop here.
const MIN_TIME = Date.parse('0001-01-01T00:00:00.000Z');
const MAX_TIME = Date.parse('9999-12-31T23:59:59.999Z');

const digest = (text: string, length: number) =>
  createHash('sha256').update(text).digest('base64url').slice(0, length);

/**
 * Cursors are opaque: base64url JSON of the position and a tag of the query it belongs
 * to, plus a checksum. A cursor from another query (another user, other filters) or one
 * altered in any byte is refused. The checksum detects corruption and casual edits; it is
 * not a signature, and needs none: a forged position only reads rows the query allows, and
 * every value is range-checked here before it reaches the database.
 */
function encode(values: readonly (string | number)[], scope: string): string {
  const body = Buffer.from(JSON.stringify([...values, digest(scope, 8)])).toString('base64url');
  return `${body}.${digest(body, 12)}`;
}

function decode(cursor: string, scope: string, length: number): unknown[] {
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
  if (!Array.isArray(parsed) || parsed.length !== length + 1)
    throw new InvalidCursorError('is not a cursor of this API');
  if (parsed[length] !== digest(scope, 8)) {
    throw new InvalidCursorError('belongs to another query (other user, filters or range)');
  }
  return parsed.slice(0, length);
}

export const encodeSeqCursor = (position: SeqPosition, scope: string) =>
  encode([position.seq], scope);

export function decodeSeqCursor(cursor: string, scope: string): SeqPosition {
  const [seq] = decode(cursor, scope, 1);
  if (!Number.isSafeInteger(seq) || (seq as number) < 1)
    throw new InvalidCursorError('is not a cursor of this API');
  return { seq: seq as number };
}

export const encodeTimeCursor = (position: TimePosition, scope: string) =>
  encode([position.createdAt.getTime(), position.id], scope);

export function decodeTimeCursor(cursor: string, scope: string): TimePosition {
  const [time, id] = decode(cursor, scope, 2);
  if (
    !Number.isSafeInteger(time) ||
    (time as number) < MIN_TIME ||
    (time as number) > MAX_TIME ||
    typeof id !== 'string' ||
    !UUID.test(id)
  ) {
    throw new InvalidCursorError('is not a cursor of this API');
  }
  return { createdAt: new Date(time as number), id };
}
