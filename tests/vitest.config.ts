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
    ],
  },
});
