import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'integration',
          root: import.meta.dirname,
          include: ['integration/**/*.test.ts'],
          // One Postgres cluster for the whole run; each file clones its own database from a
          // migrated template (see support/global-setup.ts).
          globalSetup: ['support/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          // Servers the tests start are real processes: a file that leaves one running fails.
          pool: 'forks',
        },
      },
      {
        test: {
          name: 'e2e',
          root: import.meta.dirname,
          include: ['e2e/**/*.test.ts'],
          // The whole local system once (see e2e/support/stack-setup.ts); the dashboard must be
          // built first (`npm test` runs `npm run build` as its pretest).
          globalSetup: ['e2e/support/stack-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          pool: 'forks',
        },
      },
    ],
  },
});
