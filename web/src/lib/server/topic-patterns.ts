import { z } from 'zod';
import { builtInParsers } from '@bfg/ingestor/parsers';

/** The parsers a pattern may name, for the forms' menus and their validation. */
export const parserKeys = builtInParsers.map((p) => p.key).sort();

/** A topic pattern: an MQTT filter whose wildcards may be named (`+gateway`, `#rest`). */
export const topicFilterSchema = z
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
  );

const patternFields = {
  pattern: topicFilterSchema,
  parser: z.enum(parserKeys as [string, ...string[]], { error: 'Choose a parser' }),
  qos: z.coerce
    .number()
    .pipe(z.union([z.literal(0), z.literal(1), z.literal(2)]))
    .default(1),
  priority: z.coerce.number().int().min(-1000).max(1000).default(100),
  parser_config: z.string().max(20_000).default('{}'),
};

/** The create form: a new pattern of a connection, active from the start. */
export const newPatternSchema = z.object({ connection_id: z.coerce.number().int().positive(), ...patternFields });

/** The edit form: a pattern's fields (its connection stays); an unchecked `is_active` box sends nothing. */
export const patternEditSchema = z.object({
  id: z.coerce.number().int().positive(),
  ...patternFields,
  is_active: z
    .literal('on')
    .optional()
    .transform((v) => v === 'on'),
});

/** What the archived-count preview asks: a connection and the pattern as typed so far. */
export const archivedCountQuery = z.object({
  connection_id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  pattern: topicFilterSchema,
});

/**
 * The parser's options as its own config schema wants them (generic-json needs to know where the
 * device ids and values are); a message per problem, with the path in the JSON.
 */
export function parseParserConfig(
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

/** What the discovered-topics preview asks: the pattern as typed, its priority and (editing) its id. */
export const patternPreviewQuery = z.object({
  connection_id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  pattern: topicFilterSchema,
  priority: z.coerce.number().int().min(-1000).max(1000).catch(100),
  pattern_id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
});
