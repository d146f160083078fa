import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  getCreditBalance,
  holdCredits,
  InsufficientCreditsError,
  settleCreditHold,
  voidCreditHold,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { createUser, PLAIN_FEATURE } from './fixtures.js';

// The shape docs/MOVING-FROM-A-COUNTER.md gives a streaming route: decide 402 before the
// first byte (a hold), stream, then settle what it cost or void on failure. A process killed
// mid-stream settles nothing: the hold expires and the credits come back.

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

/** The route of the guide, with the LLM call replaced by `generate`. */
async function route(
  userId: string,
  generate: (emit: (chunk: string) => void) => Promise<number>,
  expiresInMs = 600_000,
): Promise<{ status: number; body: string[]; error?: unknown }> {
  let hold: Awaited<ReturnType<typeof holdCredits>>;
  try {
    hold = await holdCredits(db, { userId, amount: 5, featureType: PLAIN_FEATURE, expiresInMs });
  } catch (error) {
    if (error instanceof InsufficientCreditsError) return { status: 402, body: [] };
    throw error;
  }
  const body: string[] = [];
  const stream = new ReadableStream<string>({
    async start(controller) {
      try {
        const used = await generate((chunk) => controller.enqueue(chunk));
        await settleCreditHold(db, { holdId: hold.holdId, amount: used });
        controller.close();
      } catch (error) {
        await voidCreditHold(db, { holdId: hold.holdId, reason: 'stream failed' });
        controller.error(error);
      }
    },
  });
  try {
    for await (const chunk of stream as unknown as AsyncIterable<string>) body.push(chunk);
    return { status: 200, body };
  } catch (error) {
    return { status: 200, body, error };
  }
}

describe('a streaming route on holds', () => {
  it('streams, then charges what the stream cost (at most the hold) and gives the rest back', async () => {
    const u = await createUser(db);
    const result = await route(u.id, async (emit) => {
      emit('a');
      emit('b');
      return 3;
    });
    expect(result).toEqual({ status: 200, body: ['a', 'b'] });
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(7);
  });

  it('answers 402 before the first byte when the balance is short, charging nothing', async () => {
    const u = await createUser(db, { freeCredits: 4 });
    let generated = false;
    const result = await route(u.id, async () => {
      generated = true;
      return 1;
    });
    expect(result.status).toBe(402);
    expect(generated).toBe(false);
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(4);
  });

  it('gives the whole hold back when the stream fails after it started', async () => {
    const u = await createUser(db);
    const result = await route(u.id, async (emit) => {
      emit('partial');
      throw new Error('model timed out');
    });
    expect(result.body).toEqual(['partial']);
    expect(String(result.error)).toContain('model timed out');
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(10);
  });

  it('gives the credits back when the process dies mid-stream and never settles: the hold expires', async () => {
    const u = await createUser(db);
    // A stream whose process is killed: it neither settles nor voids.
    await holdCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: PLAIN_FEATURE,
      expiresInMs: 1000,
    });
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(5);
    // Waits out the hold on the server's clock (the ledger's), not this process's.
    await db.execute(sql`select pg_sleep(1.1)`);
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(10);
  });
});
