import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AdoptionRefusedError } from '../../src/migrate/errors.js';
import { adopt, migrate, readCatalog } from '../../src/migrate/index.js';
import { MigrationsFolder } from '../migrations-folder.js';
import { runScript } from '../run-script.js';
import { passwordRole } from '../support.js';
import { fillSeedDatabase, SEED_SCHEMA } from './seed-database.js';

// db:adopt takes over only what it can convert whole. Anything else is refused in one line
// that names what differs and what to do, and the database is left exactly as it was: its
// schema (the catalog) and its data.

const log = () => {};
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function seedDatabase(schema = SEED_SCHEMA, after = ''): Promise<TestDatabase> {
  const database = await createTestDatabase({ empty: true });
  cleanups.push(() => database.close());
  const sql = postgres(database.url, { max: 1, onnotice: () => {} });
  try {
    if (schema) {
      await sql.unsafe(schema);
      await fillSeedDatabase(sql, { users: 20, logRows: 200 });
    }
    if (after) await sql.unsafe(after);
  } finally {
    await sql.end();
  }
  return database;
}

/** The schema and every row of every table outside pg_catalog, as one string. */
async function snapshot(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const tables = await sql<{ name: string }[]>`
      select format('%I.%I', schemaname, tablename) as name from pg_tables
       where schemaname not in ('pg_catalog', 'information_schema') order by 1`;
    const data: string[] = [];
    for (const { name } of tables) {
      const rows = await sql.unsafe(`select to_jsonb(t)::text as row from ${name} t order by 1`);
      data.push(name, ...rows.map((r) => r.row as string));
    }
    return JSON.stringify({ catalog: await readCatalog(url), data });
  } finally {
    await sql.end();
  }
}

async function refusal(url: string): Promise<AdoptionRefusedError> {
  const before = await snapshot(url);
  const error = await adopt(url, { log }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AdoptionRefusedError);
  expect((error as AdoptionRefusedError).message).not.toContain('\n');
  expect((error as AdoptionRefusedError).message).toMatch(/Nothing was changed\.$/);
  expect(await snapshot(url)).toBe(before);
  return error as AdoptionRefusedError;
}

describe('db:adopt refuses, changing nothing, a database it cannot take over whole', () => {
  it('an empty database: it has no seed tables, and needs only db:migrate', async () => {
    const database = await seedDatabase('');
    expect((await refusal(database.url)).message).toMatch(
      /no "User" and "CreditTransaction" table.*an empty one needs only pnpm db:migrate/,
    );
  });

  it('a log with rows dated after now, as a log written in a zone east of UTC reads as UTC', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at)
         select id, 1, 'deduct', 'chat_tool_call', now() at time zone 'Asia/Tokyo'
           from "User" order by id limit 1`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /1 log row\(s\) are dated after now \(the latest .*, its time read as UTC\).*pass it as --log-time-zone/,
    );
  });

  it('an unknown --log-time-zone', async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    const before = await snapshot(database.url);
    await expect(adopt(database.url, { log, logTimeZone: 'Mars/Olympus' })).rejects.toThrow(
      /--log-time-zone "Mars\/Olympus" is not a time zone this server knows/,
    );
    expect(await snapshot(database.url)).toBe(before);
  });

  it("a log the app's transaction keeps busy past the wait's budget: the app's transaction goes on, untouched", async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    const before = await snapshot(database.url);
    const app = postgres(database.url, { max: 1, onnotice: () => {} });
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let holding = () => {};
    const held = new Promise<void>((resolve) => {
      holding = resolve;
    });
    const transaction = app.begin(async (tx) => {
      await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
               select id, 1, 'deduct', 'chat_tool_call' from "User" order by id limit 1`;
      holding();
      await released;
    });
    try {
      await held;
      await expect(
        adopt(database.url, { log, lockTimeoutMs: 100, lockWaitMs: 500 }),
      ).rejects.toThrow(
        /kept "User" or "CreditTransaction" busy for 500 ms .*run db:adopt again.*Nothing was changed\.$/,
      );
      expect(await snapshot(database.url)).toBe(before);
    } finally {
      release();
      // The app's transaction commits: adopt's attempts cost it nothing.
      await transaction;
      await app.end();
    }
  });

  it("a log whose amount is bigint, not the seed's integer", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace('amount integer NOT NULL', 'amount bigint NOT NULL'),
    );
    expect((await refusal(database.url)).message).toMatch(
      /"CreditTransaction"\.amount is bigint not null, the seed's is integer not null/,
    );
  });

  it('a "User" whose balances are numeric, not integer counters', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace('free_credits integer,', 'free_credits numeric,'),
    );
    expect((await refusal(database.url)).message).toMatch(
      /"User"\.free_credits is numeric, not integer/,
    );
  });

  it('a user with a negative balance, naming how many and one of them', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `update "User" set free_credits = -3 where id = (select id from "User" order by id limit 1)`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /1 user\(s\) have a negative free_credits or free_chat_messages \([0-9a-f-]{36}\).*correct them/,
    );
  });

  it("an operation_type with a value the ledger's migrations add", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(
        "('deduct', 'refund', 'grant')",
        "('deduct', 'refund', 'grant', 'expire')",
      ),
    );
    expect((await refusal(database.url)).message).toMatch(
      /operation_type has a value "expire", which the ledger's migrations add/,
    );
  });

  it("a feature_type that is not the seed's", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(", 'chat_message')", ", 'chat_message', 'image')").replace(
        "('document_generation', 'workstream_clustering'",
        "('workstream_clustering', 'document_generation'",
      ),
    );
    expect((await refusal(database.url)).message).toMatch(
      /public\.feature_type is \(workstream_clustering, document_generation/,
    );
  });

  it("an app column on the log that is not null without a default (the ledger's rows would have none)", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `alter table "CreditTransaction" add column request_id text not null default 'r';
       alter table "CreditTransaction" alter column request_id drop default`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /"CreditTransaction"\.request_id is the app's, not null and without a default/,
    );
  });

  it('an app table that references log rows', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `create table "Invoice" (id serial primary key, charge uuid references "CreditTransaction"(id))`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /"Invoice" references "CreditTransaction" \(constraint Invoice_charge_fkey\).*drop the constraint first/,
    );
  });

  it('a log without the seed\'s cascade to "User"', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(
        'REFERENCES "public"."User"(id) ON DELETE CASCADE',
        'REFERENCES "public"."User"(id)',
      ),
    );
    expect((await refusal(database.url)).message).toMatch(
      /user_id references "User"\(id\) without on delete cascade/,
    );
  });

  it("a database this package's migrations built without recording them: that is db:baseline's", async () => {
    const database = await createTestDatabase({ empty: true });
    cleanups.push(() => database.close());
    await migrate(database.url, { log });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    await sql`drop schema drizzle cascade`;
    await sql.end();
    expect((await refusal(database.url)).message).toMatch(
      /exists already, a column the ledger's migrations add.*use pnpm db:baseline/,
    );
  });

  it('a role that does not own the tables, even with every grant on them: naming the owner', async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    const role = await passwordRole(database.url, inject('testPostgres').serverUrl);
    cleanups.unshift(role.drop);
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    const name = new URL(role.url).username;
    await sql.unsafe(
      `grant all on all tables in schema public to ${name}; grant create on schema public to ${name}`,
    );
    await sql.end();
    expect((await refusal(role.url)).message).toMatch(
      new RegExp(
        `The role ${name} does not own "User" \\(owner \\w+\\), "CreditTransaction" \\(owner \\w+\\).*tables' owner`,
      ),
    );
  });
});

describe('db:adopt refuses what its conversion could not finish, or would make unverifiable', () => {
  it('an app trigger on "User" (an updated_at trigger): it would run inside the ledger\'s writes, and credits:verify would never pass', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `create function touch() returns trigger language plpgsql as $$ begin new.updated_at := now(); return new; end $$;
       create trigger user_touch before update on "User" for each row execute function touch()`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /the app's trigger user_touch on "User" would run inside the ledger's writes.*drop it first/,
    );
  });

  it('a view that reads the log', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `create view recent_spend as select user_id, created_at from "CreditTransaction"`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /the view recent_spend reads "CreditTransaction".*drop it first/,
    );
  });

  it("a partial index under a seed index's name", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `drop index credit_tx_user_created_at_idx;
       create index credit_tx_user_created_at_idx on "CreditTransaction" (user_id, created_at) where amount > 0`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /the index public\.credit_tx_user_created_at_idx is not the seed's/,
    );
  });

  it('a constraint of the app under a name the conversion gives its own', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `alter table "CreditTransaction" add constraint credit_tx_amount_positive check (amount <> 0) not valid`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /has a constraint named credit_tx_amount_positive already/,
    );
  });

  it('row level security forced on the log', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `alter table "CreditTransaction" enable row level security;
       alter table "CreditTransaction" force row level security`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /row level security is forced on "CreditTransaction"/,
    );
  });

  it('a partitioned log', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(
        `    created_at timestamp NOT NULL DEFAULT now()
  );
  CREATE INDEX credit_tx_user_id_idx`,
        `    created_at timestamp NOT NULL DEFAULT now()
  ) PARTITION BY HASH (id);
  CREATE TABLE "public"."CreditTransaction_p0" PARTITION OF "public"."CreditTransaction" FOR VALUES WITH (MODULUS 1, REMAINDER 0);
  CREATE INDEX credit_tx_user_id_idx`,
      ),
    );
    expect((await refusal(database.url)).message).toMatch(/"CreditTransaction" is partitioned/);
  });

  it('a balance the trail could only explain above 2147483647 (0003 would fail on every db:migrate)', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `update "User" set free_credits = 2147483647 where id = (select id from "User" order by id limit 1);
       insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at)
         select id, 1, 'deduct', 'document_generation', timestamp '2025-01-01'
           from "User" order by id limit 1`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /1 user\(s\) \([0-9a-f-]{36}\) would need a balance above 2147483647/,
    );
  });
});

describe('db:adopt refuses, as 0003 would see them', () => {
  it('a trail that overflows only in the order 0003 walks it: rows of one millisecond go by id', async () => {
    // Both rows fall in one millisecond: 0003 orders them by id, the grant first, so the
    // balance would pass 2147483647 before the deduction (in microsecond order it would not).
    const database = await seedDatabase(
      SEED_SCHEMA,
      `insert into "User" (id, email, free_credits, free_chat_messages, created_at)
       values ('00000000-0000-4000-8000-0000000000bb', 'max@example.com', 2147483642, 0, '2025-01-01');
       insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, created_at)
       values ('ffffffff-ffff-4fff-8fff-ffffffff0001', '00000000-0000-4000-8000-0000000000bb', 10,
               'deduct', 'document_generation', '2025-03-01 10:00:00.0001'),
              ('00000000-0000-4000-8000-0000000000aa', '00000000-0000-4000-8000-0000000000bb', 10,
               'grant', 'document_generation', '2025-03-01 10:00:00.0003')`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /1 user\(s\) \(00000000-0000-4000-8000-0000000000bb\) would need a balance above 2147483647/,
    );
  });

  it('an app rule on the log', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `create table audit (id uuid);
       create rule ct_audit as on insert to "CreditTransaction" do also insert into audit values (new.id)`,
    );
    expect((await refusal(database.url)).message).toMatch(
      /the app's rule ct_audit on "CreditTransaction" would rewrite the ledger's writes/,
    );
  });
});

describe("db:adopt converts public's tables, whatever the session's search_path", () => {
  it('leaves another schema\'s "CreditTransaction" alone when the database\'s search_path puts it first, and the ledger verifies', async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const name = new URL(database.url).pathname.slice(1);
      await sql.unsafe(`
        create schema archive;
        create table archive."CreditTransaction" (like public."CreditTransaction" including all);
        insert into archive."CreditTransaction" select * from public."CreditTransaction";
        alter database "${name}" set search_path = archive, public`);
      const archived = async () =>
        JSON.stringify(
          await sql`select column_name from information_schema.columns
                     where table_schema = 'archive' order by 1`,
        );
      const before = await archived();
      await adopt(database.url, { log });
      await migrate(database.url, { log });
      expect(await archived()).toBe(before);
      const verified = await runScript('scripts/credits-verify.ts', [], {
        env: { DATABASE_URL: database.url },
      });
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    } finally {
      await sql.end();
    }
  });
});

describe('db:migrate after db:adopt keeps the rest of the search_path', () => {
  it("an app migration calling a function of an extensions schema (Supabase's layout) still finds it, and tables land in public", async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    const folder = new MigrationsFolder();
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const name = new URL(database.url).pathname.slice(1);
      await sql.unsafe(`
        create schema extensions;
        create function extensions.app_nickname() returns text language sql as $$ select 'anon' $$;
        alter database "${name}" set search_path = "$user", public, extensions`);
      folder.add('app_nickname', [
        'ALTER TABLE "User" ADD COLUMN "nickname" text DEFAULT app_nickname()',
      ]);
      await adopt(database.url, { log, migrationsFolder: folder.dir });
      await migrate(database.url, { log, migrationsFolder: folder.dir });
      const [row] = await sql`select nickname from public."User" limit 1`;
      expect(row?.nickname).toBe('anon');
    } finally {
      await sql.end();
      folder.remove();
    }
  });
});

describe('db:adopt takes over what the seed allows beyond itself', () => {
  it("reads the log's times in the zone --log-time-zone names", async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, created_at)
         select '00000000-0000-4000-8000-00000000001a', id, 1, 'deduct', 'chat_tool_call',
                timestamp '2025-06-01 09:00:00'
           from "User" order by id limit 1`,
    );
    await adopt(database.url, { log, logTimeZone: 'Asia/Tokyo' });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql`
        select created_at = timestamptz '2025-06-01 00:00:00+00' as utc from "CreditTransaction"
         where id = '00000000-0000-4000-8000-00000000001a'`;
      expect(row?.utc).toBe(true);
      const [record] = await sql`select log_time_zone from drizzle.adoption`;
      expect(record?.log_time_zone).toBe('Asia/Tokyo');
    } finally {
      await sql.end();
    }
  });

  it('keeps an object\'s own adopted_from_log whole under "value"', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA,
      `insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, metadata, created_at)
         select '00000000-0000-4000-8000-00000000002b', id, 1, 'grant', 'chat_message',
                '{"adopted_from_log": false, "k": 1}', timestamp '2025-01-01'
           from "User" order by id limit 1`,
    );
    await adopt(database.url, { log });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const [row] =
        await sql`select metadata from "CreditTransaction" where id = '00000000-0000-4000-8000-00000000002b'`;
      expect(row?.metadata).toEqual({
        adopted_from_log: true,
        value: { adopted_from_log: false, k: 1 },
      });
    } finally {
      await sql.end();
    }
  });

  it('keeps the old logger working until db:migrate: its rows of amount 0 or of an appended operation join the others moved out, and the ledger verifies', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(
        "('deduct', 'refund', 'grant')",
        "('deduct', 'refund', 'grant', 'spend_hold')",
      ),
    );
    await adopt(database.url, { log });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      // The old app, between the two commands: a spend of 4 under an operation of its own, and
      // a row of amount 0, as its logger writes them.
      const [u] = await sql`select id from "User" where free_credits >= 4 order by id limit 1`;
      await sql`update "User" set free_credits = free_credits - 4 where id = ${u?.id}`;
      await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                values (${u?.id}, 4, 'spend_hold', 'document_generation'),
                       (${u?.id}, 0, 'deduct', 'document_generation')`;
      const moved = await sql`
        select amount, operation, reason from drizzle.adoption_skipped_log_row
         where user_id = ${u?.id} order by amount`;
      expect(moved.filter((r) => r.operation === 'spend_hold' || r.amount === 0)).toEqual([
        { amount: 0, operation: 'deduct', reason: 'amount_not_positive' },
        { amount: 4, operation: 'spend_hold', reason: 'operation_not_in_seed' },
      ]);
      await migrate(database.url, { log });
    } finally {
      await sql.end();
    }
    const verified = await runScript('scripts/credits-verify.ts', [], {
      env: { DATABASE_URL: database.url },
    });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  });

  it("refuses, as the log's reference did, an unholdable row the old logger writes for a user who does not exist; and its retried insert (ON CONFLICT DO NOTHING) is no error", async () => {
    const database = await seedDatabase(SEED_SCHEMA);
    await adopt(database.url, { log });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      await expect(
        sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
            values ('00000000-0000-4000-8000-0000000000ff', 0, 'deduct', 'chat_tool_call')`,
      ).rejects.toMatchObject({ code: '23503' });
      const [u] = await sql`select id from "User" order by id limit 1`;
      for (let i = 0; i < 2; i++) {
        await sql`insert into "CreditTransaction" (id, user_id, amount, operation, feature_type)
                  values ('00000000-0000-4000-8000-0000000000fe', ${u?.id}, 0, 'deduct', 'chat_tool_call')
                  on conflict (id) do nothing`;
      }
      const [kept] = await sql`
        select count(*)::int as n from drizzle.adoption_skipped_log_row
         where id = '00000000-0000-4000-8000-0000000000fe'`;
      expect(kept?.n).toBe(1);
    } finally {
      await sql.end();
    }
  });

  it('keeps a feature the app appended, and moves out rows of an operation it appended (the ledger does not know what it means)', async () => {
    const database = await seedDatabase(
      SEED_SCHEMA.replace(
        "('deduct', 'refund', 'grant')",
        "('deduct', 'refund', 'grant', 'adjust')",
      ).replace("'chat_message')", "'chat_message', 'image_generation')"),
      `insert into "CreditTransaction" (user_id, amount, operation, feature_type)
         select id, 2, 'adjust', 'document_generation' from "User" order by id limit 1;
       insert into "CreditTransaction" (user_id, amount, operation, feature_type)
         select id, 3, 'deduct', 'image_generation' from "User" order by id limit 1`,
    );
    const result = await adopt(database.url, { log });
    await migrate(database.url, { log });
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const [kept] =
        await sql`select count(*)::int as n from "CreditTransaction" where feature_type = 'image_generation'`;
      expect(kept?.n).toBe(1);
      const skipped =
        await sql`select operation, reason from drizzle.adoption_skipped_log_row where operation = 'adjust'`;
      expect(skipped).toEqual([{ operation: 'adjust', reason: 'operation_not_in_seed' }]);
      expect(result.skippedRows).toBeGreaterThanOrEqual(1);
    } finally {
      await sql.end();
    }
  });
});
