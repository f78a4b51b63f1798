/// <reference lib="dom" />
// Functions passed to page.evaluate run in the browser, hence the DOM types.
import fs from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';

/** Screenshots (and traces of failed tests) stay here after the run, for CI to keep as artifacts. */
export const artifactsDir = path.resolve(import.meta.dirname, '../../../test-results/e2e');

/** Debian's Chromium; the flags keep it from reaching for the network this machine does not have. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env['BFG_CHROMIUM'] ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export async function newContext(
  browser: Browser,
  baseURL: string,
  options: { javaScriptEnabled?: boolean } = {},
): Promise<BrowserContext> {
  const context = await browser.newContext({ baseURL, viewport: { width: 1280, height: 900 }, ...options });
  await context.tracing.start({ screenshots: true, snapshots: true });
  return context;
}

/** Keeps a trace of a context whose test failed (open with `npx playwright show-trace`). */
export async function closeContext(context: BrowserContext, name: string, failed: boolean): Promise<void> {
  if (failed) {
    await fs.mkdir(path.join(artifactsDir, 'traces'), { recursive: true });
    await context.tracing.stop({ path: path.join(artifactsDir, 'traces', `${name.replace(/[^a-z0-9]+/gi, '-')}.zip`) });
  } else {
    await context.tracing.stop();
  }
  await context.close();
}

/**
 * The hooks every e2e file needs: one browser for the file, a fresh traced context and page per
 * test (its trace kept when the test failed). Read `page` inside tests or hooks registered after.
 */
export function pagePerTest(baseURL: string): { readonly browser: Browser; readonly page: Page } {
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let page: Page | undefined;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });
  beforeEach(async () => {
    context = await newContext(browser!, baseURL);
    page = await context.newPage();
  });
  afterEach(async (ctx) => {
    if (context) await closeContext(context, ctx.task.name, ctx.task.result?.state === 'fail');
  });
  return {
    get browser() {
      return browser!;
    },
    get page() {
      return page!;
    },
  };
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await fs.mkdir(path.join(artifactsDir, 'screenshots'), { recursive: true });
  await page.screenshot({ path: path.join(artifactsDir, 'screenshots', `${name}.png`), fullPage: true });
}

export async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.goto('/login');
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((url) => url.pathname === '/'), page.click('button[type=submit]')]);
}

/**
 * Marks the document; `stillSameDocument` is true only while no reload or full navigation has
 * happened since — how the tests prove that changes arrived live.
 */
export async function markDocument(page: Page): Promise<void> {
  await page.evaluate(() => ((window as unknown as { __bfgMark: number }).__bfgMark = 1));
}
export function stillSameDocument(page: Page): Promise<boolean> {
  return page.evaluate(() => (window as unknown as { __bfgMark?: number }).__bfgMark === 1);
}

/**
 * Records every text the element matching `selector` shows from now on (a MutationObserver in
 * the page), so a test can check that a transient state (a pending label) was really shown.
 */
export async function recordTexts(page: Page, selector: string): Promise<() => Promise<string[]>> {
  const key = `__bfgTexts${Math.random().toString(36).slice(2)}`;
  await page.evaluate(
    ({ selector, key }) => {
      const seen: string[] = [];
      (window as unknown as Record<string, string[]>)[key] = seen;
      const note = () => {
        const text = document.querySelector(selector)?.textContent?.trim() ?? '';
        if (seen.at(-1) !== text) seen.push(text);
      };
      note();
      new MutationObserver(note).observe(document.body, {
        subtree: true,
        childList: true,
        characterData: true,
        attributes: true,
      });
    },
    { selector, key },
  );
  return () => page.evaluate((key) => [...(window as unknown as Record<string, string[]>)[key]!], key);
}
