import postgres from 'postgres';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  expireCreditHolds,
  ForeignLedgerReferenceError,
  holdCredits,
  verifyLedger,
} from '../../src/credits/index.js';
import { useAttackEnvironment } from './attack-env.js';

// PostgreSQL lets any role with REFERENCES on a table (part of GRANT ALL) and CREATE on some
// schema point a foreign key at it. Pointed at "CreditHold"(id) and given a victim's hold id,
// it keeps that hold from ever closing: once due, every write of the user, settle, void and
// the sweeper failed with 23503, and credits:verify said OK. The ledger now refuses to write
// at all while a table the ledger's owner does not own references the trail or
// "CreditHold", naming the constraint; verify reports every such reference.

const env = useAttackEnvironment();
let app: postgres.Sql;
let owner: postgres.Sql;
let appDb: Database;
const FEATURE = 'chat_tool_call';

beforeAll(async () => {
  await env.grantAllToApp();
  app = env.session('app');
  owner = env.session('owner');
  appDb = env.packageAs('app');
  await app.unsafe('create schema app_pins');
});

const dropped: { as: postgres.Sql; table: string }[] = [];
afterEach(async () => {
  for (const { as, table } of dropped.splice(0)) await as.unsafe(`drop table if exists ${table}`);
});

async function pinTable(as: postgres.Sql, table: string, references: string) {
  await as.unsafe(`create table ${table} (pinned uuid references ${references})`);
  dropped.push({ as, table });
}

describe('a foreign key onto a ledger table', () => {
  it('of the app role onto "CreditHold", pinning a victim\'s hold: every write refuses, naming it, and nothing changes', async () => {
    const victim = await env.newUser();
    const other = await env.newUser();
    const { holdId } = await holdCredits(env.adminDb(), {
      userId: victim,
      amount: 2,
      featureType: FEATURE,
    });
    await pinTable(app, 'app_pins.pin_hold', 'public."CreditHold"(id)');
    await app.unsafe(`insert into app_pins.pin_hold values ('${holdId}')`);
    const before = await env.state(victim);
    const error = await deductCredits(appDb, {
      userId: victim,
      amount: 1,
      featureType: FEATURE,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ForeignLedgerReferenceError);
    expect(error).toMatchObject({ code: 'FOREIGN_LEDGER_REFERENCE' });
    expect((error as ForeignLedgerReferenceError).constraints).toContain('app_pins.pin_hold');
    // Another user's writes refuse too (and creating a user, which writes opening rows): the
    // census does not depend on whose hold is pinned.
    await expect(env.newUser()).rejects.toMatchObject({ code: 'BC019' });
    await expect(
      deductCredits(env.adminDb(), { userId: other, amount: 1, featureType: FEATURE }),
    ).rejects.toThrow(ForeignLedgerReferenceError);
    expect(await env.state(victim)).toEqual(before);
  });

  it('of the app role onto the trail: writes refuse too (the row could never be deleted with its user)', async () => {
    const userId = await env.newUser();
    await pinTable(app, 'app_pins.pin_row', 'public."CreditTransaction"(id)');
    await expect(deductCredits(appDb, { userId, amount: 1, featureType: FEATURE })).rejects.toThrow(
      ForeignLedgerReferenceError,
    );
  });

  it("once the app role's constraint is gone, writes go on", async () => {
    const userId = await env.newUser();
    await pinTable(app, 'app_pins.pin_gone', 'public."CreditHold"(id)');
    await app.unsafe('drop table app_pins.pin_gone');
    await expect(
      deductCredits(appDb, { userId, amount: 1, featureType: FEATURE }),
    ).resolves.toMatchObject({ balance: 9 });
  });

  it('credits:verify reports a foreign key of another role onto "CreditHold" or the trail', async () => {
    await pinTable(app, 'app_pins.pin_verify', 'public."CreditHold"(id)');
    const result = await verifyLedger(env.adminDb());
    expect(result.violations).toContainEqual(
      expect.objectContaining({
        kind: 'foreign_key_reference',
        detail: expect.stringContaining(
          'of app_pins.pin_verify references public."CreditHold" from a table the ledger\'s owner does not own',
        ),
      }),
    );
  });

  it("the owner's own on the trail (a document that references its charge) is allowed, and verify is content", async () => {
    const userId = await env.newUser();
    await pinTable(owner, 'public.document_charge', 'public."CreditTransaction"(id)');
    const { transaction } = await deductCredits(env.adminDb(), {
      userId,
      amount: 1,
      featureType: FEATURE,
    });
    await owner.unsafe(`insert into public.document_charge values ('${transaction.id}')`);
    await expect(
      deductCredits(env.adminDb(), { userId, amount: 1, featureType: FEATURE }),
    ).resolves.toMatchObject({ balance: 8 });
    const result = await verifyLedger(env.adminDb());
    expect(result.violations.filter((v) => v.kind === 'foreign_key_reference')).toEqual([]);
  });

  it("the owner's own reference does not hide another role's beside it: writes still refuse, naming only the other", async () => {
    const userId = await env.newUser();
    await pinTable(owner, 'public.document_charge_kept', 'public."CreditTransaction"(id)');
    await pinTable(app, 'app_pins.pin_beside', 'public."CreditTransaction"(id)');
    const error = await deductCredits(appDb, { userId, amount: 1, featureType: FEATURE }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ForeignLedgerReferenceError);
    const named = (error as ForeignLedgerReferenceError).constraints;
    expect(named).toContain('app_pins.pin_beside');
    expect(named).not.toContain('document_charge_kept');
  });

  it('the owner\'s own onto "CreditHold" is the owner\'s to answer for: verify reports it, and the sweeper expires every other due hold, warning of the pinned one', async () => {
    const pinned = await env.newUser();
    const free = await env.newUser();
    const a = await holdCredits(env.adminDb(), {
      userId: pinned,
      amount: 2,
      featureType: FEATURE,
      expiresInMs: 1000,
    });
    await holdCredits(env.adminDb(), {
      userId: free,
      amount: 3,
      featureType: FEATURE,
      expiresInMs: 1000,
    });
    await pinTable(owner, 'public.hold_note', 'public."CreditHold"(id)');
    await owner.unsafe(`insert into public.hold_note values ('${a.holdId}')`);
    const result = await verifyLedger(env.adminDb());
    expect(result.violations).toContainEqual(
      expect.objectContaining({
        kind: 'foreign_key_reference',
        detail: expect.stringContaining('the holds it points at can never close'),
      }),
    );
    // Wait until both are due (the ledger's clock, not this process's).
    await env.admin()`select pg_sleep(1.1)`;
    const warnings: string[] = [];
    const sweeper = postgres(env.url(), {
      max: 1,
      onnotice: (notice) => warnings.push(String(notice.message)),
    });
    const expired =
      await sweeper`select user_id from credit_ledger.credit_holds_expire(100)`.finally(() =>
        sweeper.end(),
      );
    expect(expired.map((r) => r.user_id)).toContain(free);
    expect(expired.map((r) => r.user_id)).not.toContain(pinned);
    expect(warnings.join('\n')).toContain(`hold ${a.holdId} of user ${pinned} was not expired`);
    await owner.unsafe(`delete from public.hold_note`);
    const after = await expireCreditHolds(env.adminDb(), { userId: pinned });
    expect(after.expired.map((row) => row.holdId)).toEqual([a.holdId]);
  });
});
