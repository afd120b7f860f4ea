import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Namespace suites are independent (unique names per run) but each drives
    // real processes (a systemd container, two browsers, daemons with a
    // privileged monitor and a worker): two files at a time on two cores keeps
    // the timing bounds of the lifecycle suites honest.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default'],
  },
});
