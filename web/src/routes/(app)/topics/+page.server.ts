import { fail } from '@sveltejs/kit';
import postgres from 'postgres';
import { z } from 'zod';
import { builtInParsers } from '@bfg/ingestor/parsers';
import { asUser } from '#lib/server/as-user.ts';
import { fieldErrors, formFields } from '#lib/server/form.ts';
import { requireAdmin, requireSession } from '#lib/server/guards.ts';
import { listConnectionOptions } from '#lib/server/queries/connection-options.ts';
import { createTopicPattern, listDiscoveredTopics, listTopicPatterns } from '#lib/server/queries/topics.ts';
import type { Actions, PageServerLoad } from './$types';

const parserKeys = builtInParsers.map((p) => p.key).sort();
/** How many topics a page shows; the filter narrows the rest. */
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
  return asUser(session.claims, async (tx) => {
    const [connections, patterns, topics] = await Promise.all([
      listConnectionOptions(tx),
      listTopicPatterns(tx),
      listDiscoveredTopics(tx, {
        connectionId: filter.connection,
        search: filter.q,
        processable: filter.processable === 'all' ? null : filter.processable === 'yes',
        limit: PAGE_SIZE,
      }),
    ]);
    return { filter, connections, patterns, topics: topics.rows, total: topics.total, parserKeys };
  });
}) satisfies PageServerLoad;

/** A topic pattern: an MQTT filter whose wildcards may be named (`+gateway`, `#rest`). */
const newPatternSchema = z.object({
  connection_id: z.coerce.number().int().positive(),
  pattern: z
    .string()
    .trim()
    .min(1, 'Pattern is required')
    .max(1024)
    .refine(
      (p) =>
        p
          .split('/')
          .every((level, i, all) =>
            level.startsWith('#')
              ? i === all.length - 1 && /^#[A-Za-z0-9_]*$/.test(level)
              : !level.includes('#') && (!level.includes('+') || /^\+[A-Za-z0-9_]*$/.test(level)),
          ),
      { message: 'Wildcards must be whole levels (+ or +name, # or #name last)' },
    ),
  parser: z.enum(parserKeys as [string, ...string[]], { error: 'Choose a parser' }),
  qos: z.coerce
    .number()
    .pipe(z.union([z.literal(0), z.literal(1), z.literal(2)]))
    .default(1),
  priority: z.coerce.number().int().min(-1000).max(1000).default(100),
  parser_config: z.string().max(20_000).default('{}'),
});

/**
 * The parser's options as its own config schema wants them (generic-json needs to know where the
 * device ids and values are); a message per problem, with the path in the JSON.
 */
function parseParserConfig(
  parserKey: string,
  text: string,
): { ok: true; config: Record<string, unknown> } | { ok: false; message: string } {
  let json: unknown;
  try {
    json = JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (err) {
    return { ok: false, message: `Not valid JSON: ${(err as Error).message}` };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    return { ok: false, message: 'Must be a JSON object.' };
  const parser = builtInParsers.find((p) => p.key === parserKey);
  const checked = parser?.configSchema.safeParse(json);
  if (checked && !checked.success) {
    return {
      ok: false,
      message: checked.error.issues.map((i) => `${i.path.join('.') || '(config)'}: ${i.message}`).join('; '),
    };
  }
  return { ok: true, config: json as Record<string, unknown> };
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
      if (err instanceof postgres.PostgresError && err.code === '23505') {
        return fail(400, {
          values: fields,
          errors: {},
          message: 'This connection already has that pattern with that parser.',
        });
      }
      throw err;
    }
  },
} satisfies Actions;
