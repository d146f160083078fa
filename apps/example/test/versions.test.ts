import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { deductCredits, getCreditBalance } from '@bragdoc/database';
import * as schema from '@bragdoc/database/schema';
import { useTestDatabase } from '@bragdoc/test-postgres';
import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';

const appRequire = createRequire(import.meta.url);
// Where @bragdoc/database finds its peer dependency, from its own files.
const packageRequire = createRequire(appRequire.resolve('@bragdoc/database'));
// drizzle-orm's exports map hides package.json: read it next to its resolved entry.
const version = (require: NodeJS.Require) =>
  (
    JSON.parse(
      readFileSync(path.join(path.dirname(require.resolve('drizzle-orm')), 'package.json'), 'utf8'),
    ) as { version: string }
  ).version;

const database = useTestDatabase({
  connect: (url) => {
    const client = postgres(url, { max: 2, onnotice: () => {} });
    // The app's own drizzle instance, of the app's drizzle version.
    return { db: drizzle(client, { schema }), close: () => client.end() };
  },
});

describe('an app on another drizzle-orm line than the package is developed with', () => {
  it('shares one drizzle-orm with the package (a peer dependency), the app’s 0.44', () => {
    expect(version(appRequire)).toMatch(/^0\.44\./);
    expect(packageRequire.resolve('drizzle-orm')).toBe(appRequire.resolve('drizzle-orm'));
  });

  it("runs a credit operation inside the app's own drizzle transaction", async () => {
    const { db } = database();
    const [user] = await db
      .insert(schema.user)
      .values({ email: 'peer@bragdoc.ai' })
      .returning({ id: schema.user.id });
    const userId = user?.id ?? '';
    await db.transaction(async (tx) => {
      await deductCredits(tx, { userId, amount: 2, featureType: 'chat_tool_call' });
    });
    expect(await getCreditBalance(db, userId)).toMatchObject({ freeCredits: 8 });
  });
});
