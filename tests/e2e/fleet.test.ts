import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import postgres from 'postgres';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { addUser } from '@bfg/local';
import { signJwt } from '../support/jwt.ts';
import { waitFor } from '../support/wait-for.ts';
import {
  closeContext,
  markDocument,
  newContext,
  pagePerTest,
  screenshot,
  signIn,
  stillSameDocument,
} from './support/browser.ts';

/**
 * Running a fleet from the dashboard (issue 13): an admin creates a site, its connection (tested
 * against the broker before it is saved), a topic pattern, and sees a real MQTT client's values
 * live on the site page with their sparkline; turns the pattern off and parsing stops; the audit
 * trail shows the dashboard's change with the admin and a SQL change with the database user, live,
 * and a password only as "set". Accounts are created (password shown once), disabled and
 * promoted through the Auth admin API. A member sees their sites only and is refused every admin
 * page and action, also forged.
 */

const webUrl = inject('e2eWebUrl');
const brokerUrl = new URL(inject('e2eBrokerUrl'));
const sql = postgres(inject('e2eDatabaseUrl'), { max: 2, onnotice: () => undefined });
const tag = randomBytes(3).toString('hex');
const admin = { email: `fleet-admin-${tag}@e2e.test`, password: randomBytes(12).toString('base64url') };
const member = { email: `fleet-member-${tag}@e2e.test`, password: randomBytes(12).toString('base64url') };
const slug = `e2e-fleet-${tag}`;
const memberSite = `e2e-fleet-member-${tag}`;
const dataTopic = `${slug}/gateway/gw-1/datalogger/dl-1/data`;

const session = pagePerTest(webUrl);
let page: Page;
/** Made by the first test, used by the later ones (the flow is one story, in order). */
let siteId: number;
let connectionId: number;
let patternId: number;

beforeAll(async () => {
  await addUser(sql, { ...admin, role: 'admin' });
  await sql`insert into site (slug, name) values (${memberSite}, 'Fleet member site')`;
  await addUser(sql, { ...member, role: 'member', sites: [memberSite] });
});
afterAll(async () => {
  await sql`delete from site where slug in (${slug}, ${memberSite})`;
  await sql.end({ timeout: 5 });
});
beforeEach(() => {
  page = session.page;
});

const attr = (selector: string, name: string) => page.locator(selector).first().getAttribute(name);
/** Opens a page to type into once its scripts have run (typing while it hydrates loses keys). */
const open = (path: string) => page.goto(path, { waitUntil: 'networkidle' });

async function publish(value: number): Promise<void> {
  const client = await mqtt.connectAsync(brokerUrl.toString(), {
    clientId: `e2e-fleet-pub-${randomBytes(3).toString('hex')}`,
  });
  try {
    await client.publishAsync(
      dataTopic,
      JSON.stringify({ ts: new Date().toISOString(), readings: [{ sensor: 't_air', value }] }),
      {
        qos: 1,
      },
    );
  } finally {
    await client.endAsync();
  }
}

describe('an admin runs a site from the dashboard', () => {
  it('creates a site, tests and creates its connection, adds a pattern and sees the values live', async () => {
    await signIn(page, admin.email, admin.password);
    await open('/admin/sites');
    // The slug is a topic level: a slash is refused next to the field.
    await page.fill('[data-testid=new-site-slug]', 'has/slash');
    await page.fill('[data-testid=new-site-name]', 'Fleet site');
    await page.click('[data-testid=create-site]');
    await page.locator('[data-testid=error-slug]').waitFor();
    await page.fill('[data-testid=new-site-slug]', slug);
    await page.fill('[data-testid=new-site-name]', 'Fleet site');
    await page.click('[data-testid=create-site]');
    await page.locator('[data-testid=site-created]').waitFor();
    const [site] = await sql<{ id: string }[]>`select id from site where slug = ${slug}`;
    siteId = Number(site!.id);

    await page.click('[data-testid=site-created] a');
    await page.waitForURL((url) => url.pathname === '/connections/new');
    expect(await page.locator('[data-testid=new-connection-site]').inputValue()).toBe(String(siteId));
    await page.fill('#host', brokerUrl.hostname);
    // Test connection with a port nobody listens on: the socket's refusal, nothing saved.
    await page.fill('#port', '1');
    await page.selectOption('#protocol_version', '4');
    await page.click('[data-testid=test-connection]');
    await waitFor(
      'the refused test',
      async () => (await attr('[data-testid=broker-test]', 'data-state')) === 'network',
    );
    expect(await page.locator('[data-testid=broker-test-message]').textContent()).toContain('ECONNREFUSED');
    await page.fill('#port', brokerUrl.port);
    await page.click('[data-testid=test-connection]');
    await waitFor(
      'the successful test',
      async () => (await attr('[data-testid=broker-test]', 'data-state')) === 'connected',
      {
        timeoutMs: 10_000,
      },
    );
    expect(await sql`select 1 from mqtt_connection where site_id = ${siteId}`).toHaveLength(0);
    await screenshot(page, '20-new-connection-tested');
    await page.click('[data-testid=create-connection]');
    await page.waitForURL((url) => /^\/connections\/\d+$/.test(url.pathname));
    connectionId = Number(new URL(page.url()).pathname.split('/').pop());

    await open(`/topics?connection=${connectionId}`);
    await page.click('[data-testid=open-new-pattern]');
    await page.fill('[data-testid=new-pattern]', '+site/gateway/+gateway/datalogger/+datalogger/data');
    await page.selectOption('[data-testid=new-parser]', 'bfg.datalogger-data.v1');
    await waitFor(
      'the topic preview',
      async () => (await attr('[data-testid=topic-preview]', 'data-state')) === 'done',
    );
    await page.click('[data-testid=new-pattern-form] button[type=submit]');
    await page.locator('[data-testid=pattern-row]').waitFor();
    const [pattern] = await sql<{ id: string }[]>`select id from mqtt_topic where connection_id = ${connectionId}`;
    patternId = Number(pattern!.id);

    await page.goto('/connections');
    await page.click(`[data-testid=connection][data-site-slug="${slug}"] [data-testid=start]`);
    await page
      .locator(
        `[data-testid=connection][data-site-slug="${slug}"] [data-testid=connection-status][data-status=connected]`,
      )
      .waitFor({ timeout: 15_000 });

    await page.goto(`/sites/${siteId}`);
    await page.locator('[data-testid=live-status][data-status=live]').waitFor();
    await markDocument(page);
    await publish(21.5);
    const value = page.locator('[data-testid=sensor][data-ident=t_air] [data-testid=sensor-value]');
    await value.filter({ hasText: '21.5' }).waitFor();
    await waitFor(
      'the live value on the sparkline',
      async () =>
        (await attr('[data-testid=sensor][data-ident=t_air] [data-testid=sparkline]', 'data-last')) === '21.5',
    );
    expect(await stillSameDocument(page)).toBe(true);
    await screenshot(page, '21-fleet-site-live');
  });

  it('turns the pattern off from the Topics page, and parsing stops', async () => {
    await signIn(page, admin.email, admin.password);
    await open(`/topics?connection=${connectionId}`);
    const row = page.locator(`[data-testid=pattern-row][data-pattern-id="${patternId}"]`);
    await waitFor(
      'the pattern counting its topic',
      async () => (await row.locator('[data-testid=pattern-topic-count]').textContent()) === '1',
    );
    await row.locator('[data-testid=toggle-pattern]').click();
    await page.locator(`[data-testid=pattern-row][data-pattern-id="${patternId}"][data-active=false]`).waitFor();
    // The ingestor reloads its patterns on NOTIFY; once a message of the topic is discovered as
    // not processable, it parses no more of them.
    await waitFor(
      'the topic no longer processable',
      async () => {
        await publish(50);
        const [t] = await sql<{ processable: boolean }[]>`
          select is_processable as processable from discovered_topic where connection_id = ${connectionId} and topic = ${dataTopic}`;
        return t?.processable === false;
      },
      { timeoutMs: 15_000, intervalMs: 500 },
    );
    const [before] = await sql<
      { n: string }[]
    >`select count(*) as n from mqtt_message_archive where connection_id = ${connectionId}`;
    await publish(99);
    await waitFor('the message archived, not parsed', async () => {
      const [after] = await sql<
        { n: string }[]
      >`select count(*) as n from mqtt_message_archive where connection_id = ${connectionId}`;
      return Number(after!.n) > Number(before!.n);
    });
    const [sensor] = await sql<{ value: number }[]>`
      select last_value as value from sensor where site_id = ${siteId} and ident = 't_air'`;
    expect(sensor!.value).not.toBe(99);
    await page.goto(`/sites/${siteId}`);
    expect(
      await page.locator('[data-testid=sensor][data-ident=t_air] [data-testid=sensor-value]').textContent(),
    ).not.toContain('99');
  });

  it('shows the audit trail of a change made in the UI and one made in SQL, live, and secrets never', async () => {
    await signIn(page, admin.email, admin.password);
    // Opened from the list once the page runs (not typed into while it hydrates).
    await open('/admin/sites');
    await page.click(`[data-testid=admin-site][data-site-slug="${slug}"] [data-testid=edit-site]`);
    await page.fill('[data-testid=edit-site-name]', 'Fleet site, renamed');
    await page.click('[data-testid=save-site]');
    await page.locator(`[data-testid=admin-site][data-site-slug="${slug}"]`).waitFor();
    const password = `e2e-secret-${randomBytes(6).toString('hex')}`;
    await open(`/connections/${connectionId}`);
    await page.fill('[data-testid=password]', password);
    await page.click('[data-testid=save]');
    await page.locator('text=Saved.').waitFor();
    expect(await page.content()).not.toContain(password);
    // A test with the password typed again: the answer echoes the fields, never a secret.
    await page.fill('[data-testid=password]', password);
    await page.click('[data-testid=test-connection]');
    await waitFor('the test answered', async () => {
      const state = await attr('[data-testid=broker-test]', 'data-state');
      return state !== null && state !== 'testing' && state !== 'idle';
    });
    await page.reload();
    expect(await page.content()).not.toContain(password);

    await page.goto(`/audit?site=${siteId}`);
    await page.locator('[data-testid=live-status][data-status=live]').waitFor();
    const renamed = page.locator('[data-testid=audit-entry][data-table=site][data-op=UPDATE]').first();
    expect(await renamed.locator('[data-testid=audit-who]').textContent()).toBe(admin.email);
    expect(await renamed.locator('[data-testid=audit-change][data-column=name]').textContent()).toContain(
      '"Fleet site" → "Fleet site, renamed"',
    );
    const secret = page.locator('[data-testid=audit-entry][data-table=mqtt_connection_secret]').first();
    expect(
      await secret.locator('[data-testid=audit-change][data-column=password] [data-testid=audit-secret]').textContent(),
    ).toBe('set');
    expect(await page.content()).not.toContain(password);

    await markDocument(page);
    await sql`update site set description = 'changed in SQL' where id = ${siteId}`;
    const [{ user }] = await sql<[{ user: string }]>`select session_user as user`;
    const fromSql = page.locator('[data-testid=audit-entry][data-table=site]', {
      has: page.locator('[data-testid=audit-change][data-column=description]'),
    });
    await fromSql.waitFor();
    expect(await fromSql.locator('[data-testid=audit-who]').textContent()).toBe(user);
    expect(await stillSameDocument(page)).toBe(true);
    await screenshot(page, '22-audit');
    expect(JSON.stringify(await sql`select * from audit_log`)).not.toContain(password);
  });

  it('creates an account with a password shown once, which signs in; disables it and makes another admin', async () => {
    await signIn(page, admin.email, admin.password);
    const email = `fleet-new-${tag}@e2e.test`;
    await open('/admin/users');
    await page.fill('[data-testid=new-account-email]', email);
    await page.check(`[data-testid=new-account-form] input[name=site][data-site-slug="${slug}"]`);
    await page.click('[data-testid=create-account]');
    const shown = (await page.locator('[data-testid=shown-password]').textContent())!.trim();
    expect(shown.length).toBeGreaterThanOrEqual(20);
    const account = page.locator(`[data-testid=account][data-email="${email}"]`);
    expect(await account.locator(`input[name=site][data-site-slug="${slug}"]`).isChecked()).toBe(true);

    const other = await newContext(session.browser, webUrl);
    try {
      const otherPage = await other.newPage();
      await signIn(otherPage, email, shown);
      const cards = otherPage.locator('[data-testid=site-card]');
      expect(await cards.evaluateAll((els) => els.map((e) => e.getAttribute('data-site-slug')))).toEqual([slug]);
    } finally {
      await closeContext(other, 'fleet-new-account', false);
    }
    await page.reload();
    expect(await page.content()).not.toContain(shown);

    await account.locator('summary', { hasText: 'Disable…' }).click();
    await account.locator('[data-testid=set-disabled]').click();
    await page.locator(`[data-testid=account][data-email="${email}"][data-disabled=true]`).waitFor();
    const refused = await newContext(session.browser, webUrl);
    try {
      const refusedPage = await refused.newPage();
      await refusedPage.goto('/login');
      await refusedPage.fill('#email', email);
      await refusedPage.fill('#password', shown);
      await refusedPage.click('button[type=submit]');
      await refusedPage.locator('[role=alert]', { hasText: 'User is banned' }).waitFor();
    } finally {
      await closeContext(refused, 'fleet-disabled-account', false);
    }

    await open('/admin/users');
    await page.locator(`[data-testid=account][data-email="${email}"] [data-testid=set-role]`).click();
    await page.locator(`[data-testid=account][data-email="${email}"][data-role=admin]`).waitFor();
    await screenshot(page, '23-users');
  });
});

describe('a member', () => {
  it('sees only their sites and is refused every admin page and action, also when forged', async () => {
    await signIn(page, member.email, member.password);
    const slugs = await page
      .locator('[data-testid=site-card]')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-site-slug')));
    expect(slugs).toEqual([memberSite]);
    expect(await page.locator('nav a[href="/admin/sites"], nav a[href="/audit"]').count()).toBe(0);
    for (const path of ['/admin/sites', '/admin/users', '/audit', '/connections/new', `/connections/${connectionId}`]) {
      expect((await page.goto(path))?.status(), path).toBe(403);
    }
    expect((await page.goto(`/sites/${siteId}`))?.status()).toBe(404);
    const preview = await page.request.get(
      `/api/pattern-preview?connection_id=${connectionId}&pattern=${encodeURIComponent(`${slug}/#`)}&priority=1`,
    );
    expect(preview.status()).toBe(403);

    const [{ id: accountId }] = await sql<
      [{ id: string }]
    >`select id::text from auth.users where email = ${admin.email}`;
    const forged: [string, Record<string, string>][] = [
      ['/admin/sites?/create', { slug: `forged-${tag}`, name: 'Forged' }],
      ['/admin/sites?/update', { id: String(siteId), name: 'Forged' }],
      ['/admin/sites?/delete', { id: String(siteId), confirm: slug }],
      [
        '/connections/new?/create',
        {
          site_id: String(siteId),
          host: 'evil.example',
          port: '1883',
          protocol: 'mqtt',
          protocol_version: '4',
          session_expiry_s: '0',
          keepalive_s: '60',
        },
      ],
      [
        '/connections/new?/test',
        {
          site_id: String(siteId),
          host: '127.0.0.1',
          port: '1',
          protocol: 'mqtt',
          protocol_version: '4',
          session_expiry_s: '0',
          keepalive_s: '60',
        },
      ],
      [
        `/connections/${connectionId}?/test`,
        {
          host: '127.0.0.1',
          port: '1',
          protocol: 'mqtt',
          protocol_version: '4',
          session_expiry_s: '0',
          keepalive_s: '60',
        },
      ],
      [`/connections/${connectionId}?/delete`, { confirm: slug }],
      ['/topics?/setPatternActive', { id: String(patternId), active: 'true' }],
      ['/topics?/deletePattern', { id: String(patternId), confirm: 'yes' }],
      ['/topics?/createPattern', { connection_id: String(connectionId), pattern: '#', parser: 'generic-json' }],
      ['/admin/users?/create', { email: `forged-${tag}@e2e.test`, role: 'admin' }],
      ['/admin/users?/setRole', { id: accountId, role: 'member' }],
      ['/admin/users?/setDisabled', { id: accountId, disabled: 'true' }],
      ['/admin/users?/resetPassword', { id: accountId, confirm: 'yes' }],
      ['/admin/users?/setSites', { id: accountId, site: String(siteId) }],
    ];
    for (const [action, form] of forged) {
      const response = await page.request.post(action, {
        form,
        headers: { origin: webUrl, accept: 'application/json', 'x-sveltekit-action': 'true' },
      });
      const body = JSON.stringify(await response.json());
      expect(body, action).toContain('"type":"error"');
      expect(body, action).toContain('403');
    }
    // Nobody signed in, or a token this server did not sign (an admin's claims, another key).
    const forgedToken = await signJwt(randomBytes(32).toString('hex'), {
      sub: accountId,
      role: 'authenticated',
      email: admin.email,
      app_metadata: { role: 'admin' },
    });
    for (const cookie of [undefined, `bfg-access-token=${forgedToken}`]) {
      const headers = { ...(cookie ? { cookie } : {}), origin: webUrl, accept: 'application/json' };
      for (const path of ['/admin/sites', '/admin/users', '/audit', '/connections/new']) {
        const response = await fetch(`${webUrl}${path}`, { headers, redirect: 'manual' });
        expect([response.status, response.headers.get('location')], path).toEqual([
          303,
          `/login?next=${encodeURIComponent(path)}`,
        ]);
      }
      const preview = await fetch(
        `${webUrl}/api/pattern-preview?connection_id=${connectionId}&pattern=%23&priority=1`,
        { headers },
      );
      expect(preview.status).toBe(401);
      for (const [action, form] of forged) {
        const response = await fetch(`${webUrl}${action}`, {
          method: 'POST',
          headers: { ...headers, 'x-sveltekit-action': 'true', 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams(form),
        });
        expect(response.status, `${action} ${cookie ? 'forged' : 'anonymous'}`).toBe(401);
      }
    }

    const [after] = await sql<{ name: string; patterns: number; active: boolean }[]>`
      select s.name, (select count(*)::int from mqtt_topic t where t.connection_id = ${connectionId}) as patterns,
             (select is_active from mqtt_topic where id = ${patternId}) as active
      from site s where s.id = ${siteId}`;
    expect(after).toEqual({ name: 'Fleet site, renamed', patterns: 1, active: false });
    expect(await sql`select 1 from site where slug = ${`forged-${tag}`}`).toHaveLength(0);
    expect(await sql`select 1 from auth.users where email = ${`forged-${tag}@e2e.test`}`).toHaveLength(0);
    const [adminAfter] = await sql<{ role: string | null; banned: Date | null }[]>`
      select raw_app_meta_data ->> 'role' as role, banned_until as banned from auth.users where id = ${accountId}`;
    expect(adminAfter).toEqual({ role: 'admin', banned: null });
  });
});

describe('deleting', () => {
  it('deletes the site once its slug is typed, after saying what goes with it', async () => {
    await signIn(page, admin.email, admin.password);
    await open('/admin/sites');
    await page.click(`[data-testid=admin-site][data-site-slug="${slug}"] [data-testid=ask-delete-site]`);
    const impact = await page.locator('[data-testid=delete-site-impact]').textContent();
    expect(impact).toContain('1 topic pattern');
    expect(impact).toContain('1 sensors and all their readings');
    await page.fill('[data-testid=confirm-slug]', 'not-the-slug');
    await page.click('[data-testid=delete-site]');
    await page.locator('[data-testid=delete-site-confirm] .field-error').waitFor();
    expect(await sql`select 1 from site where id = ${siteId}`).toHaveLength(1);
    await page.fill('[data-testid=confirm-slug]', slug);
    await page.click('[data-testid=delete-site]');
    await page.locator('[data-testid=site-deleted]').waitFor();
    expect(await sql`select 1 from site where id = ${siteId}`).toHaveLength(0);
    expect(await sql`select 1 from mqtt_connection where id = ${connectionId}`).toHaveLength(0);
    const deleted = await sql<{ table_name: string }[]>`
      select table_name from audit_log where op = 'DELETE' and site_id = ${siteId} order by table_name`;
    expect(deleted.map((d) => d.table_name)).toEqual(
      expect.arrayContaining(['mqtt_connection', 'mqtt_connection_secret', 'mqtt_topic', 'site', 'site_member']),
    );
  });
});
