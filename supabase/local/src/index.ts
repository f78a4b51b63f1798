export { loadLocalConfig, type LocalConfig } from './config.ts';
export {
  openLocalDatabase,
  createDatabaseIfMissing,
  type LocalDatabase,
  type OpenLocalDatabaseOptions,
} from './database.ts';
export { startEmbeddedPostgres, type EmbeddedPostgresOptions, type RunningPostgres } from './embedded-postgres.ts';
export { LocalStackError, coerceError } from './errors.ts';
export { migrate, listMigrations, type MigrateOptions, type MigrateResult } from './migrate.ts';
export {
  isSupabaseDatabase,
  missingSupabasePrerequisites,
  waitForSupabasePrerequisites,
} from './supabase-prerequisites.ts';
export { schemaPaths, repoRoot, type SchemaPaths } from './paths.ts';
export { getFreePort, isPortFree } from './port.ts';
export { startDemoBroker, type DemoBroker, type DemoBrokerOptions } from './demo-broker.ts';
export {
  startRealtimeServer,
  DEFAULT_LIMITS as DEFAULT_REALTIME_LIMITS,
  type RealtimeServer,
  type RealtimeServerOptions,
} from './realtime/server.ts';
export type { SessionLimits as RealtimeLimits } from './realtime/socket-session.ts';
export { hashPassword, verifyPassword } from './auth/passwords.ts';
export { addUser, newUserSchema, type NewUser } from './auth/users.ts';
export { mintAccessToken, mintAnonKey, mintServiceRoleKey, type TokenSession, type TokenUser } from './auth/tokens.ts';
export { createAuthApi, AUTH_PREFIX, type AuthApiOptions, type HttpHandler } from './auth/api/auth-server.ts';
export { AuthApiError } from './auth/api/api-error.ts';
export {
  createUser,
  updateUser,
  deleteUser,
  listUsers,
  adminUserParamsSchema,
  MIN_PASSWORD_LENGTH,
  type AdminUserParams,
} from './auth/users.ts';
export { refreshSession, startSession, endSessions, hashToken, type IssuedSession } from './auth/sessions.ts';
export { startLocalStack, type LocalStack } from './stack.ts';
export { startWebServer, type WebServer, type WebServerOptions } from './web-server.ts';
