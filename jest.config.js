/**
 * Two projects: `unit` (pure logic, fast, no privileges) and `integration`
 * (real Temporal dev server, network namespaces, pinned eBPF maps). Integration
 * files run one at a time because they share the kernel's namespace list and bpffs.
 */
const transform = { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] };

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
      transform,
      testEnvironment: 'node',
    },
    {
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      transform,
      testEnvironment: 'node',
      testTimeout: 120_000,
    },
  ],
  maxWorkers: 1,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
};
