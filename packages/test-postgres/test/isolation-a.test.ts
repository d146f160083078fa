import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { useTestDatabase } from '../src/index.js';
import { fillAndCount } from './isolation.js';

const database = useTestDatabase({
  connect: (url) => {
    const sql = postgres(url, { max: 2, onnotice: () => {} });
    return { sql, close: () => sql.end() };
  },
});

describe('isolation between parallel files (a)', () => {
  it('sees only its own rows', async () => {
    expect(await fillAndCount(database().sql, 'a')).toEqual({ a: 500 });
  });
});
