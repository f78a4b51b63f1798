import { createHash } from 'node:crypto';
import type { ParserRegistry } from './parsers/registry.ts';
import type { NormalizedRows } from './parsers/types.ts';
import type { ParsingLogKind } from './vocabulary.ts';
import type { TopicMatcher } from './topic-matcher.ts';

/** mqtt_parsing_log.kind (every kind: the parsers' own, and the pipeline's invalid_json and unknown_parser). */
export type FailureKind = ParsingLogKind;

export const MAX_TOPIC_LENGTH = 1024;
const EXCERPT_BYTES = 512;

/** What one connection's messages are processed against; swapped whole when patterns change. */
export interface ConnectionContext {
  connectionId: string;
  siteId: string;
  siteSlug: string;
  matcher: TopicMatcher;
}

export interface IncomingMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retained: boolean;
  receivedAt: Date;
}

export interface ParsingFailure {
  kind: FailureKind;
  parser: string | null;
  message: string;
  issuePaths: string[];
  /** Identical errors share a fingerprint (and one mqtt_parsing_log row with a count). */
  fingerprint: string;
}

/** Everything one message turns into; written and committed together, then acknowledged. */
export interface ProcessedMessage {
  connectionId: string;
  siteId: string;
  /** Stored form of the topic (at most 1,024 characters). */
  topic: string;
  receivedAt: Date;
  excerpt: string;
  payloadBytes: number;
  qos: number;
  retained: boolean;
  matchedTopicId: string | null;
  isProcessable: boolean;
  rows: NormalizedRows | null;
  failure: ParsingFailure | null;
  /** Set when no active pattern accepted the message: the raw payload, for a later replay. */
  archivePayload: Buffer | null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The synchronous part of ingestion: match → size check → UTF-8 → JSON → parser. Never throws:
 * every bad input becomes a `failure` (and the message is still discovered and acknowledged).
 */
export function processMessage(
  ctx: ConnectionContext,
  message: IncomingMessage,
  registry: ParserRegistry,
  options: { maxPayloadBytes: number; archiveUnmatched: boolean },
): ProcessedMessage {
  const { payload } = message;
  const result: ProcessedMessage = {
    connectionId: ctx.connectionId,
    siteId: ctx.siteId,
    topic: pgText(message.topic.length > MAX_TOPIC_LENGTH ? message.topic.slice(0, MAX_TOPIC_LENGTH) : message.topic),
    receivedAt: message.receivedAt,
    // Set on the way out: from the decoded text when the payload is parsed (decoded once).
    excerpt: '',
    payloadBytes: payload.length,
    qos: message.qos,
    retained: message.retained,
    matchedTopicId: null,
    isProcessable: false,
    rows: null,
    failure: null,
    archivePayload: null,
  };
  const withExcerpt = () => {
    result.excerpt = excerptOf(payload);
    return result;
  };

  if (message.topic.length > MAX_TOPIC_LENGTH) {
    fail(
      result,
      'invalid_topic',
      null,
      `topic is ${message.topic.length} characters long; at most ${MAX_TOPIC_LENGTH} are parsed`,
    );
    return withExcerpt();
  }
  const match = ctx.matcher.match(message.topic);
  const parser = match ? registry.get(match.pattern.parser) : undefined;
  // A zero-length payload is how MQTT clears a retained message (MQTT 3.1.1 and 5, §3.3.1.3). The
  // retain flag cannot tell a clear apart: brokers pass it on to subscribers already listening
  // with retain = 0 (retain = 1 marks only messages sent because a subscription was made), so the
  // length alone decides. Empty, it is nothing to parse and nothing to replay later, whatever it
  // was meant as: the topic is discovered and counted, without a failure and without an archive row.
  if (payload.length === 0) {
    result.matchedTopicId = match?.pattern.id ?? null;
    result.isProcessable = parser !== undefined;
    return result;
  }
  if (!match) {
    // A copy: MQTT.js hands the payload as a view of the socket's read buffer (64 KiB), which a
    // held view would keep alive whole until the archive row is written.
    if (options.archiveUnmatched) result.archivePayload = Buffer.from(payload);
    return withExcerpt();
  }
  result.matchedTopicId = match.pattern.id;
  if (!parser) {
    fail(result, 'unknown_parser', match.pattern.parser, `no parser "${match.pattern.parser}" in this ingestor`);
    return withExcerpt();
  }
  result.isProcessable = true;

  if (payload.length > options.maxPayloadBytes) {
    fail(
      result,
      'too_large',
      parser.key,
      `payload of ${payload.length} bytes is over the ${options.maxPayloadBytes}-byte limit`,
    );
    return withExcerpt();
  }
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    fail(result, 'invalid_json', parser.key, 'payload is not valid UTF-8');
    return withExcerpt();
  }
  // Valid UTF-8 of at most EXCERPT_BYTES: the excerpt is the text itself.
  result.excerpt = payload.length <= EXCERPT_BYTES ? pgText(text) : excerptOf(payload);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail(result, 'invalid_json', parser.key, `payload is not JSON (${(err as Error).message})`.slice(0, 300));
  }
  const parsed = parser.parse(json, {
    topic: message.topic,
    params: match.params,
    receivedAt: message.receivedAt,
    siteSlug: ctx.siteSlug,
    parserConfig: match.pattern.parserConfig,
  });
  if (!parsed.ok) return fail(result, parsed.kind, parser.key, parsed.message, parsed.issuePaths);
  result.rows = parsed.rows;
  return result;
}

/*
 * What a message takes while it waits for its commit, in bytes of V8 heap (64-bit, no pointer
 * compression, as Node ships): the constants are measured, by holding thousands of messages of
 * each kind and reading the heap (tests/integration/pending-bytes.test.ts keeps heldBytes within
 * 25 % of that). BFG_MAX_PENDING_BYTES bounds their sum.
 */
/** The ProcessedMessage with its Date, the writer's entry, the session's ack ticket and callback. */
const HELD_MESSAGE_BYTES = 230;
/** The rows object and its four arrays. */
const HELD_ROWS_BYTES = 350;
/** A gateway or datalogger row. */
const HELD_DEVICE_BYTES = 100;
/** A sensor row (ident only or with details) and its slot. */
const HELD_SENSOR_BYTES = 50;
/** A reading row (its value a heap number) and its slot. */
const HELD_READING_BYTES = 100;
/** A failure with its fingerprint and issue paths' array. */
const HELD_FAILURE_BYTES = 390;
/** A Buffer object (the archived payload's bytes are counted by its length). */
const HELD_BUFFER_BYTES = 300;
/** A string: its header, then one byte per character (device text is mostly Latin-1). */
const stringBytes = (s: string) => 24 + s.length;

/** heldBytes: the heap a held message takes, estimated from what it carries (see the constants). */
export function heldBytes(m: ProcessedMessage): number {
  let bytes = HELD_MESSAGE_BYTES + stringBytes(m.topic) + stringBytes(m.excerpt);
  const rows = m.rows;
  if (rows) {
    bytes += HELD_ROWS_BYTES + (rows.gateways.length + rows.dataloggers.length) * HELD_DEVICE_BYTES;
    bytes += rows.sensors.length * HELD_SENSOR_BYTES + rows.readings.length * HELD_READING_BYTES;
  }
  const failure = m.failure;
  if (failure) {
    bytes += HELD_FAILURE_BYTES + stringBytes(failure.message);
    for (const path of failure.issuePaths) bytes += stringBytes(path) + 8;
  }
  if (m.archivePayload) bytes += HELD_BUFFER_BYTES + m.archivePayload.length;
  return bytes;
}

/** Records why the message is not ingested; identical errors share a fingerprint (and a log row). */
function fail(
  result: ProcessedMessage,
  kind: FailureKind,
  parser: string | null,
  text: string,
  issuePaths: string[] = [],
): ProcessedMessage {
  const scope = result.matchedTopicId ?? result.topic;
  const paths = issuePaths.map(pgText);
  result.failure = {
    kind,
    parser,
    message: pgText(text),
    issuePaths: paths,
    fingerprint: fingerprint([result.connectionId, scope, parser, kind, text, ...paths]),
  };
  return result;
}

/** The start of a payload as text for previews (invalid UTF-8 replaced, never parsed). */
function excerptOf(payload: Buffer): string {
  return pgText(payload.subarray(0, EXCERPT_BYTES).toString('utf8'));
}

/**
 * Postgres text (and jsonb) cannot hold U+0000. Device input that carries it would make the whole
 * batch fail, so it is replaced with U+FFFD wherever device-controlled text is stored.
 */
export function pgText(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

function fingerprint(parts: readonly (string | null)[]): string {
  return createHash('sha1').update(JSON.stringify(parts)).digest('hex');
}
