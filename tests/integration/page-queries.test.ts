import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ParsingLogRow } from '../../web/src/lib/rows.ts';
import { listParsingLog, type LogCursor, type LogPage } from '../../web/src/lib/server/queries/logs.ts';
import {
  listDiscoveredTopics,
  patternTopicCounts,
  previewPatternTopics,
  TOPIC_COUNT_CAP,
  type TopicFilter,
} from '../../web/src/lib/server/queries/topics.ts';
import { anonClaims, asClaims, newUser, userClaims, type Claims } from '../support/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { addMember, newConnection, newSite } from '../support/factories.ts';

/**
 * The dashboard's list queries at scale (issue 13), with its own query functions as the signed-in
 * user: keyset pages that return every row exactly once, whatever ties the sort has; counts that
 * stop at the cap; the Topics search through private.discovered_topic_search (the trigram index
 * RLS keeps a user's ILIKE from) showing a member only their connections' topics, as RLS does.
 */

let db: TestDatabase;
let connA: number;
let connB: number;
let patternA: number;
const who = {} as Record<'admin' | 'memberA' | 'memberB', Claims>;
const TOPICS = TOPIC_COUNT_CAP + 500;

beforeAll(async () => {
  db = await createTestDatabase();
  const siteA = await newSite(db.sql);
  const siteB = await newSite(db.sql);
  connA = Number((await newConnection(db.sql, siteA.id)).id);
  connB = Number((await newConnection(db.sql, siteB.id)).id);
  const [adminId, memberAId, memberBId] = [await newUser(db.sql), await newUser(db.sql), await newUser(db.sql)];
  await addMember(db.sql, siteA.id, memberAId);
  await addMember(db.sql, siteB.id, memberBId);
  who.admin = userClaims(adminId, { admin: true });
  who.memberA = userClaims(memberAId);
  who.memberB = userClaims(memberBId);
  const [pattern] = await db.sql<{ id: string }[]>`
    insert into mqtt_topic (connection_id, pattern, parser) values (${connA}, 'a/+g/data', 'bfg.datalogger-data.v1') returning id`;
  patternA = Number(pattern!.id);
  // Many topics sharing few last_seen_at values (ties the keyset must break), every fifth one
  // not processable; on B, names that would match A's searches too.
  await db.sql`
    insert into discovered_topic (connection_id, topic, last_seen_at, is_processable, matched_topic_id)
    select ${connA}, 'a/gw-' || i || '/data', timestamptz '2026-12-01 10:00:00.654321' + (i % 7) * interval '1 second',
           i % 5 <> 0, case when i % 5 <> 0 then ${patternA}::bigint end
    from generate_series(1, ${TOPICS}) i`;
  await db.sql`
    insert into discovered_topic (connection_id, topic, last_seen_at)
    select ${connB}, 'a/gw-' || i || '/data', now() from generate_series(1, 50) i`;
  await db.sql`analyze discovered_topic`;
});
afterAll(async () => {
  await db?.drop();
});

const filter = (f: Partial<TopicFilter>): TopicFilter => ({
  connectionId: null,
  search: '',
  processable: null,
  limit: 200,
  after: null,
  ...f,
});

describe('discovered topics', () => {
  it('pages by keyset through every row exactly once, newest first, and caps the count', async () => {
    const seen: string[] = [];
    let after: TopicFilter['after'] = null;
    let pages = 0;
    for (;;) {
      const page = await asClaims(db.sql, who.memberA, (tx) =>
        listDiscoveredTopics(tx, filter({ connectionId: connA, limit: 1000, after })),
      );
      if (pages === 0) expect(page).toMatchObject({ total: TOPIC_COUNT_CAP, capped: true });
      seen.push(...page.rows.map((r) => r.topic));
      const times = page.rows.map((r) => r.last_seen_at.getTime());
      expect(times).toEqual([...times].sort((x, y) => y - x));
      pages++;
      if (!page.next) break;
      after = page.next;
    }
    expect(pages).toBe(Math.ceil(TOPICS / 1000));
    expect(seen.length).toBe(TOPICS);
    expect(new Set(seen).size).toBe(TOPICS);
  });

  it('searches through the trigram function as RLS would: a member sees their connections only', async () => {
    const search = (claims: Claims, f: Partial<TopicFilter>) =>
      asClaims(db.sql, claims, (tx) => listDiscoveredTopics(tx, filter({ search: 'gw-4242/', ...f })));
    const a = await search(who.memberA, {});
    expect(a.rows.map((r) => [r.connection_id, r.topic])).toEqual([[connA, 'a/gw-4242/data']]);
    expect(a).toMatchObject({ total: 1, capped: false, next: null });
    expect((await search(who.memberB, {})).rows).toEqual([]);
    // B's own topic of that name is outside its generated range; another search finds B's.
    const b = await search(who.memberB, { search: 'gw-42/' });
    expect(b.rows.map((r) => r.connection_id)).toEqual([connB]);
    const admin = await search(who.admin, { search: 'gw-42/' });
    expect(admin.rows.map((r) => r.connection_id).sort()).toEqual([connA, connB].sort());
    // Not processable, searched: i % 5 = 0.
    const unprocessable = await search(who.admin, { search: 'gw-100', connectionId: connA, processable: false });
    const expected = await db.sql<{ topic: string }[]>`
      select topic from discovered_topic where connection_id = ${connA} and topic like '%gw-100%' and not is_processable`;
    expect(expected.length).toBeGreaterThan(1);
    expect(unprocessable.rows.map((r) => r.topic).sort()).toEqual(expected.map((r) => r.topic).sort());
    // A search matching many (every topic): the page and the capped count, by the plain filter.
    const many = await search(who.memberA, { search: 'gw-', connectionId: connA });
    expect(many).toMatchObject({ total: TOPIC_COUNT_CAP, capped: true });
    expect(many.rows).toHaveLength(200);
    // The function itself: nothing for anonymous (no grant), nothing of others' connections.
    const anon = await asClaims(db.sql, anonClaims, async (tx) => {
      try {
        return await tx`select * from private.discovered_topic_search('%gw-1%', null, null, null, null, null, 10)`;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    });
    expect(anon).toBe('42501');
    const direct = await asClaims(
      db.sql,
      who.memberB,
      (tx) => tx<{ connection_id: string }[]>`
        select connection_id from private.discovered_topic_search('%gw-1%', ${connA}, null, null, null, null, 10)`,
    );
    expect(direct).toEqual([]);
  });

  it('counts the topics each pattern is the match of, capped, and previews what a pattern would take', async () => {
    const counts = await asClaims(db.sql, who.admin, (tx) => patternTopicCounts(tx, [patternA]));
    expect(counts.get(patternA)).toBe(TOPICS - TOPICS / 5);
    // Past the cap the count stops (shown as "10,000+").
    await db.sql`update discovered_topic set matched_topic_id = ${patternA} where connection_id = ${connA}`;
    const capped = await asClaims(db.sql, who.admin, (tx) => patternTopicCounts(tx, [patternA]));
    expect(capped.get(patternA)).toBe(TOPIC_COUNT_CAP + 1);
    await db.sql`update discovered_topic set matched_topic_id = null where connection_id = ${connA} and not is_processable`;
    const preview = await asClaims(db.sql, who.admin, (tx) =>
      previewPatternTopics(tx, { connectionId: connA, pattern: 'a/+/data', priority: 50, patternId: null, limit: 3 }),
    );
    expect(preview.capped).toBe(true);
    // Today: most by pattern A (priority 100, which 50 beats), the rest by none.
    expect(preview.byCurrent.map((g) => [g.pattern_id, g.wouldTake])).toEqual(
      expect.arrayContaining([
        [patternA, true],
        [null, true],
      ]),
    );
    const lower = await asClaims(db.sql, who.admin, (tx) =>
      previewPatternTopics(tx, { connectionId: connA, pattern: 'a/+/data', priority: 200, patternId: null, limit: 3 }),
    );
    expect(lower.byCurrent.find((g) => g.pattern_id === patternA)?.wouldTake).toBe(false);
    expect(lower.topics).toHaveLength(3);
    // A member of B previews nothing of A's connection (RLS).
    const other = await asClaims(db.sql, who.memberB, (tx) =>
      previewPatternTopics(tx, { connectionId: connA, pattern: 'a/#', priority: 1, patternId: null, limit: 3 }),
    );
    expect(other).toMatchObject({ total: 0, topics: [] });
  });
});

describe('parsing log', () => {
  it('pages by keyset within one microsecond-exact timestamp', async () => {
    await db.sql`
      insert into mqtt_parsing_log (connection_id, topic, kind, message, fingerprint, last_seen_at)
      select ${connA}, 'a/t', 'schema', 'm', 'fp-' || i, timestamptz '2026-12-01 10:00:00.123456'
      from generate_series(1, 25) i`;
    const ids: number[] = [];
    let before: LogCursor | null = null;
    for (;;) {
      const page: LogPage<ParsingLogRow> = await asClaims(db.sql, who.memberA, (tx) =>
        listParsingLog(tx, { connectionId: connA, category: '', search: '', limit: 10, before }),
      );
      ids.push(...page.rows.map((r) => r.id));
      if (!page.next) break;
      before = page.next;
    }
    expect(ids).toHaveLength(25);
    expect(new Set(ids).size).toBe(25);
  });
});
