/**
 * A real Temporal dev server (the CLI built by scripts/bootstrap.sh) with fos1's search
 * attributes registered, plus workers for one node acting on a test namespace and bpffs folder.
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { workflowBundle } from './workflow-bundle';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { SearchAttributes } from '../../model/naming';
import { temporalCliPath } from '../../scripts/paths';
import { createNodeDeps, createWorkers, type NodeTarget } from '../../workers/fos1-worker';
import type { FaultInjector } from '../../activities/node-activities';
import { testAuditStores, type TestAuditStores } from './audit-stores';
import type { GuardConfig } from '../../model/enforcement-guard';
import type { ClusterPolicyActivityDeps } from '../../activities/cluster-policy';
import type { Tracing } from '../../telemetry/tracing';

let runtimeInstalled = false;

/**
 * Starts the dev server: on a free port, in memory; or, with `dbFilename` (and `port`), with
 * its history in a SQLite file, so a test can stop it and start it again where it was.
 * `uiPort` turns the embedded Web UI on at that port (the browser test); without it the UI
 * stays off, as every other test needs no UI. `sdkMetricsAddress` (`host:port`) has the SDK's
 * Runtime export its Prometheus metrics there (the metrics test); it applies to the first call in
 * a test file, which installs the Runtime.
 */
export function startTemporal(options: { dbFilename?: string; port?: number; uiPort?: number; sdkMetricsAddress?: string } = {}): Promise<TestWorkflowEnvironment> {
  if (!runtimeInstalled) {
    // Expected failures (rolled-back changes) are logged by the SDK as warnings; keep test
    // output to real errors unless FOS1_TEST_LOG asks for more.
    Runtime.install({
      logger: new DefaultLogger(process.env.FOS1_TEST_LOG ? 'INFO' : 'ERROR'),
      ...(options.sdkMetricsAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress: options.sdkMetricsAddress } } } } : {}),
    });
    runtimeInstalled = true;
  }
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalCliPath() },
      searchAttributes: Object.values(SearchAttributes),
      ip: '127.0.0.1',
      ...(options.uiPort !== undefined ? { ui: true, uiPort: options.uiPort } : { ui: false }),
      ...(options.dbFilename ? { dbFilename: options.dbFilename } : {}),
      ...(options.port ? { port: options.port } : {}),
    },
  });
}

/** Re-exported for the tests that take it from here. */
export { workflowBundle };

/** Running workers for one node (and the cluster queue); `stop()` shuts them down. */
export interface RunningWorkers {
  workers: Worker[];
  stop(): Promise<void>;
}

/**
 * Starts the cluster worker (checking identity assertions with `identityKey`, if given; enforcing
 * with `guard`, the defaults when not given) and the node worker for `nodeName`, acting on `target`.
 * `faults` is the node activities' fault hook (it may return a promise the test resolves, to hold
 * a step); `logger` receives the workers' logs; `tracing` traces their workflows and activities
 * (with the traced bundle).
 */
export async function startWorkers(
  env: TestWorkflowEnvironment,
  nodeName: string,
  target: NodeTarget,
  options: { clusterWorker?: boolean; identityKey?: Buffer; faults?: FaultInjector; logger?: Logger; guard?: GuardConfig | (() => GuardConfig); audit?: TestAuditStores; approvalPolicyFile?: string; ciliumDeps?: ClusterPolicyActivityDeps; tracing?: Tracing } = {},
): Promise<RunningWorkers> {
  // The cluster worker appends every workflow's audit records: a fresh file store unless the test brings its own.
  const clusterWorker = options.clusterWorker ?? true;
  const ownAudit = clusterWorker && !options.audit ? testAuditStores() : undefined;
  const audit = options.audit ?? ownAudit;
  // A test that inspects what the workers log passes its own logger (writing to a buffer, say).
  const logger = options.logger ?? pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  const workers = await createWorkers({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    nodeName,
    clusterWorker,
    ...(audit ? { audit } : {}),
    ...(options.identityKey ? { identityKey: options.identityKey } : {}),
    ...(options.guard ? { guard: options.guard } : {}),
    ...(options.approvalPolicyFile ? { approvalPolicyFile: options.approvalPolicyFile } : {}),
    ...(options.ciliumDeps ? { ciliumDeps: options.ciliumDeps } : {}),
    nodeDeps: { ...createNodeDeps({ blocklistStoreDir: join(tmpdir(), `fos1-test-blocklists-${process.pid}`), ...target }, logger), ...(options.faults ? { faults: options.faults } : {}) },
    logger,
    workflowBundle: await workflowBundle({ traced: options.tracing !== undefined }),
    ...(options.tracing ? { tracing: options.tracing } : {}),
  });
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    workers,
    async stop() {
      workers.forEach((w) => w.shutdown());
      await running;
      await ownAudit?.close();
    },
  };
}
