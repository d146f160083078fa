/**
 * What `pnpm db:lint` does not check, each with its reason. Add a migration here only when
 * it must break a rule, and say why in a way a reviewer can check.
 */

/** Migrations already in main that squawk's rules do not apply to (by journal tag). */
export const excludedMigrations: Record<string, string> = {
  '0000_init':
    'creates every table while it is empty: its plain indexes and validated foreign key lock nothing for long',
  '0001_credit_ledger_columns':
    'adds the ledger columns with their constraints and indexes in one transaction, before the ledger held production rows',
  '0002_credit_ledger_triggers':
    'installs the ledger triggers and functions; they must appear atomically with the columns they guard',
  '0003_credit_ledger_integrity':
    'rebuilds the ledger (seq, hash chain, NOT NULL columns) in one transaction with the triggers that fill them; a table rewrite is intended',
  '0004_credit_holds':
    'adds the hold columns, table and triggers atomically with the ledger functions that guard them; its one index on CreditTransaction is partial and built inside that transaction',
};

/** squawk rules turned off for every migration, and why they do not fit this project. */
export const excludedRules: Record<string, string> = {
  'require-lock-timeout':
    'db:migrate sets lock_timeout for every migration statement (--statement-lock-timeout)',
  'require-statement-timeout':
    'db:migrate sets statement_timeout for every migration statement (--statement-timeout)',
  'prefer-robust-stmts':
    'migrations run in one transaction, all or nothing, so a partly applied migration cannot exist; no-transaction ones are documented to be repeatable',
  'require-enum-value-ordering':
    'drizzle-kit writes ADD VALUE without BEFORE/AFTER when a value is appended in schema.ts, the intended order; db:check --against compares enum order',
  'prefer-bigint-over-int':
    'amounts and balances are int4 on purpose (1 to 2,147,483,647, checked by the ledger)',
};
