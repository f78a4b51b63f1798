import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import postgres from 'postgres';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { addUser } from '@bfg/local';
import { markDocument, pagePerTest, screenshot, signIn, stillSameDocument } from './support/browser.ts';

/**
 * The Topics page no longer follows discovered_topic row by row (issue 9): the site's `changes`
 * broadcast names the connections whose topics changed, and the page reloads its view. A topic
 * published with a real MQTT client appears without a navigation, for one connection and for all,
 * and no discovered_topic row crosses the page's Realtime socket.
 */

const webUrl = inject('e2eWebUrl');
const sql = postgres(inject('e2eDatabaseUrl'), { max: 1, onnotice: () => undefined });
const admin = {
  email: `topics-${randomBytes(3).toString('hex')}@e2e.test`,
  password: randomBytes(12).toString('base64url'),
};

const session = pagePerTest(webUrl);
let page: Page;
let demoConnectionId: number;

beforeAll(async () => {
  await addUser(sql, { ...admin, role: 'admin' });
  const [row] = await sql<
    { id: string }[]
  >`select c.id from mqtt_connection c join site s on s.id = c.site_id where s.slug = 'demo'`;
  demoConnectionId = Number(row!.id);
});
afterAll(async () => {
  await sql.end({ timeout: 5 });
});
beforeEach(() => {
  page = session.page;
});

describe('Topics page, live through the site channel', () => {
  it.each([
    ['one connection', () => `/topics?connection=${demoConnectionId}`],
    ['all connections', () => '/topics'],
  ])('shows a newly published topic without a reload (%s)', async (_name, path) => {
    await signIn(page, admin.email, admin.password);
    // Everything the server sends on the page's sockets (JSON text, or binary broadcasts whose
    // payload is JSON after a short header).
    const frames: string[] = [];
    page.on('websocket', (ws) =>
      ws.on('framereceived', (frame) => frames.push(Buffer.from(frame.payload).toString('utf8'))),
    );
    await page.goto(path());
    await page.locator('[data-testid=live-status][data-status=live]').waitFor();
    await markDocument(page);
    const topic = `demo/e2e-live/${randomBytes(4).toString('hex')}`;
    const client = await mqtt.connectAsync(inject('e2eBrokerUrl'), {
      clientId: `e2e-topics-${randomBytes(3).toString('hex')}`,
    });
    try {
      await client.publishAsync(topic, '{"hello": "live"}', { qos: 1 });
    } finally {
      await client.endAsync();
    }
    const row = page.locator('[data-testid=topic-row]', {
      has: page.locator('[data-testid=topic]', { hasText: topic }),
    });
    // Discovery writes every 2 s; the broadcast and the page's reload follow within a second.
    await row.waitFor({ timeout: 10_000 });
    expect(await row.locator('[data-testid=message-count]').textContent()).toBe('1');
    expect(await stillSameDocument(page)).toBe(true);
    expect(
      frames.some((f) => f.includes('"parsing_log":[')),
      'a `changes` broadcast reached the page',
    ).toBe(true);
    expect(
      frames.filter((f) => f.includes('discovered_topic')),
      'discovered_topic on the socket',
    ).toEqual([]);
    await screenshot(page, `15-topics-live-${path().includes('connection=') ? 'one' : 'all'}`);
  });
});
