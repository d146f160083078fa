import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../../src/client.js';
import { verifyLedger } from '../../src/credits/index.js';
import { adopt, migrate } from '../../src/migrate/index.js';
import { fillSeedDatabase, SEED_SCHEMA } from './seed-database.js';

// The app keeps running while it is adopted: its original code (the conditional UPDATE, then
// the logger's INSERT) runs on four connections before, during and after db:adopt, one of
// them in transactions that hold the tables a while. Every write that committed must be in
// the balances and, logged, in the trail once db:migrate has run: none lost, none doubled.

let database: TestDatabase;
let sql: postgres.Sql;
const log = () => {};
const START = 1_000_000;

interface Traffic {
  decrements: Map<string, number>;
  logged: string[];
  errors: unknown[];
  afterAdoption: number;
  beforeAdoption: number;
}
let traffic: Traffic;

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
  await sql.unsafe(SEED_SCHEMA);
  await fillSeedDatabase(sql, { users: 50, logRows: 40_000 });
  const users = (
    await sql`update "User" set free_credits = ${START}
               where id in (select id from "User" order by id limit 8) returning id`
  ).map((r) => r.id as string);

  traffic = { decrements: new Map(), logged: [], errors: [], afterAdoption: 0, beforeAdoption: 0 };
  let phase: 'before' | 'during' | 'after' = 'before';
  let stop = false;
  const writer = async (n: number) => {
    // The seed's log is `timestamp` dated by now(): the app's session is in UTC, as the
    // adoption reads it.
    const app = postgres(database.url, {
      max: 1,
      onnotice: () => {},
      connection: { TimeZone: 'UTC' },
    });
    try {
      for (let i = 0; !stop; i++) {
        const userId = users[(n + i) % users.length] as string;
        try {
          // The seed's spend: a conditional UPDATE, then the log row, fire-and-forget.
          // Writer 0 does both in one transaction that waits a while in between.
          const spend = async (q: postgres.Sql | postgres.TransactionSql) => {
            const updated = await q`
              update "User" set free_credits = free_credits - 1
               where id = ${userId} and free_credits >= 1 returning free_credits`;
            if (updated.length === 0) return;
            traffic.decrements.set(userId, (traffic.decrements.get(userId) ?? 0) + 1);
            if (n === 0) await q`select pg_sleep(0.05)`;
            const [row] = await q`
              insert into "CreditTransaction" (user_id, amount, operation, feature_type, metadata)
              values (${userId}, 1, 'deduct', 'document_generation', ${q.json({ writer: n, i })})
              returning id`;
            traffic.logged.push(row?.id);
          };
          const phaseAtStart = phase;
          if (n === 0) await app.begin((tx) => spend(tx));
          else await spend(app);
          if (phaseAtStart === 'before' && phase === 'before') traffic.beforeAdoption++;
          if (phaseAtStart === 'after') traffic.afterAdoption++;
          // A few milliseconds between one writer's requests, as between a route's calls:
          // four writers with none at all keep a table locked at every instant, and no
          // table-locking change (db:adopt, an ALTER TABLE of db:migrate) ever gets in.
          await new Promise((resolve) => setTimeout(resolve, 2 + Math.random() * 8));
        } catch (error) {
          traffic.errors.push(error);
          return;
        }
      }
    } finally {
      await app.end();
    }
  };
  const writers = [0, 1, 2, 3].map(writer);
  while (traffic.beforeAdoption < 40) await new Promise((r) => setTimeout(r, 10));
  phase = 'during';
  const adopted = await adopt(database.url, { log });
  phase = 'after';
  // Informational: how contended the locks were on this run (it depends on the machine).
  console.log(
    `adoption under traffic: the tables' locks were taken on attempt ${adopted.attempts}, ` +
      `held ${adopted.lockedMs} ms`,
  );
  while (traffic.afterAdoption < 40 && traffic.errors.length === 0)
    await new Promise((r) => setTimeout(r, 10));
  stop = true;
  await Promise.all(writers);
  await migrate(database.url, { log });
}, 180_000);

afterAll(async () => {
  await sql.end();
  await database.close();
});

describe("db:adopt under the app's running traffic", () => {
  it('makes no write of the app fail: racing writes wait for the adoption, then apply', () => {
    expect(traffic.errors).toEqual([]);
    expect(traffic.beforeAdoption).toBeGreaterThanOrEqual(40);
    expect(traffic.afterAdoption).toBeGreaterThanOrEqual(40);
  });

  it('keeps every committed spend in the balance, once', async () => {
    for (const [userId, spent] of traffic.decrements) {
      const [row] = await sql`select free_credits from "User" where id = ${userId}`;
      expect(row?.free_credits).toBe(START - spent);
    }
  });

  it("keeps every logged row in the trail, marked as the log's, whether written before or after the adoption", async () => {
    const rows = await sql`
      select id, metadata ? 'adopted_from_log' as marked from "CreditTransaction"
       where id = any(${traffic.logged}::uuid[])`;
    expect(rows.length).toBe(traffic.logged.length);
    expect(rows.every((r) => r.marked)).toBe(true);
  });

  it('leaves a ledger that verifies, with no trigger of the adoption left on the trail', async () => {
    const { db, close } = createDatabase(database.url, { max: 1 });
    try {
      const result = await verifyLedger(db);
      expect(result.violations).toEqual([]);
    } finally {
      await close();
    }
    const [left] = await sql`
      select count(*)::int as n from pg_trigger where tgname = 'credit_tx_adoption_mark'`;
    expect(left?.n).toBe(0);
  });
});
