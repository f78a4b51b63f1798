// The account pieces the dashboard needs, without the rest of the local stack (broker, embedded
// Postgres) that `@bfg/local` also exports.
export { hashPassword, verifyPassword } from './passwords.ts';
export { mintAccessToken, mintAnonKey, type TokenUser } from './tokens.ts';
