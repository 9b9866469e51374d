/**
 * Five projects: `unit` (pure logic, fast, no privileges), `workflow` (workflow logic on
 * Temporal's time-skipping test server with fake activities, no privileges), `replay`
 * (committed histories replayed against the current workflow code, see
 * docs/workflow-versioning.md) and `integration` (real Temporal dev server, network
 * namespaces, pinned eBPF maps) and `chaos` (the fault harness of test/chaos: the same real
 * parts, workers as child processes SIGKILLed at exact steps, the server restarted; see
 * test/chaos/RESULTS.md). Files run one at a time because they share the kernel's namespace
 * list and bpffs.
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
      // Workflow logic on Temporal's time-skipping test server with fake activities: no root.
      displayName: 'workflow',
      testMatch: ['<rootDir>/test/workflow/**/*.test.ts'],
      transform,
      transformIgnorePatterns,
      testEnvironment: 'node',
    },
    {
      // Today's recorded histories replayed against the current workflow code: no server, no root.
      displayName: 'replay',
      testMatch: ['<rootDir>/test/replay/**/*.test.ts'],
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
    {
      // `npx jest --selectProjects chaos`: every fault at every step (bounded: the cells of a
      // fault run at once, on a node each).
      displayName: 'chaos',
      testMatch: ['<rootDir>/test/chaos/**/*.test.ts'],
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
