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
 * | `FOS1_LEASE_NAMESPACE` | `$POD_NAMESPACE`, else `fos1-system` | namespace of the leader-election Lease |
 * | `FOS1_LEASE_NAME` | `fos1-controller` | the Lease (coordination.k8s.io/v1) |
 * | `FOS1_LEASE_IDENTITY` | `$POD_NAME` (else the host name) + the pid | this candidate |
 * | `FOS1_LEASE_DURATION_SECONDS` | `15` | a follower takes over this long after the leader stopped renewing |
 * | `FOS1_CONTROLLER_BAKE_SECONDS` | (the change workflow's default) | bake of each wave of the changes the controllers start |
 * | `FOS1_CONTROLLER_IDENTITY_KEY_FILE` | (unset: changes self-asserted) | the controllers' own identity key (32 bytes, base64), shared with the cluster worker only: the changes they start are recorded verified as `fos1-controller` |
 *
 * Only the process holding the Lease acts; when it loses the Lease it exits (the Deployment
 * restarts it as a follower), as controller-runtime does.
 * | `FOS1_METRICS_PORT`, `FOS1_METRICS_HOST` | (off), `127.0.0.1` | `GET /metrics` (metrics/config.ts, docs/observability.md) |
 *
 * The policy workflows it starts run on the cluster task queue; the cluster worker must be
 * created with `ciliumDeps` (workers/fos1-worker.ts) so their activities are registered.
 */
import { Client, Connection } from '@temporalio/client';
import { createLogger } from '../log/logger';
import { z } from 'zod';
import { KubeClient, loadKubeConfig } from '../k8s/client';
import { hostname } from 'node:os';
import { loadIdentityKey } from '../auth/identity-assertion';
import { ControllerManager } from './manager';
import { parseMetricsConfig } from '../metrics/config';
import { startMetricsServer } from '../metrics/server';
import { clientConnectionOptions, parseEnvWithTemporal, type TemporalConnectionConfig } from '../workers/temporal-connection';

const envSchema = z.object({
  KUBECONFIG_PATH: z.string().default(''),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  POD_NAMESPACE: z.string().default(''),
  POD_NAME: z.string().default(''),
  FOS1_LEASE_NAMESPACE: z.string().default(''),
  FOS1_LEASE_NAME: z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'must be a Kubernetes object name').default('fos1-controller'),
  FOS1_LEASE_IDENTITY: z.string().default(''),
  FOS1_LEASE_DURATION_SECONDS: z.coerce.number().int().min(2, 'must be at least 2 seconds').max(3600).default(15),
  FOS1_CONTROLLER_BAKE_SECONDS: z.coerce.number().int().min(0, 'must be 0 or more').optional(),
  FOS1_CONTROLLER_IDENTITY_KEY_FILE: z.string().min(1).optional(),
});

/** Parsed controller configuration. */
export interface ControllerConfig {
  kubeconfigPath: string | undefined;
  /** Address, namespace and TLS/mTLS material (TEMPORAL_* variables). */
  temporal: TemporalConnectionConfig;
  logLevel: string;
  lease: { namespace: string; name: string; identity: string; leaseDurationSeconds: number };
  bakeSeconds: number | undefined;
  /** The controllers' identity key (read at start), if FOS1_CONTROLLER_IDENTITY_KEY_FILE names one. */
  identityKey: Buffer | undefined;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseControllerConfig(env: NodeJS.ProcessEnv): ControllerConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('controller', envSchema, env);
  let identityKey: Buffer | undefined;
  try {
    identityKey = e.FOS1_CONTROLLER_IDENTITY_KEY_FILE ? loadIdentityKey(e.FOS1_CONTROLLER_IDENTITY_KEY_FILE) : undefined;
  } catch (err) {
    throw new Error(`invalid controller configuration:\n  FOS1_CONTROLLER_IDENTITY_KEY_FILE: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    kubeconfigPath: e.KUBECONFIG_PATH || undefined,
    temporal,
    logLevel: e.LOG_LEVEL,
    lease: {
      namespace: e.FOS1_LEASE_NAMESPACE || e.POD_NAMESPACE || 'fos1-system',
      name: e.FOS1_LEASE_NAME,
      identity: e.FOS1_LEASE_IDENTITY || `${e.POD_NAME || hostname()}-${process.pid}`,
      leaseDurationSeconds: e.FOS1_LEASE_DURATION_SECONDS,
    },
    bakeSeconds: e.FOS1_CONTROLLER_BAKE_SECONDS,
    identityKey,
  };
}

async function main(): Promise<void> {
  const config = parseControllerConfig(process.env);
  const metrics = parseMetricsConfig(process.env);
  const logger = createLogger({ level: config.logLevel });
  const kube = new KubeClient(loadKubeConfig(config.kubeconfigPath));
  const connection = await Connection.connect(clientConnectionOptions(config.temporal));
  logger.info({ temporal: config.temporal.describe }, 'connected to Temporal');
  const manager = new ControllerManager({
    kube,
    temporal: new Client({ connection, namespace: config.temporal.namespace }),
    logger,
    lease: config.lease,
    ...(config.bakeSeconds !== undefined ? { bakeSeconds: config.bakeSeconds } : {}),
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
    onLostLease: () => {
      logger.error({ lease: config.lease }, 'lost the lease: exiting so that only the new leader acts');
      process.exit(1);
    },
  });
  if (!config.identityKey) logger.warn('no FOS1_CONTROLLER_IDENTITY_KEY_FILE: the changes the controllers start are recorded self-asserted (actorVerified false)');
  manager.start();
  logger.info({ lease: config.lease, signsIdentity: config.identityKey !== undefined }, 'fos1 controller campaigning for the lease (FirewallRule, FirewallZone, NetworkInterface, VLANPolicy)');
  // Process metrics (and any fos1 metric this process counts) like every fos1 process.
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info(metrics.listener, 'metrics listening (GET /metrics)');
  const stop = async () => {
    metricsServer?.close();
    await manager.stop({ release: true });
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
