export { loadIngestorConfig, type IngestorConfig } from './config.ts';
export { createIngestor, type Ingestor } from './ingestor.ts';
export { createRootLogger, type Logger } from './logger.ts';
export { backoffDelay } from './backoff.ts';
export { parseEnv } from './env.ts';
export { coerceError } from './errors.ts';
