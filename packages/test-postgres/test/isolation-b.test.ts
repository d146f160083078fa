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

describe('isolation between parallel files (b)', () => {
  it('sees only its own rows', async () => {
    expect(await fillAndCount(database().sql, 'b')).toEqual({ b: 500 });
  });
});
