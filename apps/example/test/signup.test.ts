import { createDatabase, type Database } from '@bragdoc/database';
import type { FeatureType } from '@bragdoc/database/schema';
import { featureTypeValues } from '@bragdoc/database/schema';
import { useTestDatabase } from '@bragdoc/test-postgres';
import { beforeEach, describe, expect, it } from 'vitest';
import { history, signUp } from '../src/index.js';

const database = useTestDatabase({ connect: (url) => createDatabase(url, { max: 2 }) });
let db: Database;
beforeEach(() => {
  db = database().db;
});

describe('an app using @bragdoc/database', () => {
  it('signs a user up with the default balances, each explained by a row of the trail', async () => {
    const created = await signUp(db, 'example@bragdoc.ai', 'Example');
    expect(created).toMatchObject({ freeCredits: 10, freeChatMessages: 20, ledgerSeq: 2 });
    const trail = await history(db, created.id);
    expect(trail.map((t) => [t.seq, t.operation, t.featureType, t.amount, t.metadata])).toEqual([
      [2, 'grant', 'document_generation', 10, { reason: 'welcome' }],
      [1, 'grant', 'chat_message', 20, { reason: 'opening_balance' }],
    ]);
  });

  it('leaves no user behind when sign-up fails (one transaction)', async () => {
    await signUp(db, 'twice@bragdoc.ai');
    await expect(signUp(db, 'twice@bragdoc.ai')).rejects.toThrow();
    const rows = await db.query.user.findMany({
      where: (u, { eq }) => eq(u.email, 'twice@bragdoc.ai'),
    });
    expect(rows).toHaveLength(1);
  });

  it('sees the enum values the package exports for runtime validation', () => {
    const features: readonly FeatureType[] = featureTypeValues;
    expect(features).toEqual([
      'document_generation',
      'workstream_clustering',
      'chat_tool_call',
      'chat_message',
      // A grant of credits, or its expiry, is for no feature.
      'none',
    ]);
  });
});
