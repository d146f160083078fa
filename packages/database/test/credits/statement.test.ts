import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  type CreditStatement,
  findUser,
  getCreditStatement,
  InvalidInputError,
  renderCreditStatementHtml,
  UserNotFoundError,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { buildStory, type Story } from './story.js';

let db: Database;
let close: () => Promise<void>;
let story: Story;
let statement: CreditStatement;
beforeAll(async () => {
  ({ db, close } = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 4 }),
  }));
  story = await buildStory(db);
  statement = await getCreditStatement(db, { user: story.email });
});
afterAll(() => close());

/** Each trail row's balances after it, from the database: the running sums of what each row moved. */
async function balancesAfterEachRow(userId: string) {
  return rowsOf<{ seq: number; credits: number; chats: number }>(
    await db.execute(sql`
      select t.seq::int,
             coalesce((select c.balance_after from "CreditTransaction" c
                        where c.user_id = t.user_id and c.seq <= t.seq and c.feature_type <> 'chat_message'
                        order by c.seq desc limit 1), 0) as credits,
             coalesce((select c.balance_after from "CreditTransaction" c
                        where c.user_id = t.user_id and c.seq <= t.seq and c.feature_type = 'chat_message'
                        order by c.seq desc limit 1), 0) as chats
        from "CreditTransaction" t where t.user_id = ${userId}
       order by seq desc`),
  );
}

describe('getCreditStatement: a user story for support', () => {
  it('finds the user by id, by e-mail, and by e-mail in another case', async () => {
    expect((await findUser(db, story.userId)).email).toBe(story.email);
    expect((await findUser(db, story.email)).id).toBe(story.userId);
    expect((await findUser(db, story.email.toUpperCase())).id).toBe(story.userId);
    await expect(findUser(db, 'nobody@example.com')).rejects.toBeInstanceOf(UserNotFoundError);
    await expect(findUser(db, ' ')).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('gives the plan, the balances, what open holds take and the grants they are made of', () => {
    expect(statement.user).toMatchObject({ id: story.userId, email: story.email });
    expect(statement.balance).toMatchObject({
      freeCredits: 24,
      heldCredits: 6,
      freeChatMessages: 19,
      plan: { plan: 'free', unlimited: false },
    });
    const sum = statement.balance.grants
      .filter((g) => g.balance === 'free_credits')
      .reduce((n, g) => n + g.remaining, 0);
    expect(sum).toBe(24);
    expect(statement.balance.grants.map((g) => g.source)).toEqual(
      expect.arrayContaining(['opening', 'purchase']),
    );
  });

  it('lists open holds soonest expiry first, marking one past its expiry as overdue', () => {
    expect(statement.holds.map((h) => [h.id, h.overdue])).toEqual([
      [story.holds.overdue, true],
      [story.holds.open, false],
    ]);
  });

  it('reads only: an overdue hold stays held, and nothing is written', async () => {
    const count = async () =>
      rowsOf<{ n: number }>(
        await db.execute(
          sql`select count(*)::int as n from "CreditTransaction" where user_id = ${story.userId}`,
        ),
      )[0]?.n;
    const before = await count();
    await getCreditStatement(db, { user: story.userId });
    expect(await count()).toBe(before);
    expect(statement.rowCount).toBe(before);
  });

  it("inside a caller's read-write transaction, still writes nothing", async () => {
    const count = async () =>
      rowsOf<{ n: number }>(
        await db.execute(
          sql`select count(*)::int as n from "CreditTransaction" where user_id = ${story.userId}`,
        ),
      )[0]?.n;
    const before = await count();
    const inside = await db.transaction((tx) => getCreditStatement(tx, { user: story.userId }));
    expect(await count()).toBe(before);
    expect(inside.holds.find((h) => h.id === story.holds.overdue)?.overdue).toBe(true);
  });

  it('gives the trail newest first with both balances after every row, as the database sums them', async () => {
    expect(statement.rows.map((r) => r.transaction.seq)).toEqual(
      [...statement.rows.map((r) => r.transaction.seq)].sort((a, b) => b - a),
    );
    const expected = await balancesAfterEachRow(story.userId);
    expect(statement.rows.map((r) => [r.transaction.seq, r.credits, r.chatMessages])).toEqual(
      expected.map((e) => [e.seq, e.credits, e.chats]),
    );
    expect(statement.rows[0]?.credits).toBe(statement.balance.freeCredits);
  });

  it('says what each row did to its balance, signed, and what it was for with its metadata', () => {
    for (const [i, row] of statement.rows.entries()) {
      const older = statement.rows.slice(i + 1).find((r) => r.unit === row.unit);
      const before = older ? (row.unit === 'credits' ? older.credits : older.chatMessages) : 0;
      expect(row.change).toBe((row.unit === 'credits' ? row.credits : row.chatMessages) - before);
    }
    const use = statement.rows.find((r) => r.transaction.id === story.deductionId);
    expect(use).toMatchObject({
      change: -3,
      description: 'Used 3 credits for document generation',
    });
    expect(use?.transaction.metadata).toEqual({ documentId: 'doc-42', model: 'gpt-4o' });
    const settle = statement.rows.find((r) => r.transaction.id === story.settlementId);
    expect(settle).toMatchObject({
      change: 1,
      description: `Charged 3 credits for document generation from hold ${story.holds.settled}; 1 of the hold given back`,
    });
  });

  it('links refunds to the charges they refund: a deduction and a settlement', () => {
    const byId = (id: string) => statement.rows.find((r) => r.transaction.id === id);
    expect(byId(story.deductionId)?.refunds.map((f) => f.amount)).toEqual([2]);
    expect(byId(story.settlementId)?.refunds.map((f) => f.amount)).toEqual([1]);
    const refund = byId(byId(story.deductionId)?.refunds[0]?.id ?? '');
    expect(refund?.transaction).toMatchObject({
      refundOf: story.deductionId,
      actor: 'support@bragdoc.example',
    });
  });

  it('cut by limit and since, keeps the same balances on the rows it shows', async () => {
    const newest = await getCreditStatement(db, { user: story.userId, limit: 3 });
    expect(newest.rows).toHaveLength(3);
    expect(newest.rowCount).toBe(statement.rowCount);
    expect(newest.rows.map((r) => [r.credits, r.chatMessages, r.change])).toEqual(
      statement.rows.slice(0, 3).map((r) => [r.credits, r.chatMessages, r.change]),
    );
    const since = statement.rows[4]?.transaction.createdAt as Date;
    const recent = await getCreditStatement(db, { user: story.userId, since });
    expect(recent.rows.every((r) => r.transaction.createdAt >= since)).toBe(true);
    expect(recent.rowCount).toBe(recent.rows.length);
    await expect(getCreditStatement(db, { user: story.userId, limit: 0 })).rejects.toBeInstanceOf(
      InvalidInputError,
    );
  });

  it("includes this user's credits:verify, and its findings when a balance is unexplained", async () => {
    expect(statement.verification).toMatchObject({ ok: true, violationCount: 0 });
    const other = await buildStory(db, 'Edited');
    await db.transaction(async (tx) => {
      await tx.execute(sql`alter table "User" disable trigger user`);
      await tx.execute(
        sql`update "User" set free_credits = free_credits + 100 where id = ${other.userId}`,
      );
      await tx.execute(sql`alter table "User" enable trigger user`);
    });
    const edited = await getCreditStatement(db, { user: other.userId });
    expect(edited.verification?.ok).toBe(false);
    expect(edited.verification?.violations.map((v) => v.kind)).toContain('balance_mismatch');
    expect(renderCreditStatementHtml(edited)).toContain('data-finding="balance_mismatch"');
  });

  it('says it was read on the primary', () => {
    expect(statement.source).toEqual({
      replica: false,
      lastReplayedAt: null,
      lagSeconds: null,
      caughtUp: null,
    });
  });
});

describe('renderCreditStatementHtml', () => {
  it('is one page that fetches nothing: no script, no external link, a policy that forbids both', () => {
    const html = renderCreditStatementHtml(statement);
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(/i);
    expect(html).not.toMatch(/(src|href)="(?!#)/);
    expect(html).toContain("default-src 'none'");
  });

  it('escapes what users and apps wrote (the name, metadata)', () => {
    const html = renderCreditStatementHtml(statement);
    expect(html).toContain('Ada &lt;b&gt;Lovelace&lt;/b&gt;');
    expect(html).not.toContain('<b>Lovelace</b>');
  });

  it('has a row per trail row with its balances, and a chart point per row', () => {
    const html = renderCreditStatementHtml(statement);
    expect(html.match(/<tr id="tx-/g)).toHaveLength(statement.rows.length);
    expect(html).toContain(`data-chart="credits" data-points="${statement.rows.length}"`);
  });
});
