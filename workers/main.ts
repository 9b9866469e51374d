/**
 * Worker entry point: parses configuration once, connects to Temporal, and runs the
 * node worker (unless FOS1_NODE_WORKER=false) and the cluster worker (unless
 * FOS1_CLUSTER_WORKER=false) until SIGINT or SIGTERM. With FOS1_HEALTH_PORT set it serves
 * `GET /readyz` (workers/readiness.ts): 200 once every worker polls its task queue.
 */
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { createLogger } from '../log/logger';
import { readApprovalPolicyFile } from '../activities/approval';
import { openWorkerAuditStores } from './audit';
import { parseWorkerConfig } from './config';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { createNodeDeps, createWorkers } from './fos1-worker';
import { checkReadiness, startReadinessServer } from './readiness';
import { nativeConnectionOptions } from './temporal-connection';

async function main(): Promise<void> {
  const config = parseWorkerConfig(process.env);
  const logger = createLogger({ level: config.logLevel, base: { node: config.nodeName } });
  Runtime.install({
    logger: new DefaultLogger('WARN', (entry) => logger.child({ component: 'temporal' })[entry.level === 'WARN' ? 'warn' : 'error']({ ...entry.meta }, entry.message)),
    shutdownSignals: ['SIGINT', 'SIGTERM'],
  });
  const connection = await NativeConnection.connect(nativeConnectionOptions(config.temporal));
  logger.info({ temporal: config.temporal.describe }, 'connected to Temporal');
  // The cluster worker appends every workflow's audit records and revisions (docs/audit.md).
  const audit = config.clusterWorker ? openWorkerAuditStores(config.audit, logger) : undefined;
  if (audit) logger.info({ backend: config.audit.store.backend, ...(config.audit.store.backend === 'file' ? { dir: config.audit.dir } : {}), signingKey: config.audit.signingKeyFile }, 'audit store open');
  const kube = config.clusterWorker && config.kubeconfig ? new KubeClient(loadKubeConfig(config.kubeconfig === 'default' ? undefined : config.kubeconfig)) : undefined;
  // A broken policy file stops the worker here, naming the field, rather than failing every change.
  if (config.clusterWorker && config.approvalPolicyFile) await readApprovalPolicyFile(config.approvalPolicyFile);
  const workers = await createWorkers({
    connection,
    namespace: config.temporal.namespace,
    nodeName: config.nodeName,
    clusterWorker: config.clusterWorker,
    nodeWorker: config.nodeWorker,
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
    ...(audit ? { audit } : {}),
    guard: config.guard,
    ...(config.approvalPolicyFile ? { approvalPolicyFile: config.approvalPolicyFile } : {}),
    nodeDeps: createNodeDeps(config, logger),
    inventory: kube ? { kind: 'kubernetes', kube } : config.inventoryFile ? { kind: 'file', path: config.inventoryFile } : { kind: 'none' },
    ...(kube
      ? { ciliumDeps: { kube, fieldManager: config.fieldManager, logger }, quarantineDeps: { kube, fieldManager: config.fieldManager, config: config.quarantine, logger } }
      : {}),
    logger,
  });
  logger.info(
    { taskQueues: workers.map((w) => w.options.taskQueue), netns: config.netns ?? '(host)', bpfPinDir: config.bpfPinDir },
    'fos1 worker running',
  );
  const running = Promise.all(workers.map((w) => w.run()));
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
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
