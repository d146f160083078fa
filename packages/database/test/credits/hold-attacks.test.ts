import type postgres from 'postgres';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  deductCredits,
  expireCreditHolds,
  grantCredits,
  HoldExpiredError,
  holdCredits,
  MAX_AMOUNT,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { refusalOf } from '../support.js';
import { useAttackEnvironment } from './attack-env.js';

// Each attack on credit holds (migration 0004) tried the way an outsider would: as an app
// role with the broad grants and as the role that owns the tables (README: "What the database
// guarantees, and against whom"). A hold must close exactly once (settled, voided or expired),
// never give back more than it held, and always be able to expire; "CreditHold" must list
// exactly the trail's open holds. After each attack, verifyLedger must find nothing.

const env = useAttackEnvironment();
const FEATURE = 'chat_tool_call';
const HOUR = 60 * 60 * 1000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A hold of `amount` that is not due for an hour, taken through the package. */
async function hold(userId: string, amount = 4): Promise<string> {
  const { holdId } = await holdCredits(env.adminDb(), {
    userId,
    amount,
    featureType: FEATURE,
    expiresInMs: HOUR,
  });
  return holdId;
}

/**
 * A hold that is already past its expiry and not expired by anyone yet: a hold row written
 * with a 300 ms expiry (the triggers allow any expiry within a day), then waited out.
 */
async function dueHold(userId: string, amount = 4): Promise<string> {
  const [id] = await dueHolds(userId, 1, amount);
  if (!id) throw new Error('no hold was taken');
  return id;
}

/** `count` due holds of one user, taken before the first is due (a write expires due ones). */
async function dueHolds(userId: string, count: number, amount = 4): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const [row] = await env.admin()<{ id: string }[]>`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
      values (${userId}, ${amount}, 'hold', ${FEATURE}, clock_timestamp() + interval '300 milliseconds')
      returning id`;
    if (row) ids.push(row.id);
  }
  await sleep(350);
  return ids;
}

/** The rows that close the hold, in trail order: at most one may ever exist. */
async function closes(holdId: string): Promise<{ operation: string; amount: number }[]> {
  return env.admin()<{ operation: string; amount: number }[]>`
    select operation::text, amount from "CreditTransaction" where hold_id = ${holdId} order by seq`;
}

/** The holds of the user that "CreditHold" lists as open. */
async function listed(userId: string): Promise<string[]> {
  const rows = await env.admin()<{ id: string }[]>`
    select id from "CreditHold" where user_id = ${userId} order by id`;
  return rows.map((r) => r.id);
}

/** The error code of a statement, or 'ok' when it ran. */
const outcomeOf = (statement: Promise<unknown>) =>
  statement.then(
    () => 'ok',
    (error: { code?: string; cause?: { code?: string } }) => error.cause?.code ?? error.code,
  );

// A break that leaves a closed hold listed would fail every later test's whole-database
// verification: the listing is removed (anyone may remove the listing of a closed hold), so
// that each test reports only its own finding.
afterEach(async () => {
  await env.admin()`
    delete from "CreditHold" h
     where exists (select 1 from "CreditTransaction" c where c.hold_id = h.id)`;
});

describe.each(['app', 'owner'] as const)('as the %s role', (role) => {
  it('the hold operations work with its grants', async () => {
    const db = env.packageAs(role);
    const userId = await env.newUser();
    const a = await holdCredits(db, { userId, amount: 4, featureType: FEATURE });
    const b = await holdCredits(db, { userId, amount: 3, featureType: FEATURE });
    await settleCreditHold(db, { holdId: a.holdId, amount: 1 });
    await voidCreditHold(db, { holdId: b.holdId });
    expect(await env.state(userId)).toMatchObject({ credits: 9, rows: 6, listed: 0 });
    await env.expectLedgerVerifies();
  });

  describe('"CreditHold" cannot be made to drop or change an open hold', () => {
    it("cannot delete, update or truncate an open hold's listing", async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      for (const statement of [
        sql`delete from "CreditHold" where id = ${holdId}`,
        sql`delete from "CreditHold" where user_id = ${userId}`,
        sql`update "CreditHold" set expires_at = 'infinity' where id = ${holdId}`,
        sql`update "CreditHold" set expires_at = expires_at + interval '1 year' where id = ${holdId}`,
        sql`update "CreditHold" set id = gen_random_uuid() where id = ${holdId}`,
        sql`update "CreditHold" set amount = 1 where id = ${holdId}`,
        sql`truncate "CreditHold"`,
      ]) {
        // The owner is refused by credit_hold_guard; the app role has no TRUNCATE at all.
        expect(['BC005', '42501']).toContain((await refusalOf(statement)).code);
      }
      expect(await listed(userId)).toEqual([holdId]);
      await env.expectLedgerVerifies();
    });

    it('cannot list a hold the trail does not have, nor an open one with other values', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const deduction = await deductCredits(env.adminDb(), {
        userId,
        amount: 1,
        featureType: FEATURE,
      });
      const list = (id: string, amount: number, expiresAt: string) => sql`
        insert into "CreditHold" (id, user_id, amount, feature_type, expires_at, created_at)
        values (${id}, ${userId}, ${amount}, ${FEATURE}, ${expiresAt}::timestamptz, now())`;
      for (const statement of [
        list(crypto.randomUUID(), 1000, '2000-01-01'),
        list(deduction.transaction.id, 1, '2000-01-01'),
        list(holdId, 4, '2000-01-01'),
      ]) {
        expect((await refusalOf(statement)).code).toBe('BC005');
      }
      // The same values again: the listing exists already.
      const again = sql`
        insert into "CreditHold" select id, user_id, amount, feature_type, hold_expires_at, created_at
          from "CreditTransaction" where id = ${holdId}`;
      expect(['BC005', '23505']).toContain((await refusalOf(again)).code);
      expect(await listed(userId)).toEqual([holdId]);
      await env.expectLedgerVerifies();
    });

    it('cannot list again a hold that was voided', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      await voidCreditHold(env.adminDb(), { holdId });
      const error = await refusalOf(sql`
        insert into "CreditHold" select id, user_id, amount, feature_type, hold_expires_at, created_at
          from "CreditTransaction" where id = ${holdId}`);
      expect(error.code).toBe('BC005');
      expect(await listed(userId)).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('cannot list again a hold whose void commits while the listing INSERT waits for it', async () => {
      // A closed hold listed again is due one day: then every write of its user, and every
      // sweep of every user, tries to expire it and fails (HOLD_ALREADY_VOIDED).
      const closer = env.session(role);
      const lister = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      let release: () => void = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let voided: () => void = () => {};
      const isVoided = new Promise<void>((resolve) => {
        voided = resolve;
      });
      const closing = closer.begin(async (tx) => {
        await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
                 values (${userId}, 4, 'void', ${FEATURE}, ${holdId})`;
        voided();
        await held;
      });
      await isVoided;
      const listing = outcomeOf(lister`
        insert into "CreditHold" select id, user_id, amount, feature_type, hold_expires_at, created_at
          from "CreditTransaction" where id = ${holdId}`);
      await sleep(300);
      release();
      await closing;
      const outcome = await listing;
      expect({ outcome, listed: await listed(userId) }).toEqual({
        outcome: expect.not.stringMatching(/^ok$/),
        listed: [],
      });
      await env.expectLedgerVerifies();
    });

    it('cannot list again, from a REPEATABLE READ snapshot, a hold voided after the snapshot', async () => {
      const lister = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const outcome = await outcomeOf(
        lister.begin('isolation level repeatable read', async (tx) => {
          await tx`select count(*) from "CreditHold"`;
          await voidCreditHold(env.adminDb(), { holdId });
          await tx`
            insert into "CreditHold" select id, user_id, amount, feature_type, hold_expires_at, created_at
              from "CreditTransaction" where id = ${holdId}`;
        }),
      );
      expect({ outcome, listed: await listed(userId) }).toEqual({
        outcome: expect.not.stringMatching(/^ok$/),
        listed: [],
      });
      await env.expectLedgerVerifies();
    });
  });

  describe('a hold gives back at most what it held, once', () => {
    it('settling more than held, or voiding or expiring another amount, is refused', async () => {
      const sql = env.session(role);
      const userId = await env.newUser(20);
      const holdId = await hold(userId);
      const due = await dueHold(userId);
      const close = (operation: string, amount: number, id: string) => sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, ${amount}, ${operation}::operation_type, ${FEATURE}, ${id})`;
      for (const [statement, code] of [
        [close('settle', 5, holdId), 'BC014'],
        [close('void', 3, holdId), 'BC014'],
        [close('void', 5, holdId), 'BC014'],
        [close('expire', 3, due), 'BC014'],
        [close('expire', 5, due), 'BC014'],
        [close('settle', 0, holdId), '23514'],
      ] as const) {
        expect((await refusalOf(statement)).code).toBe(code);
      }
      expect(await closes(holdId)).toEqual([]);
      expect(await closes(due)).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('two rows closing one hold in one INSERT are refused whole', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const error = await refusalOf(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, 4, 'void', ${FEATURE}, ${holdId}), (${userId}, 1, 'settle', ${FEATURE}, ${holdId})`);
      expect(['23505', 'BC008', 'BC013']).toContain(error.code);
      expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 1 });
      expect(await closes(holdId)).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('INSERT … SELECT of three voids of one hold is refused whole', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const error = await refusalOf(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        select user_id, amount, 'void', feature_type, id
          from "CreditTransaction", generate_series(1, 3) where id = ${holdId}`);
      expect(['23505', 'BC008', 'BC013']).toContain(error.code);
      expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 1 });
      await env.expectLedgerVerifies();
    });

    it('COPY of two voids of one hold gives nothing back', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const copy =
        await sql`copy "CreditTransaction" (user_id, amount, operation, feature_type, hold_id) from stdin`.writable();
      const line = `${userId}\t4\tvoid\t${FEATURE}\t${holdId}\n`;
      copy.write(line);
      copy.end(line);
      // postgres.js reports no error of a COPY: the next query of the session runs once the
      // COPY is over, and the outcome is read after it.
      await sql`select 1`;
      expect(await closes(holdId)).toEqual([]);
      expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 1 });
      await env.expectLedgerVerifies();
    });

    it('a function of its own that voids the hold twice in one statement is refused the second time', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      await sql.unsafe(`
        create or replace function pg_temp.give_back(h uuid) returns int language plpgsql as $$ begin
          insert into public."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
            select user_id, amount, 'void', feature_type, id from public."CreditTransaction" where id = h;
          return 1; end $$`);
      const error = await refusalOf(
        sql`select pg_temp.give_back(${holdId}) from generate_series(1, 2)`,
      );
      expect(error.code).toBe('BC013');
      expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 1 });
      await env.expectLedgerVerifies();
    });

    it('ON CONFLICT DO NOTHING or DO UPDATE on a closed hold gives nothing back again', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      await voidCreditHold(env.adminDb(), { holdId });
      const again = sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, 4, 'void', ${FEATURE}, ${holdId})`;
      for (const statement of [
        sql`${again} on conflict do nothing returning id`,
        sql`${again} on conflict (hold_id) where hold_id is not null do nothing returning id`,
        sql`${again} on conflict (hold_id) where hold_id is not null do update set amount = 4 returning id`,
      ]) {
        const outcome = await statement.then(
          (rows) => rows.length,
          (error: { code?: string }) => error.code,
        );
        expect([0, 'BC013', 'BC005']).toContain(outcome);
      }
      expect(await env.state(userId)).toMatchObject({ credits: 10, rows: 4, listed: 0 });
      await env.expectLedgerVerifies();
    });

    it('a TEMP "CreditTransaction" with a bigger hold under the same id does not raise the give-back', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      await sql`create temp table "CreditTransaction" (like public."CreditTransaction")`;
      await sql`
        insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, balance_after, seq, hash, created_at, hold_expires_at)
        values (${holdId}, ${userId}, 1000, 'hold', ${FEATURE}, 0, 3, 'x', now(), 'infinity')`;
      const error = await refusalOf(sql`
        insert into public."CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        select user_id, amount, 'void', feature_type, id from "CreditTransaction" where id = ${holdId}`);
      expect(error.code).toBe('BC014');
      expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 1 });
      await env.expectLedgerVerifies();
    });

    it('a refund cannot name a hold, nor give back more than a settlement charged', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const settlement = await settleCreditHold(env.adminDb(), { holdId, amount: 2 });
      const cases = [
        [holdId, 2, 'BC004'],
        [settlement.transaction.id, 3, 'BC003'],
      ] as const;
      for (const [refundOf, amount, code] of cases) {
        const error = await refusalOf(sql`
          insert into "CreditTransaction" (user_id, amount, operation, feature_type, refund_of)
          values (${userId}, ${amount}, 'refund', ${FEATURE}, ${refundOf})`);
        expect(error.code).toBe(code);
      }
      expect(await env.state(userId)).toMatchObject({ credits: 8, rows: 4 });
      await env.expectLedgerVerifies();
    });

    it.each(['repeatable read', 'serializable'])(
      'a close from a %s snapshot taken before another session closed the hold fails to serialize',
      async (level) => {
        const first = env.session(role);
        const second = env.session(role);
        const userId = await env.newUser();
        const holdId = await hold(userId);
        const outcome = await outcomeOf(
          first.begin(`isolation level ${level}`, async (tx) => {
            await tx`select free_credits from "User" where id = ${userId}`;
            await second.begin(`isolation level ${level}`, async (other) => {
              await other`insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
                          values (${userId}, 4, 'settle', ${FEATURE}, ${holdId})`;
            });
            await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
                     values (${userId}, 4, 'void', ${FEATURE}, ${holdId})`;
          }),
        );
        expect(outcome).toBe('40001');
        expect(await closes(holdId)).toEqual([{ operation: 'settle', amount: 4 }]);
        expect(await env.state(userId)).toMatchObject({ credits: 6, listed: 0 });
        await env.expectLedgerVerifies();
      },
    );
  });

  describe('a hold expires at its time, and only then', () => {
    it('an expire row before the hold is due is refused, and no sweep expires it', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const error = await refusalOf(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, 4, 'expire', ${FEATURE}, ${holdId})`);
      expect(error.code).toBe('BC015');
      await sql`select * from credit_ledger.credit_holds_expire(1000, ${userId})`;
      await sql`select * from credit_ledger.credit_holds_expire(1000)`;
      expect(await listed(userId)).toEqual([holdId]);
      expect(await closes(holdId)).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('a clock of its own, first in search_path, does not make a hold due', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const schema = `wta_clock_${role}`;
      await sql.unsafe(`
        create schema ${schema};
        create function ${schema}.clock_timestamp() returns timestamptz language sql as $$ select '3000-01-01'::timestamptz $$;
        create function ${schema}.now() returns timestamptz language sql as $$ select '3000-01-01'::timestamptz $$;
        set search_path = ${schema}, pg_catalog, public`);
      await sql`select * from credit_ledger.credit_holds_expire(1000, ${userId})`;
      const error = await refusalOf(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, 4, 'expire', ${FEATURE}, ${holdId})`);
      expect(error.code).toBe('BC015');
      expect(await listed(userId)).toEqual([holdId]);
      await env.expectLedgerVerifies();
    });

    it('a TEMP "CreditHold" listing the hold as due is not what a sweep or a write expires', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      await sql`create temp table "CreditHold" (like public."CreditHold")`;
      await sql`insert into "CreditHold" values (${holdId}, ${userId}, 4, ${FEATURE}, '2000-01-01', '2000-01-01')`;
      await sql`select * from credit_ledger.credit_holds_expire(1000, ${userId})`;
      await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                values (${userId}, 1, 'deduct', ${FEATURE})`;
      expect(await listed(userId)).toEqual([holdId]);
      expect(await closes(holdId)).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('settling or voiding a due hold that nobody expired yet is refused as expired', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await dueHold(userId);
      for (const [operation, amount] of [
        ['settle', 1],
        ['settle', 4],
        ['void', 4],
      ] as const) {
        const error = await refusalOf(sql`
          insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
          values (${userId}, ${amount}, ${operation}, ${FEATURE}, ${holdId})`);
        expect(error.code).toBe('BC013');
      }
      expect(await closes(holdId)).toEqual([]);
      await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                values (${userId}, 1, 'deduct', ${FEATURE})`;
      expect(await closes(holdId)).toEqual([{ operation: 'expire', amount: 4 }]);
      expect(await env.state(userId)).toMatchObject({ credits: 9, listed: 0 });
      await env.expectLedgerVerifies();
    });

    it('a hold cannot expire in the past, now, never, or more than a day after it is taken', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      for (const expiresAt of [
        sql`clock_timestamp() - interval '1 second'`,
        sql`now()`,
        sql`'-infinity'::timestamptz`,
        sql`'infinity'::timestamptz`,
        sql`clock_timestamp() + interval '1 day 2 minutes'`,
        sql`null`,
      ]) {
        const error = await refusalOf(sql`
          insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
          values (${userId}, 4, 'hold', ${FEATURE}, ${expiresAt})`);
        expect(error.code).toBe('BC016');
      }
      expect(await env.state(userId)).toMatchObject({ credits: 10, rows: 2, listed: 0 });
      await env.expectLedgerVerifies();
    });

    it('hold columns on rows of the other operations are refused', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const holdId = await hold(userId);
      const row = (operation: string, id: string | null, expiresAt: string | null) => sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id, hold_expires_at)
        values (${userId}, 4, ${operation}::operation_type, ${FEATURE}, ${id}::uuid,
                clock_timestamp() + ${expiresAt}::interval)`;
      for (const statement of [
        row('deduct', holdId, null),
        row('grant', holdId, null),
        row('refund', holdId, null),
        row('grant', null, '1 hour'),
        row('deduct', null, '1 hour'),
        row('hold', holdId, '1 hour'),
        row('settle', null, null),
        row('void', null, null),
        row('expire', null, null),
        row('void', holdId, '1 hour'),
      ]) {
        expect((await refusalOf(statement)).code).toBe('BC016');
      }
      expect(await env.state(userId)).toMatchObject({ credits: 6, rows: 3, listed: 1 });
      await env.expectLedgerVerifies();
    });
  });

  describe('a hold is closed only as its own user and balance', () => {
    it("cannot close another user's hold, a hold of another feature, or a row that is no hold", async () => {
      const sql = env.session(role);
      const victim = await env.newUser();
      const attacker = await env.newUser();
      const holdId = await hold(victim);
      const deduction = await deductCredits(env.adminDb(), {
        userId: victim,
        amount: 1,
        featureType: FEATURE,
      });
      const close = (userId: string, feature: string, id: string) => sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id)
        values (${userId}, 4, 'void', ${feature}::feature_type, ${id})`;
      for (const statement of [
        close(attacker, FEATURE, holdId),
        close(victim, 'document_generation', holdId),
        close(victim, FEATURE, deduction.transaction.id),
        close(victim, FEATURE, crypto.randomUUID()),
      ]) {
        expect((await refusalOf(statement)).code).toBe('BC012');
      }
      expect(await env.state(attacker)).toMatchObject({ credits: 10, rows: 2 });
      expect(await listed(victim)).toEqual([holdId]);
      await env.expectLedgerVerifies();
    });

    it('cannot take a hold as an opening row, nor in the statement that creates its user', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const labelled = await refusalOf(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, metadata, hold_expires_at)
        values (${userId}, 4, 'hold', 'document_generation', '{"reason": "opening_balance"}',
                clock_timestamp() + interval '1 hour')`);
      expect(labelled.code).toBe('BC008');
      const email = `${crypto.randomUUID()}@example.com`;
      const created = await refusalOf(sql`
        with u as (insert into "User" (email) values (${email}) returning id)
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
        select id, 4, 'hold', ${FEATURE}, clock_timestamp() + interval '1 hour' from u`);
      expect(created.code).toBe('BC008');
      expect(await env.admin()`select 1 from "User" where email = ${email}`).toHaveLength(0);
      expect(await env.state(userId)).toMatchObject({ rows: 2, listed: 0 });
      await env.expectLedgerVerifies();
    });
  });

  describe('the sweeper and the end of a user', () => {
    it('credit_holds_expire with a zero, negative or NULL limit, or another user, expires only due holds', async () => {
      const sql = env.session(role);
      const userId = await env.newUser(20);
      const other = await env.newUser();
      const open = await hold(userId);
      const due = await dueHold(userId);
      expect(await sql`select * from credit_ledger.credit_holds_expire(0)`).toHaveLength(0);
      expect(['2201W', '22023']).toContain(
        (await refusalOf(sql`select * from credit_ledger.credit_holds_expire(-1, ${userId})`)).code,
      );
      expect(await sql`select * from credit_ledger.credit_holds_expire(10, ${other})`).toHaveLength(
        0,
      );
      expect(
        await sql`select * from credit_ledger.credit_holds_expire(10, ${crypto.randomUUID()})`,
      ).toHaveLength(0);
      expect(await closes(due)).toEqual([]);
      const expired =
        await sql`select hold_id from credit_ledger.credit_holds_expire(null, ${userId})`;
      expect(expired.map((r) => r.hold_id)).toEqual([due]);
      expect(await closes(due)).toEqual([{ operation: 'expire', amount: 4 }]);
      expect(await listed(userId)).toEqual([open]);
      await env.expectLedgerVerifies();
    });

    it('deleting a user with open holds removes their listing with the trail', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      await hold(userId);
      await dueHold(userId, 2);
      await sql`delete from "User" where id = ${userId}`;
      expect(await listed(userId)).toEqual([]);
      expect(
        await env.admin()`select 1 from "CreditTransaction" where user_id = ${userId}`,
      ).toEqual([]);
      await env.expectLedgerVerifies();
    });

    it('cannot delete a user in the statement that takes a hold for it', async () => {
      const sql = env.session(role);
      const userId = await env.newUser();
      const error = await refusalOf(sql`
        with h as (
          insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
          values (${userId}, 4, 'hold', ${FEATURE}, clock_timestamp() + interval '1 hour') returning user_id)
        delete from "User" where id in (select user_id from h)`);
      expect(error.code).toBe('BC008');
      expect(await env.state(userId)).toMatchObject({ credits: 10, rows: 2, listed: 0 });
      await env.expectLedgerVerifies();
    });
  });
});

describe('a hold can always be given back', () => {
  it('a user whose balance was filled up to the largest value while a hold was open can still spend after it is due', async () => {
    const db = env.packageAs('app');
    const userId = await env.newUser();
    try {
      await holdCredits(db, { userId, amount: 10, featureType: FEATURE, expiresInMs: 1000 });
      // Refusing the grant (no room to give the hold back) is a fine answer too.
      await grantCredits(db, { userId, amount: MAX_AMOUNT, featureType: FEATURE }).catch(
        () => undefined,
      );
      await sleep(1100);
      // The grant was refused (no room left to give the hold back), so the hold expires and
      // the user spends it again.
      const outcome = await outcomeOf(
        deductCredits(db, { userId, amount: 10, featureType: FEATURE }),
      );
      expect(outcome).toBe('ok');
    } finally {
      // A hold that can never expire stops every sweep: the user goes with it.
      await env.admin()`delete from "User" where id = ${userId}`;
    }
  });

  it("one hold that cannot be given back does not stop the sweeper from expiring other users' holds", async () => {
    const db = env.packageAs('app');
    const stuck = await env.newUser();
    const other = await env.newUser();
    try {
      await holdCredits(db, {
        userId: stuck,
        amount: 10,
        featureType: FEATURE,
        expiresInMs: 1000,
      });
      await grantCredits(db, { userId: stuck, amount: MAX_AMOUNT, featureType: FEATURE }).catch(
        () => undefined,
      );
      await sleep(1000);
      const otherHold = await dueHold(other);
      const swept = await expireCreditHolds(db).then(
        (r) => r.expired.map((row) => row.holdId),
        (error: Error) => error.message,
      );
      expect(swept).toEqual(expect.arrayContaining([otherHold]));
    } finally {
      await env.admin()`delete from "User" where id = ${stuck}`;
    }
  });
});

describe('the sweeper makes progress', () => {
  it("a limited sweep expires other users' due holds while the user with the earliest ones is locked", async () => {
    const db = env.packageAs('app');
    // Earlier tests leave due holds behind: a first sweep gives them back.
    await expireCreditHolds(db, { limit: 100_000 });
    const locked = await env.newUser(20);
    const other = await env.newUser();
    await dueHolds(locked, 3, 1);
    const otherHold = await dueHold(other);
    // Another session holds the user's lock, as a long transaction writing to it does.
    const session = env.session('app');
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let lockTaken: () => void = () => {};
    const isLocked = new Promise<void>((resolve) => {
      lockTaken = resolve;
    });
    const locking = session.begin(async (tx) => {
      await tx`select 1 from "User" where id = ${locked} for no key update`;
      lockTaken();
      await held;
    });
    await isLocked;
    try {
      const swept = await expireCreditHolds(db, { limit: 3 });
      expect(swept.expired.map((row) => row.holdId)).toContain(otherHold);
    } finally {
      release();
      await locking;
      await expireCreditHolds(db, { limit: 100_000 });
    }
  });
});

describe('what a refused close reports', () => {
  it('settling a due hold that nobody expired reports HOLD_EXPIRED naming no row that does not exist', async () => {
    const userId = await env.newUser();
    const holdId = await dueHold(userId);
    const error = await settleCreditHold(env.adminDb(), { holdId, amount: 1 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(HoldExpiredError);
    const closedBy = (error as HoldExpiredError).closedBy;
    const named =
      closedBy === null
        ? []
        : await env.admin()`select id from "CreditTransaction" where id = ${closedBy}`;
    // closedBy is documented as null "when it expired and the expiry is not written yet".
    expect({ closedBy, exists: named.length === 1 }).toEqual(
      closedBy === null ? { closedBy: null, exists: false } : { closedBy, exists: true },
    );
  });
});

describe('owner DDL on holds that cannot be prevented is found by verifyLedger', () => {
  // A database of its own: these tests leave the ledger broken on purpose.
  const ddl = useAttackEnvironment();
  let owner: postgres.Sql;
  beforeAll(() => {
    owner = ddl.session('owner');
  });

  const takeHold = async (userId: string, amount = 4) =>
    (
      await holdCredits(ddl.adminDb(), {
        userId,
        amount,
        featureType: FEATURE,
        expiresInMs: HOUR,
      })
    ).holdId;

  const kinds = async (userId: string) =>
    (await verifyLedger(ddl.adminDb(), { userId })).violations.map((v) => v.kind);

  it('a ledger write refuses to run while the guard of "CreditHold" is disabled', async () => {
    const userId = await ddl.newUser();
    const outcome = await outcomeOf(
      owner.begin(async (tx) => {
        await tx`alter table "CreditHold" disable trigger credit_hold_guard`;
        await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                 values (${userId}, 1, 'deduct', ${FEATURE})`;
      }),
    );
    expect(outcome).toBe('BC009');
    expect(await ddl.state(userId)).toMatchObject({ credits: 10, rows: 2 });
  });

  it("an open hold's listing deleted with the guard disabled is reported", async () => {
    const userId = await ddl.newUser();
    const holdId = await takeHold(userId);
    await owner.begin(async (tx) => {
      await tx`alter table "CreditHold" disable trigger credit_hold_guard`;
      await tx`delete from "CreditHold" where id = ${holdId}`;
      await tx`alter table "CreditHold" enable trigger credit_hold_guard`;
    });
    expect(await kinds(userId)).toEqual(['open_holds_mismatch']);
  });

  it("an open hold's listing moved past a day with the guard disabled is reported", async () => {
    const userId = await ddl.newUser();
    const holdId = await takeHold(userId);
    await owner.begin(async (tx) => {
      await tx`alter table "CreditHold" disable trigger credit_hold_guard`;
      await tx`update "CreditHold" set expires_at = 'infinity' where id = ${holdId}`;
      await tx`alter table "CreditHold" enable trigger credit_hold_guard`;
    });
    expect(await kinds(userId)).toEqual(['open_holds_mismatch']);
  });

  it('a voided hold listed again with the guard disabled is reported', async () => {
    const userId = await ddl.newUser();
    const holdId = await takeHold(userId);
    await voidCreditHold(ddl.adminDb(), { holdId });
    await owner.begin(async (tx) => {
      await tx`alter table "CreditHold" disable trigger credit_hold_guard`;
      await tx`insert into "CreditHold" select id, user_id, amount, feature_type, hold_expires_at, created_at
               from "CreditTransaction" where id = ${holdId}`;
      await tx`alter table "CreditHold" enable trigger credit_hold_guard`;
    });
    expect(await kinds(userId)).toEqual(['open_holds_mismatch']);
  });

  it("a settlement's amount edited with the triggers disabled is reported", async () => {
    const userId = await ddl.newUser();
    const holdId = await takeHold(userId);
    await settleCreditHold(ddl.adminDb(), { holdId, amount: 3 });
    await owner.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`update "CreditTransaction" set amount = 1 where hold_id = ${holdId}`;
      await tx`alter table "CreditTransaction" enable trigger user`;
    });
    expect(await kinds(userId)).toContain('hash_mismatch');
  });

  it('a void rewritten as an expiry, its hash and the head recomputed, is reported as an expiry before the hold was due', async () => {
    const userId = await ddl.newUser();
    const holdId = await takeHold(userId);
    await voidCreditHold(ddl.adminDb(), { holdId });
    await owner.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`alter table "User" disable trigger user`;
      await tx`update "CreditTransaction" t set operation = 'expire',
                 hash = credit_ledger.credit_tx_hash(p.hash, t.id, t.user_id, t.seq, 'expire', t.feature_type, t.amount,
                   t.balance_after, t.created_at, t.idempotency_key, t.refund_of, t.metadata, t.hold_id,
                   t.hold_expires_at, jsonb_strip_nulls(jsonb_build_object('covered_by_plan', t.covered_by_plan, 'actor', t.actor,
                     'source', t.source, 'allocations', t.allocations)))
               from "CreditTransaction" p
               where t.hold_id = ${holdId} and p.user_id = t.user_id and p.seq = t.seq - 1`;
      await tx`update "User" u set ledger_hash = t.hash from "CreditTransaction" t
               where u.id = ${userId} and t.hold_id = ${holdId}`;
      await tx`alter table "CreditTransaction" enable trigger user`;
      await tx`alter table "User" enable trigger user`;
    });
    expect(await kinds(userId)).toEqual(['hold_expiry']);
  });

  it('row-level security enabled on "CreditHold", hiding open holds from the app role\'s sweeps, is reported', async () => {
    const userId = await ddl.newUser();
    await takeHold(userId);
    await owner`alter table "CreditHold" enable row level security`;
    try {
      const hidden = await ddl.session(
        'app',
      )`select id from "CreditHold" where user_id = ${userId}`;
      expect(hidden).toHaveLength(0);
      const result = await verifyLedger(ddl.adminDb());
      expect(result.violations.filter((v) => v.userId === null)).not.toEqual([]);
    } finally {
      await owner`alter table "CreditHold" disable row level security`;
    }
  });

  it('a void moved to another open hold, its hash and the head recomputed, is reported', async () => {
    const userId = await ddl.newUser();
    const first = await takeHold(userId);
    const second = await takeHold(userId);
    await voidCreditHold(ddl.adminDb(), { holdId: first });
    await owner.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`alter table "User" disable trigger user`;
      await tx`update "CreditTransaction" t set hold_id = ${second},
                 hash = credit_ledger.credit_tx_hash(p.hash, t.id, t.user_id, t.seq, t.operation, t.feature_type, t.amount,
                   t.balance_after, t.created_at, t.idempotency_key, t.refund_of, t.metadata, ${second}::uuid,
                   t.hold_expires_at, jsonb_strip_nulls(jsonb_build_object('covered_by_plan', t.covered_by_plan, 'actor', t.actor,
                     'source', t.source, 'allocations', t.allocations)))
               from "CreditTransaction" p
               where t.hold_id = ${first} and p.user_id = t.user_id and p.seq = t.seq - 1`;
      await tx`update "User" u set ledger_hash = t.hash from "CreditTransaction" t
               where u.id = ${userId} and t.hold_id = ${second}`;
      await tx`alter table "CreditTransaction" enable trigger user`;
      await tx`alter table "User" enable trigger user`;
    });
    const found = await kinds(userId);
    expect(found).toContain('open_holds_mismatch');
    expect(found).not.toContain('hash_mismatch');
  });
});
