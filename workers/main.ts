/**
 * Worker entry point: parses configuration once, connects to Temporal, and runs the
 * node worker (and, unless FOS1_CLUSTER_WORKER=false, the cluster worker) until SIGINT
 * or SIGTERM.
 */
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pino from 'pino';
import { parseWorkerConfig } from './config';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { createNodeDeps, createWorkers } from './fos1-worker';

async function main(): Promise<void> {
  const config = parseWorkerConfig(process.env);
  const logger = pino({ level: config.logLevel, base: { node: config.nodeName } });
  Runtime.install({
    logger: new DefaultLogger('WARN', (entry) => logger.child({ component: 'temporal' })[entry.level === 'WARN' ? 'warn' : 'error']({ ...entry.meta }, entry.message)),
    shutdownSignals: ['SIGINT', 'SIGTERM'],
  });
  const connection = await NativeConnection.connect({ address: config.temporalAddress });
  const kube = config.clusterWorker && config.kubeconfig ? new KubeClient(loadKubeConfig(config.kubeconfig === 'default' ? undefined : config.kubeconfig)) : undefined;
  const workers = await createWorkers({
    connection,
    namespace: config.temporalNamespace,
    nodeName: config.nodeName,
    clusterWorker: config.clusterWorker,
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
    nodeDeps: createNodeDeps(config, logger),
    ...(kube
      ? { ciliumDeps: { kube, fieldManager: config.fieldManager, logger }, quarantineDeps: { kube, fieldManager: config.fieldManager, config: config.quarantine, logger } }
      : {}),
    logger,
  });
  logger.info(
    { taskQueues: workers.map((w) => w.options.taskQueue), netns: config.netns ?? '(host)', bpfPinDir: config.bpfPinDir },
    'fos1 worker running',
  );
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
