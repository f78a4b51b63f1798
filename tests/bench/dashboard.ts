#!/usr/bin/env node
/// <reference lib="dom" />
// Functions passed to page.evaluate run in the browser, hence the DOM types.
/**
 * `npm run bench:dashboard`: how smooth the site page stays while its values pour in. Starts the
 * local stack as `npm start` does (on free ports, data in a temp dir, dashboard built beforehand
 * with `npm run build`), opens the site page of a 200-sensor site in Chromium, and for SECONDS
 * updates 50 of its sensors 20 times a second from SQL. Prints the value updates/s written, the
 * frames/s the page drew and its longest main-thread task — next to the same page idle for the
 * same time, measured first in the same run (the baseline). The e2e suite keeps the behaviour
 * (no long task, the page ends on the stored values); the figures are here, where a busy machine
 * makes a slow run, not a failed test.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import type { Page } from 'playwright-core';
import { addUser, startLocalStack } from '@bfg/local';
import { launchBrowser, newContext, signIn } from '../e2e/support/browser.ts';
import { freePortStackConfig } from '../support/local-stack-config.ts';
import { makeTempDir } from '../support/temp-dir.ts';
import { waitFor } from '../support/wait-for.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } });
const SECONDS = Number(values.seconds);

/** Counts frames and the longest task from now on; returns a function reading them. */
async function watchFrames(page: Page): Promise<() => Promise<{ fps: number; longest: number }>> {
  await page.evaluate(() => {
    const w = window as unknown as { __frames: number; __longest: number; __since: number; __watch?: number };
    w.__frames = 0;
    w.__longest = 0;
    w.__since = performance.now();
    // One counting loop at a time: an earlier watch's loop stops at its next frame.
    const watch = (w.__watch = (w.__watch ?? 0) + 1);
    const tick = () => {
      if (w.__watch !== watch) return;
      w.__frames++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.__longest = Math.max(w.__longest, e.duration);
    }).observe({ type: 'longtask', buffered: false });
  });
  return () =>
    page.evaluate(() => {
      const w = window as unknown as { __frames: number; __longest: number; __since: number };
      return { fps: w.__frames / ((performance.now() - w.__since) / 1000), longest: w.__longest };
    });
}

async function main(): Promise<void> {
  const dir = await makeTempDir('bench-dashboard');
  const config = await freePortStackConfig(dir.path, { BFG_SIMULATE: 'false' });
  const stack = await startLocalStack(config, () => undefined);
  const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => undefined });
  const browser = await launchBrowser();
  try {
    const admin = {
      email: `bench-${randomBytes(3).toString('hex')}@bench.test`,
      password: randomBytes(12).toString('base64url'),
    };
    await addUser(sql, { ...admin, role: 'admin' });
    const [site] = await sql<
      { id: string }[]
    >`insert into site (slug, name) values ('bench-burst', 'Burst site') returning id`;
    const [gw] = await sql<
      { id: string }[]
    >`insert into gateway (site_id, ident, online) values (${site!.id}, 'gw-burst', true) returning id`;
    const [dl] = await sql<
      { id: string }[]
    >`insert into datalogger (site_id, gateway_id, ident, interval_s) values (${site!.id}, ${gw!.id}, 'dl-burst', 1) returning id`;
    await sql`insert into sensor (site_id, datalogger_id, ident, last_value, last_value_at)
              select ${site!.id}, ${dl!.id}, 's-' || n, 0, now() from generate_series(1, 200) n`;
    const context = await newContext(browser, stack.webUrl!);
    const page = await context.newPage();
    await signIn(page, admin.email, admin.password);
    await page.goto(`/sites/${site!.id}`);
    await page.locator('[data-testid=live-status][data-status=live]').waitFor();

    // Baseline: the same page, idle, for the same time.
    const idle = await watchFrames(page);
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
    const baseline = await idle();

    const busy = await watchFrames(page);
    const started = Date.now();
    let updates = 0;
    // Load pattern: 20 statements/s, each changing 50 of the 200 sensors.
    for (let i = 0; Date.now() - started < SECONDS * 1000; i++) {
      const result =
        await sql`update sensor set last_value = ${i}, last_value_at = now() where site_id = ${site!.id} and id % 4 = ${i % 4}`;
      updates += result.count;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const seconds = (Date.now() - started) / 1000;
    const measured = await busy();
    await sql`update sensor set last_value = 1234.5, last_value_at = now() where site_id = ${site!.id}`;
    await waitFor(
      'every sensor showing the final value',
      async () => (await page.locator('[data-testid=sensor-value]').allTextContents()).every((t) => t === '1,234.5'),
      { timeoutMs: 10_000 },
    );
    await context.close();

    console.log(`bench:dashboard — site page of 200 sensors, ${SECONDS} s each, on this machine\n`);
    console.log('| page | value updates/s written | frames/s | longest main-thread task |');
    console.log('| --- | --- | --- | --- |');
    console.log(`| idle (baseline) | 0 | ${baseline.fps.toFixed(0)} | ${Math.round(baseline.longest)} ms |`);
    console.log(
      `| updating | ${Math.round(updates / seconds)} | ${measured.fps.toFixed(0)} | ${Math.round(measured.longest)} ms |`,
    );
  } finally {
    await browser.close();
    await sql.end({ timeout: 5 });
    await stack.stop();
    await dir.remove();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
