import { type MigrationFile, readMigrations, stripLeadingComments } from '../migrate/migrations.js';

/** A trigger as the migrations create it. `type` uses pg_trigger.tgtype's bits. */
export interface ExpectedTrigger {
  table: string;
  name: string;
  type: number;
  function: string;
  /** The schema of its function: `credit_ledger` since migration 0006. */
  functionSchema: string;
}

/** A function as the migrations define it: `body` is exactly what pg_proc.prosrc holds. */
export interface ExpectedFunction {
  schema: string;
  name: string;
  body: string;
  securityDefiner: boolean;
  /** `SET` clauses as pg_proc.proconfig spells them, e.g. `search_path=pg_catalog, pg_temp`. */
  config: string[];
  /** A trigger function: nobody but its owner may execute it. */
  returnsTrigger: boolean;
  /** pg_proc.prolang's name, provolatile ('v', 's', 'i') and proisstrict. */
  language: string;
  volatility: 'v' | 's' | 'i';
  strict: boolean;
}

/**
 * The constraints and unique indexes the ledger's correctness rests on, as pg_get_constraintdef
 * and pg_get_indexdef print them under `search_path = pg_catalog` (the schema test pins the
 * same definitions on a freshly migrated database). A rule weakened under the same name
 * (a CHECK dropped and re-added as `true`, a unique index rebuilt on other columns) differs.
 */
export const RELIED_ON_DEFINITIONS: Record<string, string> = {
  CreditTransaction_pkey: 'PRIMARY KEY (id)',
  CreditTransaction_user_id_User_id_fk:
    'FOREIGN KEY (user_id) REFERENCES public."User"(id) ON DELETE CASCADE',
  credit_tx_amount_positive: 'CHECK ((amount > 0))',
  credit_tx_balance_after_non_negative: 'CHECK ((balance_after >= 0))',
  credit_tx_refund_of_only_on_refunds:
    "CHECK (((refund_of IS NULL) OR (operation = 'refund'::public.operation_type)))",
  User_pkey: 'PRIMARY KEY (id)',
  user_free_credits_non_negative: 'CHECK ((free_credits >= 0))',
  user_free_chat_messages_non_negative: 'CHECK ((free_chat_messages >= 0))',
  credit_tx_user_seq_idx:
    'CREATE UNIQUE INDEX credit_tx_user_seq_idx ON public."CreditTransaction" USING btree (user_id, seq)',
  credit_tx_hold_close_idx:
    'CREATE UNIQUE INDEX credit_tx_hold_close_idx ON public."CreditTransaction" USING btree (hold_id) WHERE (hold_id IS NOT NULL)',
  CreditHold_pkey: 'PRIMARY KEY (id)',
  CreditHold_id_CreditTransaction_id_fk:
    'FOREIGN KEY (id) REFERENCES public."CreditTransaction"(id) ON DELETE CASCADE',
  CreditHold_user_id_User_id_fk:
    'FOREIGN KEY (user_id) REFERENCES public."User"(id) ON DELETE CASCADE',
  credit_tx_user_idempotency_key_idx:
    'CREATE UNIQUE INDEX credit_tx_user_idempotency_key_idx ON public."CreditTransaction" USING btree (user_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)',
  CreditPlanChange_pkey: 'PRIMARY KEY (id)',
  CreditPlanChange_user_id_User_id_fk:
    'FOREIGN KEY (user_id) REFERENCES public."User"(id) ON DELETE CASCADE',
  credit_plan_change_user_seq_idx:
    'CREATE UNIQUE INDEX credit_plan_change_user_seq_idx ON public."CreditPlanChange" USING btree (user_id, seq)',
  credit_plan_change_user_idempotency_key_idx:
    'CREATE UNIQUE INDEX credit_plan_change_user_idempotency_key_idx ON public."CreditPlanChange" USING btree (user_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)',
};

/** The types of the columns the ledger computes with, as format_type prints them. */
export const RELIED_ON_COLUMNS: Record<string, string> = {
  'User.id': 'uuid',
  'User.free_credits': 'integer',
  'User.free_chat_messages': 'integer',
  'User.ledger_seq': 'bigint',
  'User.ledger_hash': 'text',
  'CreditTransaction.id': 'uuid',
  'CreditTransaction.user_id': 'uuid',
  'CreditTransaction.amount': 'integer',
  'CreditTransaction.operation': 'public.operation_type',
  'CreditTransaction.feature_type': 'public.feature_type',
  'CreditTransaction.metadata': 'jsonb',
  'CreditTransaction.created_at': 'timestamp(3) with time zone',
  'CreditTransaction.balance_after': 'integer',
  'CreditTransaction.seq': 'bigint',
  'CreditTransaction.hash': 'text',
  'CreditTransaction.idempotency_key': 'text',
  'CreditTransaction.refund_of': 'uuid',
  'CreditTransaction.hold_id': 'uuid',
  'CreditTransaction.hold_expires_at': 'timestamp(3) with time zone',
  'CreditTransaction.covered_by_plan': 'text',
  'CreditTransaction.actor': 'text',
  'CreditTransaction.source': 'public.credit_source',
  'CreditTransaction.grant_expires_at': 'timestamp(3) with time zone',
  'CreditTransaction.allocations': 'jsonb',
  'CreditHold.id': 'uuid',
  'CreditHold.user_id': 'uuid',
  'CreditHold.amount': 'integer',
  'CreditHold.feature_type': 'public.feature_type',
  'CreditHold.expires_at': 'timestamp(3) with time zone',
  'CreditHold.created_at': 'timestamp(3) with time zone',
  'CreditHold.covered_by_plan': 'text',
  'CreditPlanChange.id': 'uuid',
  'CreditPlanChange.user_id': 'uuid',
  'CreditPlanChange.seq': 'bigint',
  'CreditPlanChange.from_plan': 'text',
  'CreditPlanChange.plan': 'text',
  'CreditPlanChange.until': 'timestamp(3) with time zone',
  'CreditPlanChange.reason': 'text',
  'CreditPlanChange.actor': 'text',
  'CreditPlanChange.idempotency_key': 'text',
  'CreditPlanChange.trail_seq': 'bigint',
  'CreditPlanChange.created_at': 'timestamp(3) with time zone',
  'CreditPlanChange.hash': 'text',
};

export interface LedgerDefinition {
  triggers: ExpectedTrigger[];
  functions: ExpectedFunction[];
}

// pg_trigger.tgtype bits (PostgreSQL's trigger.h).
const TYPE = {
  ROW: 1,
  BEFORE: 2,
  INSERT: 4,
  DELETE: 8,
  UPDATE: 16,
  TRUNCATE: 32,
  INSTEAD: 64,
} as const;

// A name as migrations spell it: optionally schema-qualified, optionally quoted. Captures the
// schema (when written) and the name.
const NAME = String.raw`(?:"?(\w+)"?\.)?"?(\w+)"?`;
const CREATE_FUNCTION = new RegExp(
  String.raw`^CREATE (?:OR REPLACE )?FUNCTION ${NAME}\([^)]*\)([\s\S]*?)AS \$(\w*)\$([\s\S]*?)\$\4\$([\s\S]*?);?$`,
);
const DROP_FUNCTION = new RegExp(`^DROP FUNCTION (?:IF EXISTS )?${NAME}`);
const CREATE_TRIGGER = new RegExp(
  String.raw`^CREATE (?:OR REPLACE )?TRIGGER ${NAME} (BEFORE|AFTER|INSTEAD OF) ([\w ,]+?) ON ${NAME}\s+FOR EACH (ROW|STATEMENT) EXECUTE (?:FUNCTION|PROCEDURE) ${NAME}\(\);?$`,
);
const DROP_TRIGGER = new RegExp(`^DROP TRIGGER (?:IF EXISTS )?${NAME} ON ${NAME}`);
// Statements that define or change a function or trigger: each must be one the patterns above
// read, or the definition verify compares with would silently be wrong.
const DEFINES =
  /^(?:CREATE|DROP|ALTER)\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?(?:FUNCTION|TRIGGER|PROCEDURE)\b/i;

/** The statement without its leading and trailing comment lines and blank space. */
function statementText(statement: string): string {
  const lines = stripLeadingComments(statement).split('\n');
  while (lines.length > 0 && /^\s*(--.*)?$/.test(lines[lines.length - 1] ?? '')) lines.pop();
  return lines.join('\n').trim();
}

function triggerType(timing: string, events: string, level: string): number {
  let type = level === 'ROW' ? TYPE.ROW : 0;
  if (timing === 'BEFORE') type |= TYPE.BEFORE;
  if (timing === 'INSTEAD OF') type |= TYPE.INSTEAD;
  for (const event of events.split(/\s+OR\s+/)) {
    // `UPDATE OF a, b`: the event is its first word (the column list is tgattr's).
    const name = event.trim().split(/\s+/)[0] ?? '';
    const bit = TYPE[name as 'INSERT' | 'DELETE' | 'UPDATE' | 'TRUNCATE'];
    if (bit === undefined) throw new Error(`Unknown trigger event "${event}"`);
    type |= bit;
  }
  return type;
}

/**
 * The ledger's triggers and functions as the migrations leave them, read from the SQL files
 * themselves (later migrations replacing or dropping earlier definitions), so that
 * `credits:verify` compares a database with what its migrations define, not with a copy
 * kept in code that could drift from them. A statement that defines a function or trigger in
 * a form this cannot read is an error naming it, never skipped. `upTo` stops after that
 * migration (the last one a database has applied). Takes the folder, or its migrations
 * already read.
 */
export function readLedgerDefinition(
  migrations: string | MigrationFile[],
  upTo?: string,
): LedgerDefinition {
  const triggers = new Map<string, ExpectedTrigger>();
  const functions = new Map<string, ExpectedFunction>();
  const files = typeof migrations === 'string' ? readMigrations(migrations) : migrations;
  for (const migration of files) {
    for (const statement of migration.statements) {
      const text = statementText(statement);
      let m = CREATE_FUNCTION.exec(text);
      if (m) {
        const [, schema = 'public', name = '', before = '', , body = '', after = ''] = m;
        const attributes = `${before}\n${after}`;
        const config = [...attributes.matchAll(/SET (\w+) = ([^\n]+?)\s*(?=\n|$)/g)].map(
          ([, key, value = '']) => `${key}=${value.replace(/^'(.*)'$/, '$1')}`,
        );
        functions.set(`${schema}.${name}`, {
          schema,
          name,
          body,
          securityDefiner: /\bSECURITY DEFINER\b/.test(attributes),
          config,
          returnsTrigger: /\bRETURNS trigger\b/.test(attributes),
          language: /\bLANGUAGE (\w+)/.exec(attributes)?.[1]?.toLowerCase() ?? '',
          volatility: /\bIMMUTABLE\b/.test(attributes)
            ? 'i'
            : /\bSTABLE\b/.test(attributes)
              ? 's'
              : 'v',
          strict: /\bSTRICT\b|\bRETURNS NULL ON NULL INPUT\b/.test(attributes),
        });
        continue;
      }
      m = DROP_FUNCTION.exec(text);
      if (m) {
        functions.delete(`${m[1] ?? 'public'}.${m[2] ?? ''}`);
        continue;
      }
      m = CREATE_TRIGGER.exec(text);
      if (m) {
        const [
          ,
          ,
          name = '',
          timing = '',
          events = '',
          ,
          table = '',
          level = '',
          fnSchema,
          fn = '',
        ] = m;
        triggers.set(`${table}.${name}`, {
          table,
          name,
          type: triggerType(timing, events, level),
          function: fn,
          functionSchema: fnSchema ?? 'public',
        });
        continue;
      }
      m = DROP_TRIGGER.exec(text);
      if (m) {
        triggers.delete(`${m[4]}.${m[2]}`);
        continue;
      }
      if (DEFINES.test(text))
        throw new Error(
          `credits:verify cannot read this statement of migration ${migration.name}, which defines a function or trigger: ` +
            `"${text.slice(0, 120)}". Write it in the form the ledger's sources use (CREATE OR REPLACE FUNCTION … AS $$…$$, ` +
            'CREATE TRIGGER … EXECUTE FUNCTION f()), or teach src/credits/ledger-definition.ts to read it.',
        );
    }
    if (migration.name === upTo) break;
  }
  return { triggers: [...triggers.values()], functions: [...functions.values()] };
}
