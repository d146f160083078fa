import { z } from 'zod';
import { featureTypeValues, operationTypeValues } from '../schema.js';
import { InvalidInputError } from './errors.js';

/** Largest value of a PostgreSQL `integer` (int4), the type of amounts and balances. */
export const MAX_AMOUNT = 2_147_483_647;
/** Metadata is for context (model, tokens, request id), not payloads: 8 KiB as JSON. */
export const MAX_METADATA_BYTES = 8 * 1024;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;
/** How deep metadata may nest (objects and arrays); deeper, or cyclic, is refused. */
export const MAX_METADATA_DEPTH = 32;

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

// PostgreSQL text cannot hold NUL, and a lone UTF-16 surrogate reaches it as U+FFFD, so two
// different keys could become one. Such strings are refused here rather than by the driver.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const text = () =>
  z
    .string('must be a string')
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters')
    .refine((s) => !LONE_SURROGATE.test(s), 'must be well-formed Unicode (no lone surrogates)');

const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

// Only what survives a JSON round-trip unchanged: no undefined, NaN, Infinity, Date, Map…
const json: z.ZodType<Json> = z.lazy(() =>
  z.union([
    text(),
    z.number().refine(Number.isFinite, 'must be a finite number'),
    z.boolean(),
    z.null(),
    z.array(json),
    z
      .custom<Record<string, unknown>>(isPlainObject, 'must be a plain object')
      .pipe(z.record(text(), json)),
  ]),
);

/**
 * Refuses what would make the recursive schema below overflow the stack (a cycle) or walk
 * too deep, with a message instead of a RangeError. Walks own enumerable keys, as
 * JSON.stringify does.
 */
function shapeProblem(value: unknown): string | undefined {
  const ancestors = new Set<object>();
  const walk = (node: unknown, depth: number): string | undefined => {
    if (typeof node !== 'object' || node === null) return undefined;
    if (ancestors.has(node)) return 'must not contain a cycle';
    if (depth > MAX_METADATA_DEPTH) return `must nest at most ${MAX_METADATA_DEPTH} levels deep`;
    ancestors.add(node);
    for (const child of Object.values(node)) {
      const problem = walk(child, depth + 1);
      if (problem) return problem;
    }
    ancestors.delete(node);
    return undefined;
  };
  return walk(value, 1);
}

// The parsed value is only checked, never stored: zod rebuilds records by assignment, which
// drops a "__proto__" key (it sets the prototype instead). The caller's own object is what
// gets written, so such a key is kept.
const metadata = z
  .custom<Record<string, unknown>>(isPlainObject, 'must be a plain JSON object')
  .superRefine((value, ctx) => {
    let problem: string | undefined;
    try {
      problem =
        shapeProblem(value) ??
        (Buffer.byteLength(JSON.stringify(value)) > MAX_METADATA_BYTES
          ? `must be at most ${MAX_METADATA_BYTES} bytes as JSON`
          : undefined);
    } catch {
      // A getter or toJSON that throws, a BigInt: nothing a JSON column can hold.
      problem = 'must be plain JSON';
    }
    if (problem) ctx.addIssue({ code: 'custom', message: problem, fatal: true });
  })
  .pipe(z.record(text(), json));

// Every spelling PostgreSQL's uuid input accepts (upper case, braces, no hyphens, a hyphen
// after any group of four digits), normalised to the canonical lower-case form, so that a
// UUID the database takes is never refused here and two spellings are one user.
const UUID_INPUT = /^(\{)?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}(\})?$/;
const uuid = z
  .string('must be a UUID')
  .refine((s) => {
    const m = UUID_INPUT.exec(s);
    return m !== null && Boolean(m[1]) === Boolean(m[2]);
  }, 'must be a UUID')
  .transform((s) => {
    const hex = s.replace(/[{}-]/g, '').toLowerCase();
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  });
const amount = z
  .number('must be a number')
  .int('must be an integer')
  .positive('must be greater than 0')
  .max(MAX_AMOUNT, `must be at most ${MAX_AMOUNT}`);
const featureType = z.enum(featureTypeValues, `must be one of ${featureTypeValues.join(', ')}`);
const idempotencyKey = text()
  .min(1, 'must not be empty')
  .max(MAX_IDEMPOTENCY_KEY_LENGTH, `must be at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
const limit = z
  .number('must be a number')
  .int('must be an integer')
  .min(1, 'must be at least 1')
  .max(MAX_PAGE_SIZE, `must be at most ${MAX_PAGE_SIZE}`)
  .default(DEFAULT_PAGE_SIZE);
const cursor = z.string('must be a string').min(1, 'must not be empty');
// Years 1–9999: what an ISO timestamp (and so the query parameter) can spell.
const date = z
  .date('must be a Date')
  .refine((d) => !Number.isNaN(d.getTime()), 'must be a valid Date')
  .refine(
    (d) => d.getUTCFullYear() >= 1 && d.getUTCFullYear() <= 9999,
    'must be in the years 1–9999',
  );

/** Who made a change (support's e-mail, an admin tool, a webhook): at most 200 characters. */
export const MAX_ACTOR_LENGTH = 200;
const actor = text()
  .min(1, 'must not be empty')
  .max(MAX_ACTOR_LENGTH, `must be at most ${MAX_ACTOR_LENGTH} characters`);

const change = {
  userId: uuid,
  amount,
  featureType,
  metadata: metadata.optional(),
  idempotencyKey: idempotencyKey.optional(),
  actor: actor.optional(),
};

export const deductInput = z.strictObject(change);
/**
 * The sources a caller may name; `opening`, `allowance`, `refund` and `carried_over` are the
 * ledger's (an allowance comes from the user's plan, once a period).
 */
export const grantSourceValues = ['purchase', 'promotional', 'support'] as const;
export const grantInput = z.strictObject({
  ...change,
  // Needed only for chat messages: a grant of credits is for no feature.
  featureType: featureType.default('none'),
  source: z.enum(grantSourceValues, `must be one of ${grantSourceValues.join(', ')}`).optional(),
  expiresAt: date.optional(),
});
export const refundInput = z.strictObject({ ...change, refundOf: uuid.optional() });
// No idempotency key: a replayed reservation would run the work again without charging
// for it (or after its refund). A retried request makes a new reservation.
export const reservationInput = z.strictObject({
  userId: uuid,
  amount,
  featureType,
  metadata: metadata.optional(),
});
/** A hold expires after this long unless `expiresInMs` says otherwise: 10 minutes. */
export const DEFAULT_HOLD_EXPIRY_MS = 10 * 60 * 1000;
/** Bounds of `expiresInMs`: a second (shorter would expire under a slow network) to a day. */
export const MIN_HOLD_EXPIRY_MS = 1000;
export const MAX_HOLD_EXPIRY_MS = 24 * 60 * 60 * 1000;
/** How many due holds one `expireCreditHolds` call expires at most. */
export const MAX_EXPIRE_BATCH = 100_000;

const expiresInMs = z
  .number('must be a number')
  .int('must be an integer')
  .min(MIN_HOLD_EXPIRY_MS, `must be at least ${MIN_HOLD_EXPIRY_MS} (1 second)`)
  .max(MAX_HOLD_EXPIRY_MS, `must be at most ${MAX_HOLD_EXPIRY_MS} (24 hours)`);

export const holdInput = z.strictObject({
  ...change,
  expiresInMs: expiresInMs.default(DEFAULT_HOLD_EXPIRY_MS),
});
export const settleInput = z.strictObject({
  holdId: uuid,
  /** When given, the hold must be this user's (a request may only settle its own user's). */
  userId: uuid.optional(),
  amount: amount.optional(),
  metadata: metadata.optional(),
  actor: actor.optional(),
});
export const voidInput = z.strictObject({
  holdId: uuid,
  userId: uuid.optional(),
  reason: text().min(1, 'must not be empty').max(200, 'must be at most 200 characters').optional(),
  metadata: metadata.optional(),
  actor: actor.optional(),
});
export const expireInput = z.strictObject({
  limit: z
    .number('must be a number')
    .int('must be an integer')
    .min(1, 'must be at least 1')
    .max(MAX_EXPIRE_BATCH, `must be at most ${MAX_EXPIRE_BATCH}`)
    .default(1000),
  userId: uuid.optional(),
});
export const reservationOptions = z.strictObject({
  expiresInMs: expiresInMs.default(DEFAULT_HOLD_EXPIRY_MS),
});
export const usedAmount = z
  .number('must be a number')
  .int('must be an integer')
  .min(0, 'must be at least 0')
  .max(MAX_AMOUNT, `must be at most ${MAX_AMOUNT}`);
export const historyInput = z.strictObject({
  userId: uuid,
  limit,
  cursor: cursor.optional(),
  operation: z
    .enum(operationTypeValues, `must be one of ${operationTypeValues.join(', ')}`)
    .optional(),
  featureType: featureType.optional(),
});
export const rangeInput = z
  .strictObject({ from: date, to: date, limit, cursor: cursor.optional() })
  .refine((r) => r.from.getTime() <= r.to.getTime(), {
    message: 'must not be after to',
    path: ['from'],
  });
export const userIdInput = uuid;
export const usageInput = z
  .strictObject({
    from: date,
    to: date,
    userId: uuid.optional(),
    featureType: featureType.optional(),
  })
  .refine((r) => r.from.getTime() <= r.to.getTime(), {
    message: 'must not be after to',
    path: ['from'],
  });

/** A plan's name as credit_ledger.credit_plan's CHECK spells it. */
const planName = z
  .string('must be a string')
  .regex(
    /^[a-z][a-z0-9_]{0,39}$/,
    'must be a plan name: a-z first, then a-z, 0-9 or _, at most 40',
  );
export const setPlanInput = z.strictObject({
  userId: uuid,
  plan: planName,
  until: date.optional(),
  reason: text().min(1, 'must not be empty').max(500, 'must be at most 500 characters').optional(),
  actor: actor.optional(),
  idempotencyKey: idempotencyKey.optional(),
});

/** Parses with a schema or throws InvalidInputError naming the first offending field. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, root = 'input'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.join('.') : root;
  const reason =
    issue?.code === 'unrecognized_keys'
      ? `unknown field(s) ${issue.keys.join(', ')}`
      : (issue?.message ?? 'is invalid');
  throw new InvalidInputError(issue?.code === 'unrecognized_keys' ? root : field, reason);
}

/**
 * parse() for a credit change: the validated metadata is the caller's own object rather than
 * zod's copy, which rebuilds records by assignment and so drops a "__proto__" key.
 */
export function parseChange<S extends z.ZodType>(
  schema: S,
  input: { metadata?: unknown },
): z.output<S> {
  const parsed = parse(schema, input) as z.output<S> & { metadata?: unknown };
  return parsed.metadata === undefined ? parsed : { ...parsed, metadata: input.metadata };
}
