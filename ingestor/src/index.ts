export { loadIngestorConfig, type IngestorConfig } from './config.ts';
export { createIngestor, type Ingestor } from './ingestor.ts';
export { createRootLogger, type Logger } from './logger.ts';
export { backoffDelay } from './backoff.ts';
export { parseEnv } from './env.ts';
export { coerceError } from './errors.ts';
export { Leases, LeaseLostError, leaseTiming, type LeaseTiming, type LeaseToken } from './leases.ts';
export { planLeases, type LeasePlan, type LeasePlanInput } from './lease-plan.ts';
export {
  acquireLeases,
  boundIdleTransaction,
  holdLeases,
  releaseLeases,
  renewLeases,
  type LeaseUnit,
} from './sql/leases.ts';
