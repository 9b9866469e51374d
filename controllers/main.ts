/**
 * Entry point of the fos1 controller: watches fos1's CRDs and starts change workflows.
 * Configuration is parsed once, here, from the environment:
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `KUBECONFIG_PATH` | (empty: in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`) | kubeconfig file |
 * | `TEMPORAL_ADDRESS` | `localhost:7233` | Temporal frontend |
 * | `TEMPORAL_NAMESPACE` | `default` | |
 * | `LOG_LEVEL` | `info` | pino level |
 *
 * The policy workflows it starts run on the cluster task queue; the cluster worker must be
 * created with `ciliumDeps` (workers/fos1-worker.ts) so their activities are registered.
 */
import { Client, Connection } from '@temporalio/client';
import pino from 'pino';
import { z } from 'zod';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { FirewallRuleController } from './firewall-rule-controller';

const envSchema = z.object({
  KUBECONFIG_PATH: z.string().default(''),
  TEMPORAL_ADDRESS: z.string().min(1).default('localhost:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
});

/** Parsed controller configuration. */
export interface ControllerConfig {
  kubeconfigPath: string | undefined;
  temporalAddress: string;
  temporalNamespace: string;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseControllerConfig(env: NodeJS.ProcessEnv): ControllerConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new Error(`invalid controller configuration:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  const e = parsed.data;
  return { kubeconfigPath: e.KUBECONFIG_PATH || undefined, temporalAddress: e.TEMPORAL_ADDRESS, temporalNamespace: e.TEMPORAL_NAMESPACE, logLevel: e.LOG_LEVEL };
}

async function main(): Promise<void> {
  const config = parseControllerConfig(process.env);
  const logger = pino({ level: config.logLevel });
  const kube = new KubeClient(loadKubeConfig(config.kubeconfigPath));
  const connection = await Connection.connect({ address: config.temporalAddress });
  const controller = new FirewallRuleController({ kube, temporal: new Client({ connection, namespace: config.temporalNamespace }), logger });
  await controller.start();
  logger.info('fos1 controller watching FirewallRules and FirewallZones');
  const stop = async () => {
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
