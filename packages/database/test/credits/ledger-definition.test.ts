import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readLedgerDefinition } from '../../src/credits/ledger-definition.js';
import { MigrationsFolder } from '../migrations-folder.js';

// credits:verify reads what the ledger should be from the migration files. A form of SQL it
// did not read used to be skipped in silence ($fn$ quoting, LANGUAGE after the body, a WHEN
// clause), so verify compared the database with a stale definition. It now reads those
// forms, and fails, naming the statement, on what it cannot read.

let folder: MigrationsFolder;
beforeEach(() => {
  folder = new MigrationsFolder();
});
afterEach(() => folder.remove());

const body = (defs: ReturnType<typeof readLedgerDefinition>, name: string) =>
  defs.functions.find((f) => f.schema === 'credit_ledger' && f.name === name);

describe('readLedgerDefinition', () => {
  it('reads the functions and triggers the migrations leave, in credit_ledger', () => {
    const defs = readLedgerDefinition(folder.dir);
    expect(body(defs, 'credit_tx_prepare')?.securityDefiner).toBe(true);
    expect(body(defs, 'credit_tx_prepare')?.config).toContain('lock_timeout=5s');
    expect(defs.functions.some((f) => f.schema === 'public')).toBe(false);
    expect(defs.triggers).toContainEqual(
      expect.objectContaining({
        table: 'CreditTransaction',
        name: 'credit_tx_prepare',
        functionSchema: 'credit_ledger',
      }),
    );
  });

  it('reads a body quoted with $fn$ and attributes written after it', () => {
    folder.add('quoted', [
      `CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_installed"(installed bigint, expected bigint) RETURNS boolean
AS $fn$ BEGIN RETURN true; END; $fn$ LANGUAGE plpgsql STABLE;`,
    ]);
    const fn = body(readLedgerDefinition(folder.dir), 'credit_rule_installed');
    expect(fn).toMatchObject({
      body: ' BEGIN RETURN true; END; ',
      language: 'plpgsql',
      volatility: 's',
    });
  });

  it('stops at the migration a database has applied last, when told', () => {
    folder.add('later', [
      `CREATE OR REPLACE FUNCTION "credit_ledger"."credit_rule_installed"(installed bigint, expected bigint) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN RETURN false; END; $$;`,
    ]);
    const all = readLedgerDefinition(folder.dir);
    const upTo = readLedgerDefinition(folder.dir, '0008_bounded_hold_expiry');
    expect(body(all, 'credit_rule_installed')?.body).toBe(' BEGIN RETURN false; END; ');
    expect(body(upTo, 'credit_rule_installed')?.body).not.toBe(' BEGIN RETURN false; END; ');
  });

  it('fails, naming the migration and the statement, on a trigger with a WHEN clause', () => {
    const tag = folder.add('when_trigger', [
      `CREATE TRIGGER "credit_tx_apply" AFTER INSERT ON "public"."CreditTransaction"
  FOR EACH ROW WHEN (NEW.amount > 0) EXECUTE FUNCTION "credit_ledger"."credit_tx_apply"();`,
    ]);
    expect(() => readLedgerDefinition(folder.dir)).toThrow(
      new RegExp(
        `credits:verify cannot read this statement of migration ${tag}, which defines a function or trigger: "CREATE TRIGGER "credit_tx_apply"`,
      ),
    );
  });

  it('fails on ALTER FUNCTION, which it cannot follow', () => {
    folder.add('alter_function', [
      'ALTER FUNCTION "credit_ledger"."credit_tx_apply"() SET lock_timeout = 0;',
    ]);
    expect(() => readLedgerDefinition(folder.dir)).toThrow(/cannot read this statement/);
  });
});
