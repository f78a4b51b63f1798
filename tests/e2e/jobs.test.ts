/// <reference lib="dom" />
// Functions passed to locator.evaluate run in the browser, hence the DOM types.
import { randomBytes } from 'node:crypto';
import { runMigrations } from 'graphile-worker';
import postgres from 'postgres';
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { addUser } from '@bfg/local';
import { waitFor } from '../support/wait-for.ts';
import { markDocument, pagePerTest, screenshot, signIn, stillSameDocument } from './support/browser.ts';

/**
 * Issue 12 on the dashboard: a pattern's replay of archived messages shown live on the Topics
 * page, the count of archived messages a pattern would replay shown before it is saved, device
 * presence from the database shown live, and background jobs shown to admins only. The rows the
 * jobs would write are written here from SQL, as the ingestor's jobs (or psql) would, so each
 * step is known exactly.
 */

const webUrl = inject('e2eWebUrl');
const databaseUrl = inject('e2eDatabaseUrl');
const sql = postgres(databaseUrl, { max: 2, onnotice: () => undefined });
const tag = randomBytes(3).toString('hex');
const admin = { email: `jobs-admin-${tag}@e2e.test`, password: randomBytes(12).toString('base64url') };
const member = { email: `jobs-member-${tag}@e2e.test`, password: randomBytes(12).toString('base64url') };
const memberSite = `e2e-jobs-${tag}`;

const session = pagePerTest(webUrl);
let page: Page;
let demoConnectionId: number;

beforeAll(async () => {
  await sql`insert into site (slug, name) values (${memberSite}, 'Jobs member site')`;
  await addUser(sql, { ...admin, role: 'admin' });
  await addUser(sql, { ...member, role: 'member', sites: [memberSite] });
  const [row] = await sql<
    { id: string }[]
  >`select c.id from mqtt_connection c join site s on s.id = c.site_id where s.slug = 'demo'`;
  demoConnectionId = Number(row!.id);
});
afterAll(async () => {
  await sql`delete from site where slug = ${memberSite}`;
  await sql.end({ timeout: 5 });
});
beforeEach(() => {
  page = session.page;
});

/** A pattern of the demo connection, inactive: nothing enqueues a replay of it unless a test asks. */
async function inactivePattern(pattern: string, parser = 'bfg.datalogger-data.v1'): Promise<number> {
  const [row] = await sql<{ id: string }[]>`
    insert into mqtt_topic (connection_id, pattern, parser, is_active)
    values (${demoConnectionId}, ${pattern}, ${parser}, false) returning id`;
  return Number(row!.id);
}

const attr = (locator: Locator, name: string) => locator.getAttribute(name);

describe('replay of archived messages on the Topics page', () => {
  it("shows a pattern's replay progress as the job writes it, without a reload", async () => {
    const pattern = `demo/e2e-replay-${tag}/+gateway/data`;
    const topicId = await inactivePattern(pattern);
    try {
      await sql`insert into backfill_run (topic_id, connection_id) values (${topicId}, ${demoConnectionId})`;
      await signIn(page, admin.email, admin.password);
      await page.goto(`/topics?connection=${demoConnectionId}`);
      await page.locator('[data-testid=live-status][data-status=live]').waitFor();
      await markDocument(page);
      const run = page.locator(`[data-testid=pattern-row][data-pattern-id="${topicId}"] [data-testid=backfill]`);
      expect(await attr(run, 'data-state')).toBe('queued');

      // What the backfill job writes: the run starts with what the archive matches, then one
      // update per batch, then its end (ingestor/src/sql/backfill.ts).
      await sql`update backfill_run set state = 'running', matched = 40, started_at = now(), updated_at = clock_timestamp()
                where topic_id = ${topicId}`;
      await waitFor('the run shown running', async () => (await attr(run, 'data-state')) === 'running');
      expect(await run.locator('[data-testid=backfill-progress]').textContent()).toBe('0 / 40');

      await sql`update backfill_run set processed = 15, failed = 1, readings = 28, cursor_id = 15,
                  last_error = 'attempt 1: connection reset; will resume', updated_at = clock_timestamp()
                where topic_id = ${topicId}`;
      await waitFor('the first batches shown', async () => (await attr(run, 'data-processed')) === '15');
      expect(await run.locator('[data-testid=backfill-progress]').textContent()).toBe('15 / 40');
      expect(await run.locator('progress').evaluate((p: HTMLProgressElement) => [p.value, p.max])).toEqual([15, 40]);
      expect(await run.locator('[data-testid=backfill-failed]').textContent()).toBe('1 failed');
      expect(await run.locator('[data-testid=backfill-readings]').textContent()).toBe('28 readings stored');
      expect(await run.locator('[data-testid=backfill-error]').textContent()).toBe(
        'attempt 1: connection reset; will resume',
      );
      await screenshot(page, '16-topics-replay-running');

      await sql`update backfill_run set processed = 40, failed = 1, readings = 78, cursor_id = 40, state = 'done',
                  last_error = null, finished_at = now(), updated_at = clock_timestamp()
                where topic_id = ${topicId}`;
      await waitFor('the run shown done', async () => (await attr(run, 'data-state')) === 'done');
      expect(await run.locator('[data-testid=backfill-progress]').textContent()).toBe('40 / 40');
      expect(await run.locator('[data-testid=backfill-readings]').textContent()).toBe('78 readings stored');
      expect(await run.locator('[data-testid=backfill-error]').count()).toBe(0);
      // The page reloads its view every second or so (the simulator's topics): what it shows is
      // still the last write, not an older snapshot.
      await page.locator('[data-testid=live-status][data-status=live]').waitFor();
      expect(await attr(run, 'data-state')).toBe('done');
      expect(await stillSameDocument(page)).toBe(true);
      await screenshot(page, '17-topics-replay-done');
    } finally {
      await sql`delete from mqtt_topic where id = ${topicId}`;
    }
  });

  it('shows how many archived messages a pattern would replay while it is typed, before it is saved', async () => {
    const prefix = `demo/e2e-archive-${tag}`;
    const topic = `${prefix}/gw-1/data`;
    // The archive as the ingestor fills it with messages no pattern took; another connection's
    // messages on the same topics are not counted.
    const [other] = await sql<{ id: string }[]>`
      insert into mqtt_connection (site_id, host, port, is_active)
      select id, '127.0.0.1', 1, false from site where slug = ${memberSite} returning id`;
    await sql`
      insert into mqtt_message_archive (connection_id, topic, payload)
      select ${demoConnectionId}, t, convert_to('{}', 'UTF8')
      from unnest(${[
        ...Array<string>(5).fill(topic),
        ...Array<string>(3).fill(`${prefix}/gw-2/data`),
        ...Array<string>(2).fill(`${prefix}/gw-2/status`),
        ...Array<string>(4).fill(`${prefix}x/gw-1/data`),
      ]}::text[]) t`;
    await sql`insert into mqtt_message_archive (connection_id, topic, payload)
              select ${other!.id}, ${topic}, convert_to('{}', 'UTF8') from generate_series(1, 6)`;
    await sql`insert into discovered_topic (connection_id, topic, message_count) values (${demoConnectionId}, ${topic}, 5)`;
    const statusPattern = await inactivePattern(`${prefix}/+gw/status`, 'bfg.gateway-status.v1');
    try {
      await signIn(page, admin.email, admin.password);
      const requests: string[] = [];
      page.on('request', (r) => {
        if (r.url().includes('/api/archived-count')) requests.push(r.url());
      });
      await page.goto(`/topics?connection=${demoConnectionId}&q=${encodeURIComponent(`e2e-archive-${tag}`)}`);
      await page.locator('[data-testid=live-status][data-status=live]').waitFor();
      const row = page.locator('[data-testid=topic-row]', {
        has: page.locator('[data-testid=topic]', { hasText: topic }),
      });
      await row.locator('[data-testid=add-pattern]').click();
      const count = row.locator('[data-testid=archived-count]');
      const counted = async (n: number) => {
        await waitFor(
          `${n} archived messages shown`,
          async () =>
            (await attr(count, 'data-state')) === 'counted' && (await attr(count, 'data-count')) === String(n),
        );
      };
      // The form opens with the topic itself as the pattern.
      await counted(5);

      // Typed character by character: one request once the typing pauses, not one per key.
      const before = requests.length;
      const field = row.locator('[data-testid=new-pattern]');
      await field.fill('');
      await field.pressSequentially(`${prefix}/+gw/data`, { delay: 15 });
      await counted(8);
      expect(requests.length - before).toBeLessThanOrEqual(2);
      expect(await count.textContent()).toContain('Matches 8 archived messages');

      await field.fill(`${prefix}/#`);
      await counted(10);
      await field.fill(`${prefix}/+gw/+kind/extra`);
      await counted(0);
      await field.fill(`${prefix}/#/data`);
      await waitFor('an invalid pattern said so', async () => (await attr(count, 'data-state')) === 'invalid');
      await screenshot(page, '18-topics-archived-count');
      await row.locator('[data-testid=new-pattern-form] button[type=button]').click();

      // Editing a pattern shows the same, and saving it active asks for the replay (the trigger
      // on mqtt_topic), whose run appears on the page without a reload.
      await markDocument(page);
      const patternRow = page.locator(`[data-testid=pattern-row][data-pattern-id="${statusPattern}"]`);
      expect(await patternRow.textContent()).toContain('no replay');
      await patternRow.locator('[data-testid=edit-pattern]').click();
      const form = page.locator(`[data-testid=pattern-edit-row][data-pattern-id="${statusPattern}"]`);
      const editCount = form.locator('[data-testid=archived-count]');
      await waitFor('the edited pattern counted', async () => (await attr(editCount, 'data-count')) === '2');
      await form.locator('[data-testid=edit-active]').check();
      await form.locator('button[type=submit]').click();
      await page.locator('.notice.success').waitFor();
      await patternRow.locator('[data-testid=backfill]').waitFor({ timeout: 10_000 });
      expect(await attr(patternRow, 'data-active')).toBe('true');
      const [requested] = await sql<
        { state: string }[]
      >`select state from backfill_run where topic_id = ${statusPattern}`;
      expect(requested?.state).toMatch(/^(queued|running|done|failed)$/);
      expect(await stillSameDocument(page)).toBe(true);
    } finally {
      await sql`delete from mqtt_topic where id = ${statusPattern}`;
      await sql`delete from discovered_topic where connection_id = ${demoConnectionId} and topic = ${topic}`;
      await sql`delete from mqtt_message_archive where topic like ${`${prefix}%`}`;
      await sql`delete from mqtt_connection where id = ${other!.id}`;
    }
  });
});

describe('device presence from the database', () => {
  it('shows a device offline, live, when the database says so, and online again', async () => {
    const [site] = await sql<{ id: string }[]>`
      insert into site (slug, name) values (${`e2e-presence-${tag}`}, 'Presence site') returning id`;
    const [gw] = await sql<{ id: string }[]>`
      insert into gateway (site_id, ident, online) values (${site!.id}, 'gw-p', true) returning id`;
    // An hour's interval: the staleness job (when it runs) leaves these alone during the test.
    const [dl] = await sql<{ id: string }[]>`
      insert into datalogger (site_id, gateway_id, ident, interval_s) values (${site!.id}, ${gw!.id}, 'dl-p', 3600) returning id`;
    await sql`insert into sensor (site_id, datalogger_id, ident, last_value, last_value_at)
              values (${site!.id}, ${dl!.id}, 's-p', 1, now())`;
    try {
      await signIn(page, admin.email, admin.password);
      await page.goto(`/sites/${site!.id}`);
      await page.locator('[data-testid=live-status][data-status=live]').waitFor();
      await markDocument(page);
      const gatewayState = page.locator('[data-testid=gateway] h2 [data-testid=device-state]');
      const dataloggerState = page.locator('[data-testid=datalogger] h3 [data-testid=device-state]');
      const sensorState = page.locator('[data-testid=sensor] [data-testid=device-state]');
      const shows = (locator: Locator, state: string, what: string) =>
        waitFor(what, async () => (await attr(locator, 'data-state')) === state);
      expect(await attr(gatewayState, 'data-state')).toBe('online');
      expect(await attr(dataloggerState, 'data-state')).toBe('online');
      expect(await attr(sensorState, 'data-state')).toBe('online');

      // As the staleness job writes it.
      await sql`update datalogger set presence = 'offline', presence_changed_at = now() where id = ${dl!.id}`;
      await shows(dataloggerState, 'offline', 'the datalogger offline');
      expect(await dataloggerState.textContent()).toBe('offline');
      await sql`update sensor set presence = 'offline', presence_changed_at = now() where datalogger_id = ${dl!.id}`;
      await shows(sensorState, 'offline', 'the sensor offline');
      expect(await attr(gatewayState, 'data-state')).toBe('online');

      // A gateway is offline when it said so (its last will) and when it stopped reporting.
      await sql`update gateway set online = false where id = ${gw!.id}`;
      await shows(gatewayState, 'offline', 'the gateway offline by its last will');
      await sql`update gateway set online = true, presence = 'offline', presence_changed_at = now() where id = ${gw!.id}`;
      await shows(gatewayState, 'offline', 'the gateway offline by its presence');
      // The ingestor's write path on the next message.
      await sql`update gateway set presence = 'online', presence_changed_at = now() where id = ${gw!.id}`;
      await shows(gatewayState, 'online', 'the gateway online again');
      await sql`update datalogger set presence = 'online', presence_changed_at = now() where id = ${dl!.id}`;
      await shows(dataloggerState, 'online', 'the datalogger online again');
      expect(await attr(sensorState, 'data-state')).toBe('offline');
      expect(await stillSameDocument(page)).toBe(true);
      await screenshot(page, '19-site-presence');

      // The Sites page counts by the same rule.
      await page.goto('/');
      const card = page.locator(`[data-testid=site-card][data-site-slug="e2e-presence-${tag}"]`);
      expect(await card.locator('[data-testid=gateways-online]').textContent()).toBe('1');
      expect(await card.locator('[data-testid=dataloggers-online]').textContent()).toBe('1');
      expect(await card.locator('[data-testid=sensors-online]').textContent()).toBe('0');
      expect(await card.locator('[data-testid=sensors-offline]').textContent()).toBe('1');
    } finally {
      await sql`delete from site where id = ${site!.id}`;
    }
  });
});

describe('background jobs', () => {
  /** A job no worker runs (no task of that name, due in an hour) that failed twice. */
  async function failingJob(): Promise<{ id: string; key: string }> {
    // graphile-worker's schema, as a worker installs it when it starts (idempotent).
    await runMigrations({ connectionString: databaseUrl });
    const key = `e2e-job-${tag}`;
    const [job] = await sql<{ id: string }[]>`
      select id from graphile_worker.add_job(${`e2e_task_${tag}`}, '{}'::json, run_at := now() + interval '1 hour',
                                             job_key := ${key}, max_attempts := 5)`;
    await sql`update graphile_worker._private_jobs set attempts = 2, last_error = ${`e2e failure ${tag}: broker said no`}
              where id = ${job!.id}`;
    return { id: job!.id, key };
  }

  it('lists pending and failing jobs with attempts and last error, for admins', async () => {
    const job = await failingJob();
    try {
      await signIn(page, admin.email, admin.password);
      await page.goto('/logs');
      await page.locator('[data-testid=tab-jobs]').click();
      await page.locator('[data-testid=jobs]').waitFor();
      const row = page.locator(`[data-testid=job-row][data-task="e2e_task_${tag}"]`);
      await row.waitFor();
      expect(await attr(row, 'data-state')).toBe('retrying');
      expect(await row.locator('[data-testid=job-attempts]').textContent()).toBe('2 / 5');
      expect(await row.locator('[data-testid=job-error]').textContent()).toBe(`e2e failure ${tag}: broker said no`);
      await screenshot(page, '20-background-jobs');
    } finally {
      await sql`select graphile_worker.remove_job(${job.key})`;
    }
  });

  it('shows a member no jobs and refuses them the archive count, also when forged', async () => {
    const job = await failingJob();
    try {
      await signIn(page, member.email, member.password);
      await page.goto('/logs');
      await page.locator('[data-testid=tab-parsing]').waitFor();
      expect(await page.locator('[data-testid=tab-jobs], [data-testid=jobs]').count()).toBe(0);
      expect((await page.goto('/logs?tab=jobs'))?.status()).toBe(403);
      expect(await page.content()).not.toContain(`e2e_task_${tag}`);

      await page.goto('/topics');
      await page.locator('[data-testid=patterns]').waitFor();
      expect(await page.locator('[data-testid=edit-pattern], [data-testid=add-pattern]').count()).toBe(0);

      // The preview's request and the edit form's post, sent by the member: refused by the server.
      const query = new URLSearchParams({ connection_id: String(demoConnectionId), pattern: 'demo/#' });
      const count = await page.request.get(`/api/archived-count?${query}`, { headers: { accept: 'application/json' } });
      expect(count.status()).toBe(403);
      expect(await count.text()).not.toMatch(/"count"/);
      const anonymous = await fetch(`${webUrl}/api/archived-count?${query}`, {
        headers: { accept: 'application/json' },
      });
      expect(anonymous.status).toBe(401);
      const [seeded] = await sql<{ id: string; pattern: string }[]>`
        select id, pattern from mqtt_topic where connection_id = ${demoConnectionId} order by id limit 1`;
      const forged = await page.request.post('/topics?/updatePattern', {
        form: { id: seeded!.id, pattern: 'demo/#', parser: 'generic-json', parser_config: '{}', is_active: 'on' },
        headers: { origin: webUrl, accept: 'application/json', 'x-sveltekit-action': 'true' },
      });
      expect(JSON.stringify(await forged.json())).toContain('403');
      const [after] = await sql<{ pattern: string }[]>`select pattern from mqtt_topic where id = ${seeded!.id}`;
      expect(after?.pattern).toBe(seeded!.pattern);
    } finally {
      await sql`select graphile_worker.remove_job(${job.key})`;
    }
  });
});
