import { describe, expect, it } from 'vitest';
import { startTestServer } from '../src/index.js';

describe('startTestServer()', () => {
  it('refuses an unknown TEST_POSTGRES_PROVIDER, listing the providers', async () => {
    await expect(startTestServer({ TEST_POSTGRES_PROVIDER: 'sqlite' })).rejects.toThrow(
      'TEST_POSTGRES_PROVIDER=sqlite is not a provider; use one of: url, embedded.',
    );
  });

  it('forced to url without TEST_DATABASE_URL, says what it tried and why it failed', async () => {
    await expect(startTestServer({ TEST_POSTGRES_PROVIDER: 'url' })).rejects.toThrow(
      'No PostgreSQL for the tests. Tried:\n- url: TEST_DATABASE_URL is not set',
    );
  });

  it('forced to url with an unreachable server, names the error', async () => {
    const error = await startTestServer({
      TEST_POSTGRES_PROVIDER: 'url',
      TEST_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/postgres',
    }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/Tried:\n- url: .*ECONNREFUSED/);
  });
});
