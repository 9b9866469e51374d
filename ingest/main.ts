/**
 * Ingest worker entry point: parses configuration once, connects to Temporal and runs
 * until SIGINT/SIGTERM. `npx tsx ingest/main.ts` (see rules/README.md for the variables;
 * FOS1_METRICS_PORT serves its metrics, docs/observability.md).
 */
import { Client, Connection } from '@temporalio/client';
import { createLogger } from '../log/logger';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { loadRuleSetFile } from '../rules/rule-set';
import { INGEST_CHANNEL_ARGS, parseIngestConfig } from './config';
import { startIngest } from './ingest-worker';
import { clientConnectionOptions } from '../workers/temporal-connection';
import { parseMetricsConfig } from '../metrics/config';
import { startMetricsServer } from '../metrics/server';
import { setupTracing, tracingClientInterceptors } from '../telemetry/tracing';

async function main(): Promise<void> {
  const config = parseIngestConfig(process.env);
  const metrics = parseMetricsConfig(process.env);
  const tracing = setupTracing('fos1-ingest', process.env);
  const logger = createLogger({ level: config.logLevel, base: { component: 'ingest' } });
  // A bad rule set is a configuration error: report it before touching the network.
  loadRuleSetFile(config.rulesFile, { allowListNames: new Set(Object.keys(config.guard.allowLists)) });
  // Lazy: ingest starts (and keeps alerts in its spool) even while Temporal is unreachable.
  const connection = Connection.lazy(clientConnectionOptions(config.temporal, { channelArgs: { ...INGEST_CHANNEL_ARGS } }));
  logger.info({ temporal: config.temporal.describe }, 'Temporal client ready (connects on first use)');
  const client = new Client({ connection, namespace: config.temporal.namespace, ...(tracing ? { interceptors: tracingClientInterceptors() } : {}) });
  // DPIProfiles from a cluster (FOS1_DPI_KUBECONFIG: a kubeconfig path, or `in-cluster`).
  const kube = config.dpiKubeconfig ? new KubeClient(loadKubeConfig(config.dpiKubeconfig === 'in-cluster' ? undefined : config.dpiKubeconfig)) : undefined;
  const running = await startIngest(config, { workflows: client.workflow, logger, ...(kube ? { kube } : {}) });
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info(metrics.listener, 'metrics listening (GET /metrics)');
  const report = setInterval(() => logger.info({ stats: running.pipeline.stats, bridge: running.bridge.counts, delivery: running.bridge.delivery, spool: running.spool.stats, refusedFull: running.pipeline.refusedFull }, 'ingest stats'), 60_000);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  clearInterval(report);
  metricsServer?.close();
  await running.stop();
  await tracing?.shutdown();
  await connection.close();
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
