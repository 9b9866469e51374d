/**
 * Worker entry point: parses configuration once, connects to Temporal, and runs the
 * node worker (unless FOS1_NODE_WORKER=false) and the cluster worker (unless
 * FOS1_CLUSTER_WORKER=false) until SIGINT or SIGTERM. With FOS1_HEALTH_PORT set it serves
 * `GET /readyz` (workers/readiness.ts): 200 once every worker polls its task queue. With
 * FOS1_METRICS_PORT set it serves fos1's metrics (metrics/registry.ts; the node worker's read
 * from its pinned maps at scrape), with FOS1_TEMPORAL_METRICS_PORT the SDK's own
 * (metrics/config.ts, docs/observability.md).
 */
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { createLogger } from '../log/logger';
import { readApprovalPolicyFile, readApprovalPolicyObject } from '../activities/approval';
import { openWorkerAuditStores } from './audit';
import { parseWorkerConfig } from './config';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { createNodeDeps, createWorkers } from './fos1-worker';
import { checkReadiness, startReadinessServer } from './readiness';
import { nativeConnectionOptions } from './temporal-connection';
import { parseMetricsConfig, temporalTelemetryOptions } from '../metrics/config';
import { registerNodeMapMetrics } from '../metrics/node-collectors';
import { startMetricsServer } from '../metrics/server';
import { setupTracing } from '../telemetry/tracing';

async function main(): Promise<void> {
  const config = parseWorkerConfig(process.env);
  const metrics = parseMetricsConfig(process.env);
  const logger = createLogger({ level: config.logLevel, base: { node: config.nodeName } });
  const tracing = setupTracing('fos1-worker', process.env);
  Runtime.install({
    logger: new DefaultLogger('WARN', (entry) => logger.child({ component: 'temporal' })[entry.level === 'WARN' ? 'warn' : 'error']({ ...entry.meta }, entry.message)),
    shutdownSignals: ['SIGINT', 'SIGTERM'],
    ...temporalTelemetryOptions(metrics),
  });
  const connection = await NativeConnection.connect(nativeConnectionOptions(config.temporal));
  logger.info({ temporal: config.temporal.describe }, 'connected to Temporal');
  // The cluster worker appends every workflow's audit records and revisions (docs/audit.md).
  const audit = config.clusterWorker ? openWorkerAuditStores(config.audit, logger) : undefined;
  if (audit) logger.info({ backend: config.audit.store.backend, ...(config.audit.store.backend === 'file' ? { dir: config.audit.dir } : {}), signingKey: config.audit.signingKeyFile }, 'audit store open');
  const kube = config.clusterWorker && config.kubeconfig ? new KubeClient(loadKubeConfig(config.kubeconfig === 'default' ? undefined : config.kubeconfig)) : undefined;
  // A broken policy file stops the worker here, naming the field, rather than failing every change.
  if (config.clusterWorker && config.approvalPolicyFile) await readApprovalPolicyFile(config.approvalPolicyFile);
  const approvalPolicyObject = kube && config.approvalPolicyName ? { kube, name: config.approvalPolicyName } : undefined;
  if (approvalPolicyObject) await readApprovalPolicyObject(approvalPolicyObject);
  const workers = await createWorkers({
    connection,
    namespace: config.temporal.namespace,
    nodeName: config.nodeName,
    clusterWorker: config.clusterWorker,
    nodeWorker: config.nodeWorker,
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
    ...(config.controllerIdentityKey ? { controllerIdentityKey: config.controllerIdentityKey } : {}),
    ...(audit ? { audit } : {}),
    guard: config.guard,
    ...(config.approvalPolicyFile ? { approvalPolicyFile: config.approvalPolicyFile } : {}),
    ...(approvalPolicyObject ? { approvalPolicyObject } : {}),
    nodeDeps: createNodeDeps(config, logger),
    // Prebuilt (FOS1_WORKFLOW_BUNDLE): a restarted worker polls without bundling first.
    ...(config.workflowBundle ? { workflowBundle: { codePath: config.workflowBundle } } : {}),
    inventory: kube ? { kind: 'kubernetes', kube } : config.inventoryFile ? { kind: 'file', path: config.inventoryFile } : { kind: 'none' },
    ...(tracing ? { tracing } : {}),
    ...(kube
      ? { ciliumDeps: { kube, fieldManager: config.fieldManager, logger }, quarantineDeps: { kube, fieldManager: config.fieldManager, config: config.quarantine, logger } }
      : {}),
    logger,
  });
  logger.info(
    { taskQueues: workers.map((w) => w.options.taskQueue), netns: config.netns ?? '(host)', bpfPinDir: config.bpfPinDir, workflowBundle: config.workflowBundle ?? '(bundled at start)' },
    'fos1 worker running',
  );
  const running = Promise.all(workers.map((w) => w.run()));
  if (config.nodeWorker) registerNodeMapMetrics(config.nodeName, config.bpfPinDir);
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info({ ...metrics.listener, temporalMetrics: metrics.temporalBindAddress ?? 'off' }, 'metrics listening (GET /metrics)');
  const health = config.health
    ? await startReadinessServer({ ...config.health, check: () => checkReadiness(workers, connection.workflowService) })
    : undefined;
  if (config.health) logger.info(config.health, 'readiness endpoint listening (GET /readyz)');
  try {
    await running;
  } finally {
    health?.close();
    // The last checkpoint covers every record appended before shutdown.
    await audit?.close();
    metricsServer?.close();
    await tracing?.shutdown();
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
