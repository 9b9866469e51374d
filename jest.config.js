/**
 * Two projects: `unit` (pure logic, fast, no privileges) and `integration`
 * (real Temporal dev server, network namespaces, pinned eBPF maps). Integration
 * files run one at a time because they share the kernel's namespace list and bpffs.
 */
const transform = { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] };
// @kubernetes/client-node 1.x and a few of its dependencies are ESM-only; Jest (before Node 24.9)
// cannot require ESM, so those packages are compiled to CommonJS like our own sources.
transform['^.+/node_modules/.+\\.m?js$'] = ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }];
const transformIgnorePatterns = ['/node_modules/(?!(@kubernetes/client-node|openid-client|oauth4webapi|jose|jsonpath-plus|rfc4648|@apidevtools/json-schema-ref-parser)/)'];

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
      transform,
      transformIgnorePatterns,
      testEnvironment: 'node',
    },
    {
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      transform,
      transformIgnorePatterns,
      testEnvironment: 'node',
    },
  ],
  maxWorkers: 1,
  // Integration hooks start a Temporal server and bundle workflows; on a loaded 2-core
  // machine that takes more than Jest's default 5 s. (A per-project testTimeout is ignored.)
  testTimeout: 120_000,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
};
