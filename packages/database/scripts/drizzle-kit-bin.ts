import { createRequire } from 'node:module';
import path from 'node:path';

/** drizzle-kit's CLI entry; its `exports` map hides `bin.cjs`, so go through the main file. */
export const drizzleKitBin = path.join(
  path.dirname(createRequire(import.meta.url).resolve('drizzle-kit')),
  'bin.cjs',
);
