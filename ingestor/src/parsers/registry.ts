import { bfgDataloggerDataParser } from './bfg-datalogger-data.ts';
import { bfgDataloggerInfoParser } from './bfg-datalogger-info.ts';
import { bfgGatewayStatusParser } from './bfg-gateway-status.ts';
import { genericJsonParser } from './generic-json.ts';
import type { Parser } from './types.ts';

/** The parsers an ingestor knows, by `mqtt_topic.parser` key. */
export interface ParserRegistry {
  get(key: string): Parser | undefined;
  /** Every key, sorted (for listings and "unknown parser" hints). */
  keys(): string[];
}

/**
 * A registry over `parsers`. A duplicate key throws: two parsers answering to one key would make
 * which one runs depend on list order, a silent bug in stored data.
 */
export function createParserRegistry(parsers: readonly Parser[]): ParserRegistry {
  const byKey = new Map<string, Parser>();
  for (const parser of parsers) {
    if (byKey.has(parser.key)) throw new Error(`duplicate parser key "${parser.key}"`);
    byKey.set(parser.key, parser);
  }
  const keys = [...byKey.keys()].sort();
  return {
    get: (key) => byKey.get(key),
    keys: () => [...keys],
  };
}

/** The BFG protocol v1 parsers and the declarative generic-json parser. */
export const builtInParsers: readonly Parser[] = [
  bfgGatewayStatusParser,
  bfgDataloggerInfoParser,
  bfgDataloggerDataParser,
  genericJsonParser,
];

export const defaultParserRegistry: ParserRegistry = createParserRegistry(builtInParsers);
