import type { ParsingLogKind } from '../vocabulary.ts';
import type { z } from 'zod';

/**
 * Values the named wildcards of a topic pattern captured, e.g. `+site/gateway/+gateway/status`
 * on `demo/gateway/gw-1/status` gives `{ site: 'demo', gateway: 'gw-1' }`. A `#name` wildcard
 * captures the remaining segments as an array.
 */
export type TopicParams = Readonly<Record<string, string | readonly string[]>>;

/** What a parser knows about the message besides its payload. */
export interface ParseContext {
  readonly topic: string;
  readonly params: TopicParams;
  /** When the ingestor received the message (the timestamp of messages that carry none). */
  readonly receivedAt: Date;
  /** The slug of the connection's site; a `{site}` topic segment must equal it. */
  readonly siteSlug: string;
  /** `mqtt_topic.parser_config` of the matched pattern (already validated by the parser's configSchema). */
  readonly parserConfig: unknown;
}

/** A gateway to create or update. Fields left undefined are not changed on an existing row. */
export interface GatewayRow {
  ident: string;
  online?: boolean;
  firmware?: string | null;
  uptimeS?: number | null;
  rssiDbm?: number | null;
  /** Time of the status (payload `ts`, or receive time). */
  statusAt?: Date;
}

export interface DataloggerRow {
  gatewayIdent: string;
  ident: string;
  model?: string | null;
  serial?: string | null;
  firmware?: string | null;
  intervalS?: number | null;
  infoAt?: Date;
}

export interface SensorRow {
  gatewayIdent: string;
  dataloggerIdent: string;
  ident: string;
  name?: string | null;
  kind?: string | null;
  unit?: string | null;
}

export type Quality = 'good' | 'suspect' | 'bad';

export interface ReadingRow {
  gatewayIdent: string;
  dataloggerIdent: string;
  sensorIdent: string;
  ts: Date;
  /** null = sensor fault reported by the device. */
  value: number | null;
  quality: Quality | null;
}

/**
 * What a message turns into. Every entity a reading or sensor refers to must be listed too (a
 * data message lists its gateway, datalogger and sensors with idents only), so the writer can
 * create them on first sight.
 */
export interface NormalizedRows {
  gateways: GatewayRow[];
  dataloggers: DataloggerRow[];
  sensors: SensorRow[];
  readings: ReadingRow[];
}

/** Why a message was not ingested; the kinds of `mqtt_parsing_log.kind`. */
/** The parsing-log kinds a parser itself reports (the pipeline adds invalid_json and unknown_parser). */
export type ParseFailureKind = Extract<ParsingLogKind, 'schema' | 'too_large' | 'invalid_topic' | 'processing'>;

export type ParseResult =
  | { ok: true; rows: NormalizedRows }
  | {
      ok: false;
      kind: ParseFailureKind;
      /** One line a person can act on, without payload contents. */
      message: string;
      /** zod issue paths, e.g. ['readings.0.value', 'ts']; empty when not a schema problem. */
      issuePaths: string[];
    };

/** A parser of the registry: a key (`mqtt_topic.parser`), its config schema, and the parse function. */
export interface Parser {
  readonly key: string;
  readonly description: string;
  /** Validates `mqtt_topic.parser_config` (built-in parsers take `{}`). */
  readonly configSchema: z.ZodType;
  /** `json` is the result of JSON.parse: anything. Must not throw. */
  parse(json: unknown, ctx: ParseContext): ParseResult;
}
