import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LEDGER_SQLSTATES, toCreditsError } from '../../src/credits/errors.js';
import * as credits from '../../src/credits/index.js';
import { packageDir } from '../run-script.js';

// The ledger's error codes are wired in several places: the SQL that raises them, the
// registry and toCreditsError that turn them into typed errors, the package's exports and the
// README. A code added to a rule and forgotten in any of them is found here.

function sourcesRaising(): Map<string, string[]> {
  const dir = path.join(packageDir, 'ledger');
  const found = new Map<string, string[]>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.sql'))
        // RAISE … USING ERRCODE in PL/pgSQL; credit_refuse('BC…', …) in the SQL rules.
        for (const [, code = ''] of readFileSync(full, 'utf8').matchAll(
          /(?:ERRCODE = |"credit_refuse"\()'(BC\d{3})'/g,
        ))
          found.set(code, [...(found.get(code) ?? []), path.relative(dir, full)]);
    }
  };
  walk(dir);
  return found;
}

const readme = readFileSync(path.join(packageDir, '..', '..', 'README.md'), 'utf8');
const registered = Object.entries(LEDGER_SQLSTATES) as [string, readonly string[]][];

describe("the registry of the ledger's error codes", () => {
  it('holds every BC code a ledger source raises, and none that no source raises', () => {
    expect([...sourcesRaising().keys()].sort()).toEqual(registered.map(([code]) => code).sort());
  });

  it('gives every code a typed error', () => {
    expect(registered.filter(([, codes]) => codes.length === 0)).toEqual([]);
  });

  it.each(registered)(
    '%s becomes one of its typed errors (%s), exported by the package',
    (sqlState, codes) => {
      // The DETAIL fields the rules send that a constructor parses (times).
      const detail = JSON.stringify({
        expiresAt: '2030-01-01T00:00:00.000Z',
        resetsAt: '2030-01-01T00:00:00.000Z',
      });
      const error = toCreditsError({
        code: sqlState,
        severity: 'ERROR',
        detail,
        message: 'refused',
      });
      expect(error).toBeInstanceOf(credits.CreditsError);
      expect(codes).toContain((error as { code: string }).code);
      expect(Object.values(credits)).toContain((error as object).constructor);
    },
  );

  it.each(registered.flatMap(([, codes]) => codes))('the README names %s', (code) => {
    expect(readme).toContain(`\`${code}\``);
  });

  it("the README's range of raw SQLSTATEs reaches the last one", () => {
    const last = registered
      .map(([code]) => code)
      .sort()
      .at(-1);
    expect(readme).toContain(`\`BC001\`–\`${last}\``);
  });
});
