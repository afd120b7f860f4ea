import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Namespace suites are independent (unique names per run) but each drives
    // real processes; two cores are plenty busy with a few files at a time.
    maxWorkers: 3,
    minWorkers: 1,
    reporters: ['default'],
  },
});
