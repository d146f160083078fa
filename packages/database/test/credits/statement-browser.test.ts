/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The page functions below run in chromium, where the DOM is.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { packageDir, runScript } from '../run-script.js';
import { buildStory, type Story } from './story.js';

// Debian's chromium (installed by .ci/run), never a browser downloaded at run time.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const missing = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is missing (apt-get install -y chromium, or set CHROMIUM_PATH): the browser test of credits:trail --html is skipped`;
if (missing) console.warn(`statement-browser.test.ts: skipped: ${missing}`);

/** Where the page and its screenshot are left for a reviewer to look at. */
const outputDir = path.join(packageDir, 'test-output');
const provider = process.env.TEST_DATABASE_URL ? 'pg-url' : 'embedded';
const htmlFile = path.join(outputDir, `credits-trail-${provider}.html`);
const screenshot = path.join(outputDir, `credits-trail-${provider}.png`);

let db: Database;
let close: () => Promise<void>;
let url: string;
let story: Story;
let browser: Browser;

describe.skipIf(missing !== undefined)('credits:trail --html in a real browser (chromium)', () => {
  beforeAll(async () => {
    const database = await createTestDatabase({ connect: (u) => createDatabase(u, { max: 2 }) });
    ({ db, close, url } = database);
    story = await buildStory(db);
    // An unexplained balance: the owner adds 100 credits behind the ledger's back.
    await db.transaction(async (tx) => {
      await tx.execute(sql`alter table "User" disable trigger user`);
      await tx.execute(
        sql`update "User" set free_credits = free_credits + 100 where id = ${story.userId}`,
      );
      await tx.execute(sql`alter table "User" enable trigger user`);
    });
    mkdirSync(outputDir, { recursive: true });
    const written = await runScript('scripts/credits-trail.ts', [story.email, '--html', htmlFile], {
      env: { DATABASE_URL: url },
    });
    if (written.code !== 0) throw new Error(`credits:trail failed: ${written.stderr}`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // As root, chromium runs only without its sandbox.
      args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await close?.();
  });

  async function open() {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const requests: string[] = [];
    page.on('request', (request) => {
      if (request.url() !== pathToFileURL(htmlFile).href) requests.push(request.url());
    });
    // Nothing but the page itself may load: anything else is refused and recorded above.
    await context.route(
      (u) => u.href !== pathToFileURL(htmlFile).href,
      (route) => route.abort(),
    );
    await page.goto(pathToFileURL(htmlFile).href, { waitUntil: 'load' });
    return { page, requests, context };
  }

  it('renders each balance chart as a drawn line with a point per row', async () => {
    const { page, context } = await open();
    try {
      for (const series of ['credits', 'chatMessages']) {
        const chart = page.locator(`svg[data-chart="${series}"]`);
        const box = await chart.boundingBox();
        expect(box?.width).toBeGreaterThan(400);
        expect(box?.height).toBeGreaterThan(100);
        const line = await chart.locator('polyline').evaluate((el) => {
          const b = (el as SVGGraphicsElement).getBBox();
          return {
            width: b.width,
            points: (el as SVGPolylineElement).points.numberOfItems,
            stroke: getComputedStyle(el).stroke,
          };
        });
        expect(line.width).toBeGreaterThan(100);
        // A step chart: a point per row and one more per step between rows.
        expect(line.points).toBe(17 * 2 - 1);
        expect(line.stroke).not.toBe('none');
      }
      await page.screenshot({ path: screenshot, fullPage: true });
      console.log(`statement-browser.test.ts: screenshot written to ${screenshot}`);
      expect(existsSync(screenshot)).toBe(true);
    } finally {
      await context.close();
    }
  });

  it('shows every trail row with the balances after it, as the database has them', async () => {
    const { page, context } = await open();
    try {
      const shown = await page.locator('table[data-table="trail"] tbody tr').evaluateAll((rows) =>
        rows.map((row) => {
          const cells = Array.from(row.querySelectorAll('td')).map(
            (td) => td.textContent?.trim() ?? '',
          );
          return [Number(cells[0]), Number(cells[5]), Number(cells[6])];
        }),
      );
      const expected = rowsOf<{ seq: number; credits: number; chats: number }>(
        await db.execute(sql`
          select t.seq::int,
                 coalesce((select c.balance_after from "CreditTransaction" c
                            where c.user_id = t.user_id and c.seq <= t.seq and c.feature_type <> 'chat_message'
                            order by c.seq desc limit 1), 0) as credits,
                 coalesce((select c.balance_after from "CreditTransaction" c
                            where c.user_id = t.user_id and c.seq <= t.seq and c.feature_type = 'chat_message'
                            order by c.seq desc limit 1), 0) as chats
            from "CreditTransaction" t where t.user_id = ${story.userId} order by t.seq desc`),
      );
      expect(shown).toEqual(expected.map((e) => [e.seq, e.credits, e.chats]));
      // The balance card is the user's balance now: the owner's 100 unexplained credits included.
      const [user] = rowsOf<{ credits: number }>(
        await db.execute(
          sql`select free_credits as credits from "User" where id = ${story.userId}`,
        ),
      );
      expect(await page.locator('[data-balance="credits"] b').textContent()).toBe(
        String(user?.credits),
      );
    } finally {
      await context.close();
    }
  });

  it("shows verify's finding for the unexplained balance", async () => {
    const { page, context } = await open();
    try {
      await expect.poll(() => page.locator('[data-verify="failed"]').isVisible()).toBe(true);
      const finding = page.locator('[data-finding="balance_mismatch"]');
      expect(await finding.isVisible()).toBe(true);
      expect(await finding.textContent()).toContain('balance_mismatch');
    } finally {
      await context.close();
    }
  });

  it('needs nothing from the network: the page made no request but itself', async () => {
    const { page, requests, context } = await open();
    try {
      await page.waitForLoadState('networkidle');
      expect(requests).toEqual([]);
      expect(await page.evaluate(() => document.scripts.length)).toBe(0);
    } finally {
      await context.close();
    }
  });
});
