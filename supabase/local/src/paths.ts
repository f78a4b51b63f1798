import path from 'node:path';

/** The repository root, from this file's place in `supabase/local/src`. */
export const repoRoot = path.resolve(import.meta.dirname, '../../..');

/** Where the schema and its plain-Postgres prerequisites live. */
export const schemaPaths = {
  bootstrapDir: path.join(repoRoot, 'sql', 'bootstrap'),
  migrationsDir: path.join(repoRoot, 'supabase', 'migrations'),
  seedFile: path.join(repoRoot, 'supabase', 'seed.sql'),
} as const;

export type SchemaPaths = typeof schemaPaths;
