import { error, fail } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { fieldErrors, formFields } from '#lib/server/form.ts';
import { parseId, requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnectionOptions } from '#lib/server/queries/connection-options.ts';
import { decodeCursor, encodeCursor } from '#lib/server/cursor.ts';
import {
  createTopicPattern,
  deleteTopicPattern,
  listBackfillRuns,
  listDiscoveredTopics,
  listTopicPatterns,
  patternTopicCounts,
  setTopicPatternActive,
  TOPIC_COUNT_CAP,
  topicCursor,
  updateTopicPattern,
} from '#lib/server/queries/topics.ts';
import { newPatternSchema, parseParserConfig, parserKeys, patternEditSchema } from '#lib/server/topic-patterns.ts';
import type { TopicPatternRow } from '#lib/rows.ts';
import type { Actions, PageServerLoad } from './$types';

/** How many topics a page shows; the filter narrows the rest, "Older" pages through them. */
const PAGE_SIZE = 200;

const filterSchema = z.object({
  connection: z.coerce.number().int().positive().nullable().catch(null),
  q: z.string().max(200).catch(''),
  processable: z.enum(['yes', 'no', 'all']).catch('all'),
});

export const load = (async ({ locals, url, depends }) => {
  depends('app:topics');
  const session = requireSession(locals);
  const filter = filterSchema.parse({
    connection: url.searchParams.get('connection') || null,
    q: url.searchParams.get('q') ?? '',
    processable: url.searchParams.get('processable') ?? 'all',
  });
  const after = decodeCursor(url.searchParams.get('after'), topicCursor);
  return asUser(session.claims, async (tx) => {
    const [connections, patterns, runs, topics] = await Promise.all([
      listConnectionOptions(tx),
      listTopicPatterns(tx),
      listBackfillRuns(tx),
      listDiscoveredTopics(tx, {
        connectionId: filter.connection,
        search: filter.q,
        processable: filter.processable === 'all' ? null : filter.processable === 'yes',
        limit: PAGE_SIZE,
        after,
      }),
    ]);
    const counts = await patternTopicCounts(
      tx,
      patterns.map((p) => p.id),
    );
    return {
      filter,
      connections,
      patterns: patterns.map((p) => ({ ...p, topic_count: counts.get(p.id) ?? 0 })),
      runs,
      topics: topics.rows,
      total: topics.total,
      capped: topics.capped,
      next: topics.next ? encodeCursor(topics.next) : null,
      paged: after !== null,
      parserKeys,
      countCap: TOPIC_COUNT_CAP,
    };
  });
}) satisfies PageServerLoad;

/** The database said no to a pattern: a message for the form, or undefined when it is not one of ours. */
function refusal(err: unknown): string | undefined {
  if (!(err instanceof postgres.PostgresError)) return undefined;
  if (err.code === '23505') return 'This connection already has that pattern with that parser.';
  if (err.code === '23514' || err.code === '22P02') return `The database refused the pattern: ${err.message}`;
  return undefined;
}

export const actions = {
  createPattern: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const parsed = newPatternSchema.safeParse(fields);
    if (!parsed.success)
      return fail(400, { values: fields, errors: fieldErrors(parsed.error), message: 'The pattern needs fixing.' });
    const config = parseParserConfig(parsed.data.parser, parsed.data.parser_config);
    if (!config.ok)
      return fail(400, {
        values: fields,
        errors: { parser_config: [config.message] },
        message: 'The parser options need fixing.',
      });
    try {
      const created = await asUser(session.claims, (tx) =>
        createTopicPattern(tx, { ...parsed.data, parser_config: config.config }),
      );
      return { created: { pattern: created.pattern, parser: created.parser } };
    } catch (err) {
      const message = refusal(err);
      if (message) return fail(400, { values: fields, errors: {}, message });
      throw err;
    }
  },

  updatePattern: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const parsed = patternEditSchema.safeParse(fields);
    if (!parsed.success)
      return fail(400, { values: fields, errors: fieldErrors(parsed.error), message: 'The pattern needs fixing.' });
    const config = parseParserConfig(parsed.data.parser, parsed.data.parser_config);
    if (!config.ok)
      return fail(400, {
        values: fields,
        errors: { parser_config: [config.message] },
        message: 'The parser options need fixing.',
      });
    const { id, ...change } = parsed.data;
    let updated: TopicPatternRow | undefined;
    try {
      updated = await asUser(session.claims, (tx) =>
        updateTopicPattern(tx, id, { ...change, parser_config: config.config }),
      );
    } catch (err) {
      const message = refusal(err);
      if (message) return fail(400, { values: fields, errors: {}, message });
      throw err;
    }
    if (!updated) error(404, 'No such pattern.');
    return { updated: { pattern: updated.pattern, parser: updated.parser, is_active: updated.is_active } };
  },

  /** On or off; off, the pattern's topics are discovered and archived but not parsed. */
  setPatternActive: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const id = parseId(fields['id'], 'pattern id');
    const active = z.enum(['true', 'false']).safeParse(fields['active']);
    if (!active.success) error(400, 'Missing or invalid active.');
    const row = await asUser(session.claims, (tx) => setTopicPatternActive(tx, id, active.data === 'true'));
    if (!row) error(404, 'No such pattern.');
    return { toggled: { id: row.id, pattern: row.pattern, is_active: row.is_active } };
  },

  /** Deletes a pattern once confirmed (the form says what happens to its topics). */
  deletePattern: async ({ locals, request }) => {
    const session = requireAdmin(locals);
    const fields = await formFields(request);
    const id = parseId(fields['id'], 'pattern id');
    if (fields['confirm'] !== 'yes') return fail(400, { message: 'Confirm the deletion.' });
    const row = await asUser(session.claims, (tx) => deleteTopicPattern(tx, id));
    if (!row) error(404, 'No such pattern.');
    return { deleted: { pattern: row.pattern, parser: row.parser } };
  },
} satisfies Actions;
