import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import { BALANCE_EFFECT, balanceDeltaSql } from '../../src/credits/operations.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { operationTypeValues } from '../../src/schema.js';
import { useMigratedDatabase } from '../support.js';

// Each operation's effect on its balance is declared once in the ledger
// (credit_ledger.credit_balance_effect) and once, on purpose, in credits:verify
// (src/credits/operations.ts), so that a replaced ledger function cannot change what the
// check expects. The two must agree on every operation the enum has.

const handle = useMigratedDatabase();
let db: Database;
beforeAll(() => {
  db = handle().db;
});

describe('the balance effect of each operation', () => {
  it('is stated in operations.ts for every value of operation_type', () => {
    expect(Object.keys(BALANCE_EFFECT).sort()).toEqual([...operationTypeValues].sort());
  });

  it.each(operationTypeValues)(
    '%s: the ledger and credits:verify agree, for amounts below, at and within what is held',
    async (operation) => {
      for (const [amount, held] of [
        [3, 8],
        [8, 8],
        [1, 2_147_483_647],
      ] as const) {
        const [row] = rowsOf(
          await db.execute(sql`
          select credit_ledger.credit_balance_effect(x.op, ${amount}::int4, ${held}::int4) as ledger,
                 ${balanceDeltaSql('x.op', `${amount}`, `${held}`, 'null')} as verify
            from (select ${operation}::public.operation_type as op) x`),
        );
        expect(row?.ledger).not.toBeNull();
        expect(String(row?.ledger)).toBe(String(row?.verify));
      }
    },
  );

  it('credits:verify counts a row an unlimited plan covered as moving no balance', async () => {
    const [row] = rowsOf(
      await db.execute(sql`
        select ${balanceDeltaSql('x.op', '5', '8', "'paid'")} as verify
          from (select 'deduct'::public.operation_type as op) x`),
    );
    expect(String(row?.verify)).toBe('0');
  });

  it('every operation the enum has is known to the ledger: none has a NULL effect', async () => {
    const rows = rowsOf(
      await db.execute(sql`
        select e.enumlabel as operation from pg_enum e
         where e.enumtypid = 'public.operation_type'::regtype
           and credit_ledger.credit_balance_effect(e.enumlabel::public.operation_type, 1, 1) is null`),
    );
    expect(rows).toEqual([]);
  });
});
