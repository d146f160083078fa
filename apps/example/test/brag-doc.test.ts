import { createDatabase, getCreditBalance, listCreditTransactions } from '@bragdoc/database';
import { useTestDatabase } from '@bragdoc/test-postgres';
import { describe, expect, it } from 'vitest';
import { BRAG_DOC_COST, fakeLlm, generateBragDoc, signUp } from '../src/index.js';

const database = useTestDatabase({ connect: (url) => createDatabase(url, { max: 4 }) });

describe('a feature that charges credits for an LLM call', () => {
  it('charges the document when the LLM answers', async () => {
    const { db } = database();
    const user = await signUp(db, 'writer@bragdoc.ai');
    const result = await generateBragDoc(db, fakeLlm(), {
      userId: user.id,
      prompt: 'Q3',
      requestId: 'r1',
    });
    expect(result).toMatchObject({ ok: true, creditsLeft: 10 - BRAG_DOC_COST });
    expect(await getCreditBalance(db, user.id)).toMatchObject({ freeCredits: 10 - BRAG_DOC_COST });
  });

  it('gives the held credits back when the LLM fails, and still reports the failure', async () => {
    const { db } = database();
    const user = await signUp(db, 'unlucky@bragdoc.ai');
    await expect(
      generateBragDoc(db, fakeLlm([1]), { userId: user.id, prompt: 'Q3', requestId: 'r2' }),
    ).rejects.toThrow('LLM call 1 timed out');
    expect(await getCreditBalance(db, user.id)).toMatchObject({ freeCredits: 10 });
    // Support can see where the credits went, and that they came back.
    const { items } = await listCreditTransactions(db, {
      userId: user.id,
      featureType: 'document_generation',
    });
    expect(items.map((t) => [t.operation, t.amount])).toEqual(
      expect.arrayContaining([
        ['hold', BRAG_DOC_COST],
        ['void', BRAG_DOC_COST],
      ]),
    );
    const voided = items.find((t) => t.operation === 'void');
    const hold = items.find((t) => t.operation === 'hold');
    expect(voided?.holdId).toBe(hold?.id);
  });

  it('does not call the LLM when the user cannot pay', async () => {
    const { db } = database();
    const user = await signUp(db, 'broke@bragdoc.ai');
    const llm = fakeLlm();
    for (let i = 0; i < 5; i++)
      await generateBragDoc(db, llm, { userId: user.id, prompt: 'x', requestId: `r${i}` });
    const result = await generateBragDoc(db, llm, {
      userId: user.id,
      prompt: 'x',
      requestId: 'r-last',
    });
    expect(result).toEqual({
      ok: false,
      reason: 'insufficient_credits',
      required: BRAG_DOC_COST,
      available: 0,
    });
    expect(llm.calls).toBe(5);
  });

  it('over a day of requests with a flaky LLM, charges exactly the successful ones', async () => {
    const { db } = database();
    const user = await signUp(db, 'busy@bragdoc.ai');
    const llm = fakeLlm([2, 3, 5]);
    const outcomes = [];
    for (let i = 0; i < 7; i++) {
      outcomes.push(
        await generateBragDoc(db, llm, { userId: user.id, prompt: 'x', requestId: `d${i}` }).then(
          (r) => (r.ok ? 'charged' : 'refused'),
          () => 'refunded',
        ),
      );
    }
    expect(outcomes).toEqual([
      'charged',
      'refunded',
      'refunded',
      'charged',
      'refunded',
      'charged',
      'charged',
    ]);
    expect(await getCreditBalance(db, user.id)).toMatchObject({
      freeCredits: 10 - 4 * BRAG_DOC_COST,
    });
  });
});
