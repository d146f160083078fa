import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createDatabase } from '../src/client.js';
import { type LedgerAnchor, verifyLedger } from '../src/credits/verify.js';
import { redactUrl } from '../src/migrate/redact.js';
import { runCommand } from './run-command.js';

const usage = `Usage: pnpm credits:verify [--user ID] [--limit N] [--heads FILE] [--write-heads FILE]

Checks the credits ledger of DATABASE_URL: its triggers and functions are those the
migrations define, and enabled; every user's trail is gapless, hash-chained and adds up to
its balances. Prints each violation and a summary; exits 1 on any. Reads the database only.

  --heads FILE        also check that every head saved in FILE is still in its trail, unchanged
                      (finds a rewrite that recomputed the whole chain)
  --write-heads FILE  save every user's head to FILE (JSON), as verified, to keep outside the
                      database; nothing is saved when the ledger does not verify`;

/** What --write-heads saves: every user's head, and the ledger's catalog fingerprint. */
interface HeadsFile {
  fingerprint: string;
  heads: LedgerAnchor[];
}

function readHeads(file: string): HeadsFile {
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<HeadsFile> | null;
  if (
    typeof parsed?.fingerprint !== 'string' ||
    !Array.isArray(parsed.heads) ||
    !parsed.heads.every(
      (h) =>
        typeof h?.userId === 'string' &&
        Number.isSafeInteger(h?.seq) &&
        typeof h?.hash === 'string',
    )
  ) {
    throw new SyntaxError(`${file} is not a file of heads written by --write-heads.`);
  }
  return { fingerprint: parsed.fingerprint, heads: parsed.heads };
}

async function run(): Promise<number> {
  const { values } = parseArgs({
    options: {
      user: { type: 'string' },
      limit: { type: 'string', default: '1000' },
      heads: { type: 'string' },
      'write-heads': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const limit = Number(values.limit);
  if (!Number.isSafeInteger(limit) || limit < 1) {
    console.error(`--limit must be a positive whole number, got "${values.limit}".`);
    return 2;
  }
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error(
      'credits:verify checks the database in DATABASE_URL, and it is not set. For the local ' +
        'one, start it with `pnpm db:dev` and set DATABASE_URL to the URL it prints.',
    );
    return 2;
  }
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:verify' });
  const started = performance.now();
  try {
    const saved = values.heads === undefined ? undefined : readHeads(values.heads);
    const result = await verifyLedger(db, {
      limit,
      ...(values.user === undefined ? {} : { userId: values.user }),
      ...(saved ? { anchors: saved.heads, fingerprint: saved.fingerprint } : {}),
      readHeads: values['write-heads'] !== undefined,
    });
    // Grouped by kind, each with its count first: a thousand of one kind must not hide the
    // one of another (verifyLedger's list holds some of every kind before more of any).
    const kinds = Object.entries(result.violationsByKind).sort(([a], [b]) => a.localeCompare(b));
    for (const [kind, n] of kinds) {
      const listed = result.violations.filter((v) => v.kind === kind);
      console.log(`✗ ${kind}: ${n}${listed.length < n ? ` (${listed.length} listed)` : ''}`);
      for (const v of listed) {
        const where =
          v.userId === null ? 'ledger' : `user ${v.userId}${v.seq === null ? '' : ` seq ${v.seq}`}`;
        console.log(`  ✗ ${v.kind.padEnd(24)} ${where}: ${v.detail}`);
      }
    }
    if (result.violationCount > result.violations.length) {
      console.log(`  … and ${result.violationCount - result.violations.length} more (--limit)`);
    }
    const took = `${Math.round(performance.now() - started)} ms`;
    const scope = `${result.users} user${result.users === 1 ? '' : 's'}, ${result.rows} row${result.rows === 1 ? '' : 's'}`;
    console.log(
      result.ok
        ? `credits:verify: OK, ${redactUrl(url)}: ${scope} checked in ${took}.`
        : `credits:verify: ${result.violationCount} violation${result.violationCount === 1 ? '' : 's'} in ${redactUrl(url)} (${scope}, ${took}).`,
    );
    if (saved)
      console.log(
        `credits:verify: checked ${saved.heads.length} saved heads from ${values.heads}.`,
      );
    if (values['write-heads'] !== undefined && result.heads) {
      // Heads of a ledger that did not verify would make the next check pass over the damage.
      if (!result.ok) {
        console.log(
          `credits:verify: not saving heads to ${values['write-heads']}: the ledger did not verify.`,
        );
      } else {
        const file: HeadsFile = {
          fingerprint: result.heads.fingerprint,
          heads: result.heads.anchors,
        };
        writeFileSync(values['write-heads'], `${JSON.stringify(file, null, 1)}\n`);
        console.log(
          `credits:verify: saved ${file.heads.length} heads to ${values['write-heads']}, as verified.`,
        );
      }
    }
    return result.ok ? 0 : 1;
  } finally {
    await close();
  }
}

runCommand('credits:verify', run, (error) => error instanceof SyntaxError);
