import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { Database } from '../../src/client.js';
import { sqlStateOf } from '../../src/credits/errors.js';
import {
  type CreditsError,
  InvalidCursorError,
  InvalidInputError,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

describe('sqlStateOf', () => {
  it("reads the server's SQLSTATE, also through drizzle's wrapping error", async () => {
    const error = await db.execute(sql`select 1/0`).catch((e: unknown) => e);
    expect(sqlStateOf(error)).toBe('22012');
  });

  it("does not take a Node error's code for a SQLSTATE, even one of the same shape", () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'EPERM', 'ERR_INVALID_ARG_TYPE']) {
      const nodeError = Object.assign(new Error(`write ${code}`), { code, syscall: 'write' });
      expect(sqlStateOf(nodeError)).toBeUndefined();
      expect(sqlStateOf(new Error('query failed', { cause: nodeError }))).toBeUndefined();
    }
  });
});

describe('error codes', () => {
  it('are literal types, so a switch on err.code is checked', () => {
    expectTypeOf<InvalidInputError['code']>().toEqualTypeOf<'INVALID_INPUT' | 'INVALID_CURSOR'>();
    expectTypeOf<InvalidCursorError['code']>().toEqualTypeOf<'INVALID_CURSOR'>();
    const cursor: CreditsError = new InvalidCursorError('altered');
    expect(cursor).toBeInstanceOf(InvalidInputError);
    expect(cursor).toMatchObject({ code: 'INVALID_CURSOR', field: 'cursor' });
    expect(new InvalidInputError('amount', 'must be an integer').code).toBe('INVALID_INPUT');
  });
});
