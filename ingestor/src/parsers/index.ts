/** The payload parsers: the registry, the built-in parsers and the pieces to write new ones. */
export { builtInParsers, createParserRegistry, defaultParserRegistry, type ParserRegistry } from './registry.ts';
export { bfgGatewayStatusParser } from './bfg-gateway-status.ts';
export { bfgDataloggerInfoParser } from './bfg-datalogger-info.ts';
export { bfgDataloggerDataParser } from './bfg-datalogger-data.ts';
export { configSchema as genericJsonConfigSchema, genericJsonParser, type GenericJsonConfig } from './generic-json.ts';
export {
  MAX_ITEMS_PER_MESSAGE,
  fromSchema,
  futureTimestampFailure,
  guarded,
  identSchema,
  labelSchema,
  timestampSchema,
  topicDevices,
  zodFailure,
  type ParseFailure,
  type SchemaParserSpec,
} from './common.ts';
export type * from './types.ts';
