export { loadLocalConfig, type LocalConfig } from './config.ts';
export { openLocalDatabase, createDatabaseIfMissing, type LocalDatabase } from './database.ts';
export { startEmbeddedPostgres, type EmbeddedPostgresOptions, type RunningPostgres } from './embedded-postgres.ts';
export { LocalStackError, coerceError } from './errors.ts';
export { migrate, listMigrations, type MigrateOptions, type MigrateResult } from './migrate.ts';
export { schemaPaths, repoRoot, type SchemaPaths } from './paths.ts';
export { getFreePort, isPortFree } from './port.ts';
export { startDemoBroker, type DemoBroker, type DemoBrokerOptions } from './demo-broker.ts';
export { startRealtimeServer, type RealtimeServer, type RealtimeServerOptions } from './realtime/server.ts';
