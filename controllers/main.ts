/**
 * Entry point of the fos1 controller: watches fos1's CRDs and starts change workflows.
 * Configuration is parsed once, here, from the environment:
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `KUBECONFIG_PATH` | (empty: in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`) | kubeconfig file |
 * | `TEMPORAL_ADDRESS` | `localhost:7233` | Temporal frontend |
 * | `TEMPORAL_NAMESPACE` | `default` | |
 * | `TEMPORAL_TLS*`, `TEMPORAL_API_KEY` | (plaintext) | TLS / mTLS, see workers/temporal-connection.ts and docs/security.md |
 * | `LOG_LEVEL` | `info` | pino level |
 * | `FOS1_METRICS_PORT`, `FOS1_METRICS_HOST` | (off), `127.0.0.1` | `GET /metrics` (metrics/config.ts, docs/observability.md) |
 *
 * The policy workflows it starts run on the cluster task queue; the cluster worker must be
 * created with `ciliumDeps` (workers/fos1-worker.ts) so their activities are registered.
 */
import { Client, Connection } from '@temporalio/client';
import { createLogger } from '../log/logger';
import { z } from 'zod';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { FirewallRuleController } from './firewall-rule-controller';
import { parseMetricsConfig } from '../metrics/config';
import { startMetricsServer } from '../metrics/server';
import { clientConnectionOptions, parseEnvWithTemporal, type TemporalConnectionConfig } from '../workers/temporal-connection';

const envSchema = z.object({
  KUBECONFIG_PATH: z.string().default(''),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
});

/** Parsed controller configuration. */
export interface ControllerConfig {
  kubeconfigPath: string | undefined;
  /** Address, namespace and TLS/mTLS material (TEMPORAL_* variables). */
  temporal: TemporalConnectionConfig;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseControllerConfig(env: NodeJS.ProcessEnv): ControllerConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('controller', envSchema, env);
  return { kubeconfigPath: e.KUBECONFIG_PATH || undefined, temporal, logLevel: e.LOG_LEVEL };
}

async function main(): Promise<void> {
  const config = parseControllerConfig(process.env);
  const metrics = parseMetricsConfig(process.env);
  const logger = createLogger({ level: config.logLevel });
  const kube = new KubeClient(loadKubeConfig(config.kubeconfigPath));
  const connection = await Connection.connect(clientConnectionOptions(config.temporal));
  logger.info({ temporal: config.temporal.describe }, 'connected to Temporal');
  const controller = new FirewallRuleController({ kube, temporal: new Client({ connection, namespace: config.temporal.namespace }), logger });
  await controller.start();
  logger.info('fos1 controller watching FirewallRules and FirewallZones');
  // Process metrics (and any fos1 metric this process counts) like every fos1 process.
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info(metrics.listener, 'metrics listening (GET /metrics)');
  const stop = async () => {
    metricsServer?.close();
    await controller.stop();
    await connection.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
