import { eq, sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/client.js';
import { creditTransaction, user } from '../src/schema.js';
import { useMigratedDatabase } from './support.js';

// Raw catalog queries with array columns: let postgres.js parse them (see fetchTypes).
const database = useMigratedDatabase({ fetchTypes: true });
let db: Database;

beforeAll(async () => {
  db = database().db;
});

async function rows<T>(query: ReturnType<typeof sql>): Promise<T[]> {
  return (await db.execute(query)) as unknown as T[];
}

describe('a database migrated by db:migrate', () => {
  // What the ledger needs, not what the app may add: this package is the app's database
  // package, so its schema may grow its own columns, tables and feature types (README, "Your
  // app's own columns and tables"), and these tests must not pin it to the seed's.
  it("has the operations the ledger knows, exactly, and the seed's feature types first, in order", async () => {
    const enums = await rows<{ name: string; values: string[] }>(sql`
      select t.typname as name, array_agg(e.enumlabel order by e.enumsortorder) as values
      from pg_type t join pg_enum e on e.enumtypid = t.oid
      join pg_namespace n on n.oid = t.typnamespace where n.nspname = 'public'
      group by t.typname order by t.typname`);
    const values = (name: string) => enums.find((e) => e.name === name)?.values;
    // Every operation's meaning is the ledger's (credit_balance_effect): no other may exist.
    expect(values('operation_type')).toEqual([
      'deduct',
      'refund',
      'grant',
      'hold',
      'settle',
      'void',
      'expire',
      'expire_grant',
    ]);
    // Feature types are the app's; chat_message is the one the ledger treats apart.
    expect(values('feature_type')?.slice(0, 4)).toEqual([
      'document_generation',
      'workstream_clustering',
      'chat_tool_call',
      'chat_message',
    ]);
  });

  it('has the User, CreditTransaction, CreditHold and CreditPlanChange tables (and whatever tables the app adds)', async () => {
    const tables = await rows<{ relname: string }>(sql`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p') order by c.relname`);
    expect(tables.map((t) => t.relname)).toEqual(
      expect.arrayContaining(['CreditHold', 'CreditPlanChange', 'CreditTransaction', 'User']),
    );
  });

  const columnsOf = (table: string) =>
    rows<{ name: string; type: string; not_null: boolean; default: string | null }>(sql`
      select a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
        a.attnotnull as not_null, pg_get_expr(d.adbin, d.adrelid) as default
      from pg_attribute a
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
      where a.attrelid = ${`"${table}"`}::regclass and a.attnum > 0 and not a.attisdropped
      order by a.attnum`);

  it('gives User the columns the ledger relies on, with types, nullability and defaults (the app may add its own)', async () => {
    expect(await columnsOf('User')).toEqual(
      expect.arrayContaining([
        { name: 'id', type: 'uuid', not_null: true, default: 'gen_random_uuid()' },
        { name: 'email', type: 'text', not_null: true, default: null },
        { name: 'free_credits', type: 'integer', not_null: true, default: '10' },
        { name: 'free_chat_messages', type: 'integer', not_null: true, default: '20' },
        {
          name: 'updated_at',
          type: 'timestamp(3) with time zone',
          not_null: true,
          default: 'now()',
        },
        { name: 'ledger_seq', type: 'bigint', not_null: true, default: '0' },
        { name: 'ledger_hash', type: 'text', not_null: false, default: null },
      ]),
    );
  });

  it('gives CreditTransaction its columns with types, nullability and defaults', async () => {
    expect(await columnsOf('CreditTransaction')).toEqual([
      { name: 'id', type: 'uuid', not_null: true, default: 'gen_random_uuid()' },
      { name: 'user_id', type: 'uuid', not_null: true, default: null },
      { name: 'amount', type: 'integer', not_null: true, default: null },
      { name: 'operation', type: 'operation_type', not_null: true, default: null },
      { name: 'feature_type', type: 'feature_type', not_null: true, default: null },
      { name: 'metadata', type: 'jsonb', not_null: false, default: null },
      { name: 'created_at', type: 'timestamp(3) with time zone', not_null: true, default: 'now()' },
      { name: 'balance_after', type: 'integer', not_null: true, default: null },
      { name: 'idempotency_key', type: 'text', not_null: false, default: null },
      { name: 'refund_of', type: 'uuid', not_null: false, default: null },
      { name: 'seq', type: 'bigint', not_null: true, default: null },
      { name: 'hash', type: 'text', not_null: true, default: null },
      { name: 'hold_id', type: 'uuid', not_null: false, default: null },
      {
        name: 'hold_expires_at',
        type: 'timestamp(3) with time zone',
        not_null: false,
        default: null,
      },
      { name: 'covered_by_plan', type: 'text', not_null: false, default: null },
      { name: 'actor', type: 'text', not_null: false, default: null },
      { name: 'source', type: 'credit_source', not_null: false, default: null },
      {
        name: 'grant_expires_at',
        type: 'timestamp(3) with time zone',
        not_null: false,
        default: null,
      },
      { name: 'allocations', type: 'jsonb', not_null: false, default: null },
    ]);
  });

  it('gives CreditPlanChange its columns: what the caller chooses, and what the trigger sets', async () => {
    expect(await columnsOf('CreditPlanChange')).toEqual([
      { name: 'id', type: 'uuid', not_null: true, default: 'gen_random_uuid()' },
      { name: 'user_id', type: 'uuid', not_null: true, default: null },
      { name: 'seq', type: 'bigint', not_null: true, default: null },
      { name: 'from_plan', type: 'text', not_null: true, default: null },
      { name: 'plan', type: 'text', not_null: true, default: null },
      { name: 'until', type: 'timestamp(3) with time zone', not_null: false, default: null },
      { name: 'reason', type: 'text', not_null: false, default: null },
      { name: 'actor', type: 'text', not_null: false, default: null },
      { name: 'idempotency_key', type: 'text', not_null: false, default: null },
      { name: 'trail_seq', type: 'bigint', not_null: true, default: null },
      { name: 'created_at', type: 'timestamp(3) with time zone', not_null: true, default: 'now()' },
      { name: 'hash', type: 'text', not_null: true, default: null },
    ]);
  });

  it('gives CreditHold its columns, with no defaults (the trigger writes them)', async () => {
    expect(await columnsOf('CreditHold')).toEqual([
      { name: 'id', type: 'uuid', not_null: true, default: null },
      { name: 'user_id', type: 'uuid', not_null: true, default: null },
      { name: 'amount', type: 'integer', not_null: true, default: null },
      { name: 'feature_type', type: 'feature_type', not_null: true, default: null },
      { name: 'expires_at', type: 'timestamp(3) with time zone', not_null: true, default: null },
      { name: 'created_at', type: 'timestamp(3) with time zone', not_null: true, default: null },
      { name: 'covered_by_plan', type: 'text', not_null: false, default: null },
    ]);
  });

  it('has the primary keys, the unique email, the CHECKs and the cascading foreign key', async () => {
    const constraints = await rows<{ table: string; name: string; definition: string }>(sql`
      select conrelid::regclass::text as table, conname as name,
        pg_get_constraintdef(oid) as definition
      from pg_constraint where connamespace = 'public'::regnamespace
      order by 1, 2`);
    expect(constraints).toEqual([
      {
        table: '"CreditHold"',
        name: 'CreditHold_id_CreditTransaction_id_fk',
        definition: 'FOREIGN KEY (id) REFERENCES "CreditTransaction"(id) ON DELETE CASCADE',
      },
      { table: '"CreditHold"', name: 'CreditHold_pkey', definition: 'PRIMARY KEY (id)' },
      {
        table: '"CreditHold"',
        name: 'CreditHold_user_id_User_id_fk',
        definition: 'FOREIGN KEY (user_id) REFERENCES "User"(id) ON DELETE CASCADE',
      },
      {
        table: '"CreditPlanChange"',
        name: 'CreditPlanChange_pkey',
        definition: 'PRIMARY KEY (id)',
      },
      {
        table: '"CreditPlanChange"',
        name: 'CreditPlanChange_user_id_User_id_fk',
        definition: 'FOREIGN KEY (user_id) REFERENCES "User"(id) ON DELETE CASCADE',
      },
      {
        table: '"CreditPlanChange"',
        name: 'credit_plan_change_until_after_change',
        definition: 'CHECK (((until IS NULL) OR (until > created_at)))',
      },
      {
        table: '"CreditTransaction"',
        name: 'CreditTransaction_pkey',
        definition: 'PRIMARY KEY (id)',
      },
      {
        table: '"CreditTransaction"',
        name: 'CreditTransaction_refund_of_CreditTransaction_id_fk',
        definition: 'FOREIGN KEY (refund_of) REFERENCES "CreditTransaction"(id)',
      },
      {
        table: '"CreditTransaction"',
        name: 'CreditTransaction_user_id_User_id_fk',
        definition: 'FOREIGN KEY (user_id) REFERENCES "User"(id) ON DELETE CASCADE',
      },
      {
        table: '"CreditTransaction"',
        name: 'credit_tx_amount_positive',
        definition: 'CHECK ((amount > 0))',
      },
      {
        table: '"CreditTransaction"',
        name: 'credit_tx_balance_after_non_negative',
        definition: 'CHECK ((balance_after >= 0))',
      },
      {
        table: '"CreditTransaction"',
        name: 'credit_tx_refund_of_only_on_refunds',
        definition: "CHECK (((refund_of IS NULL) OR (operation = 'refund'::operation_type)))",
      },
      { table: '"User"', name: 'User_pkey', definition: 'PRIMARY KEY (id)' },
      { table: '"User"', name: 'user_email_unique', definition: 'UNIQUE (email)' },
      {
        table: '"User"',
        name: 'user_free_chat_messages_non_negative',
        definition: 'CHECK ((free_chat_messages >= 0))',
      },
      {
        table: '"User"',
        name: 'user_free_credits_non_negative',
        definition: 'CHECK ((free_credits >= 0))',
      },
    ]);
  });

  it('has the CreditTransaction indexes: the three of the schema, idempotency, refunds and apply order', async () => {
    const indexes = await rows<{
      name: string;
      columns: string[];
      unique: boolean;
      predicate: string | null;
    }>(sql`
      select i.relname as name, x.indisunique as unique,
        pg_get_expr(x.indpred, x.indrelid) as predicate,
        array(select a.attname from unnest(x.indkey) with ordinality k(attnum, n)
              join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
              order by k.n) as columns
      from pg_index x join pg_class i on i.oid = x.indexrelid
      where x.indrelid = '"CreditTransaction"'::regclass order by i.relname`);
    expect(indexes).toEqual([
      { name: 'CreditTransaction_pkey', columns: ['id'], unique: true, predicate: null },
      { name: 'credit_tx_created_at_idx', columns: ['created_at'], unique: false, predicate: null },
      {
        name: 'credit_tx_hold_close_idx',
        columns: ['hold_id'],
        unique: true,
        predicate: '(hold_id IS NOT NULL)',
      },
      {
        name: 'credit_tx_refund_of_idx',
        columns: ['refund_of'],
        unique: false,
        predicate: '(refund_of IS NOT NULL)',
      },
      {
        name: 'credit_tx_user_created_at_idx',
        columns: ['user_id', 'created_at'],
        unique: false,
        predicate: null,
      },
      { name: 'credit_tx_user_id_idx', columns: ['user_id'], unique: false, predicate: null },
      {
        name: 'credit_tx_user_idempotency_key_idx',
        columns: ['user_id', 'idempotency_key'],
        unique: true,
        predicate: '(idempotency_key IS NOT NULL)',
      },
      {
        name: 'credit_tx_user_seq_idx',
        columns: ['user_id', 'seq'],
        unique: true,
        predicate: null,
      },
    ]);
  });

  it('has the ledger triggers: prepare and apply, append-only, the balance guard and the opening rows', async () => {
    const triggers = await rows<{ table: string; name: string }>(sql`
      select tgrelid::regclass::text as table, tgname as name from pg_trigger
      where not tgisinternal order by 1, 2`);
    expect(triggers).toEqual([
      { table: '"CreditHold"', name: 'credit_hold_guard' },
      { table: '"CreditHold"', name: 'credit_hold_no_truncate' },
      { table: '"CreditPlanChange"', name: 'credit_plan_change_append_only' },
      { table: '"CreditPlanChange"', name: 'credit_plan_change_apply' },
      { table: '"CreditPlanChange"', name: 'credit_plan_change_no_truncate' },
      { table: '"CreditPlanChange"', name: 'credit_plan_change_prepare' },
      { table: '"CreditTransaction"', name: 'credit_tx_append_only' },
      { table: '"CreditTransaction"', name: 'credit_tx_apply' },
      { table: '"CreditTransaction"', name: 'credit_tx_no_truncate' },
      { table: '"CreditTransaction"', name: 'credit_tx_prepare' },
      { table: '"User"', name: 'user_ledger_delete' },
      { table: '"User"', name: 'user_ledger_guard' },
      { table: '"User"', name: 'user_ledger_open' },
      { table: '"User"', name: 'user_ledger_opening' },
      { table: 'credit_ledger.credit_plan', name: 'credit_plan_audit' },
    ]);
  });

  it('keeps the ledger functions in credit_ledger, a schema only its owner can create in, and none in public', async () => {
    const schemas = await rows<{ name: string; others_create: boolean; public_usage: boolean }>(sql`
      select n.nspname as name,
        exists (select 1 from aclexplode(n.nspacl) a
                 where a.grantee <> n.nspowner and a.privilege_type = 'CREATE') as others_create,
        has_schema_privilege('public', n.oid, 'USAGE') as public_usage
      from pg_namespace n where n.nspname = 'credit_ledger'`);
    expect(schemas).toEqual([{ name: 'credit_ledger', others_create: false, public_usage: true }]);
    const inPublic = await rows(
      sql`select proname from pg_proc where pronamespace = 'public'::regnamespace`,
    );
    expect(inPublic).toEqual([]);
  });

  it('runs every ledger trigger function as its owner, with a fixed search_path (pg_temp last), row security off and a lock timeout, and lets nobody else execute it', async () => {
    const functions = await rows<{
      name: string;
      definer: boolean;
      config: string[] | null;
      public_execute: boolean;
    }>(sql`
      select p.proname as name, p.prosecdef as definer, p.proconfig as config,
        has_function_privilege('public', p.oid, 'EXECUTE') as public_execute
      from pg_proc p where p.pronamespace = 'credit_ledger'::regnamespace order by 1`);
    const trigger = (name: string, lockTimeout = false) => ({
      name,
      definer: true,
      config: [
        'search_path=pg_catalog, pg_temp',
        'row_security=off',
        ...(lockTimeout ? ['lock_timeout=5s'] : []),
      ],
      public_execute: false,
    });
    // Inlined into the triggers, so no SET clause: every name in them is qualified instead.
    const helper = (name: string) => ({
      name,
      definer: false,
      config: null,
      public_execute: false,
    });
    // The rules, and the helpers they use, run inside credit_tx_prepare: as its owner, with its
    // search_path; nobody else may call them.
    const rule = (name: string) => ({ name, definer: false, config: null, public_execute: false });
    expect(functions).toEqual([
      // Grants the due allowance of a user for a balance read: as the owner (only the ledger
      // records which period was granted), for anyone, since it grants only what is due, once.
      {
        name: 'credit_allowance_apply',
        definer: true,
        config: ['search_path=pg_catalog, pg_temp', 'row_security=off', 'lock_timeout=5s'],
        public_execute: true,
      },
      rule('credit_allowance_grant'),
      rule('credit_balance_effect'),
      rule('credit_expire_due_grants'),
      rule('credit_expire_due_holds'),
      rule('credit_grant_give_back'),
      // The grants' sweeper, like the holds': anyone may run it, as themselves.
      {
        name: 'credit_grants_expire',
        definer: false,
        config: ['search_path=pg_catalog, pg_temp', 'lock_timeout=5s'],
        public_execute: true,
      },
      trigger('credit_hold_guard'),
      // The sweeper runs as its caller, so anyone may execute it: it can do only what the
      // caller's own INSERT of expire rows could.
      {
        name: 'credit_holds_expire',
        definer: false,
        config: ['search_path=pg_catalog, pg_temp', 'lock_timeout=5s'],
        public_execute: true,
      },
      // Runs on the plans table, which only the owner writes: it needs no row_security.
      {
        name: 'credit_plan_audit',
        definer: true,
        config: ['search_path=pg_catalog, pg_temp'],
        public_execute: false,
      },
      trigger('credit_plan_change_apply'),
      trigger('credit_plan_change_prepare', true),
      rule('credit_plan_lapse'),
      rule('credit_refuse'),
      rule('credit_rule_allowance_grant'),
      rule('credit_rule_balance_range'),
      rule('credit_rule_caps'),
      rule('credit_rule_hold_close'),
      rule('credit_rule_hold_columns'),
      rule('credit_rule_hold_expiry'),
      rule('credit_rule_key_unused'),
      rule('credit_rule_ledger_triggers'),
      rule('credit_rule_no_foreign_reference'),
      rule('credit_rule_no_foreign_triggers'),
      rule('credit_rule_opening_row'),
      rule('credit_rule_refund_cap'),
      rule('credit_rule_snapshot_sees_triggers'),
      rule('credit_rule_sufficient'),
      trigger('credit_tx_append_only'),
      trigger('credit_tx_apply'),
      helper('credit_tx_hash'),
      helper('credit_tx_is_trail'),
      trigger('credit_tx_prepare', true),
      // Sums past days' usage for getCreditUsage: as the owner (only the ledger writes the
      // summaries), for anyone (it only summarises the trail).
      {
        name: 'credit_usage_roll_up',
        definer: true,
        config: ['search_path=pg_catalog, pg_temp', 'row_security=off', 'jit=off'],
        public_execute: true,
      },
      trigger('user_ledger_delete'),
      trigger('user_ledger_guard'),
      trigger('user_ledger_open'),
      trigger('user_ledger_opening'),
    ]);
  });

  it("deletes a user's transactions when the user is deleted (ON DELETE CASCADE)", async () => {
    const [owner] = await db.insert(user).values({ email: 'cascade@example.com' }).returning();
    if (!owner) throw new Error('insert returned no row');
    await db
      .insert(creditTransaction)
      .values({ userId: owner.id, amount: 1, operation: 'deduct', featureType: 'chat_tool_call' });
    await db.insert(creditTransaction).values({
      userId: owner.id,
      amount: 2,
      operation: 'grant',
      featureType: 'document_generation',
    });
    await db.delete(user).where(eq(user.id, owner.id));
    const left = await db
      .select()
      .from(creditTransaction)
      .where(eq(creditTransaction.userId, owner.id));
    expect(left).toEqual([]);
  });
});
