/**
 * Entry point of the HTTP API (api/server.ts) as its own process — the Helm chart's API
 * Deployment runs it: `npx tsx api/main.ts`. Configuration (api/config.ts) is parsed once,
 * here, from the environment; the API serves until SIGINT/SIGTERM. `npm start` runs the
 * API with the same settings (scripts/start-dev.ts).
 */
import { Client, Connection } from '@temporalio/client';
import { openAuditStore, openRevisionStore } from '../activities/audit-store';
import { createLogger } from '../log/logger';
import { createAuthenticator, httpSecurityFrom } from '../auth/config';
import { clientConnectionOptions } from '../workers/temporal-connection';
import { parseApiConfig } from './config';
import { startApiServer } from './server';
import { parseMetricsConfig } from '../metrics/config';
import { startMetricsServer } from '../metrics/server';
import { setupTracing, tracingClientInterceptors } from '../telemetry/tracing';

async function main(): Promise<void> {
  const config = parseApiConfig(process.env);
  const metrics = parseMetricsConfig(process.env);
  const logger = createLogger({ level: config.logLevel, base: { component: 'api' } });
  const tracing = setupTracing('fos1-api', process.env);
  const authenticator = createAuthenticator(config.auth);
  const connection = await Connection.connect(clientConnectionOptions(config.temporal));
  const client = new Client({ connection, namespace: config.temporal.namespace, ...(tracing ? { interceptors: tracingClientInterceptors() } : {}) });
  // Read-only: the cluster worker appends and signs (the API has no signing key).
  const auditStore = openAuditStore(config.audit.store);
  const revisions = openRevisionStore(config.audit.store, true);
  const server = await startApiServer({
    client,
    port: config.port,
    host: config.host,
    logger,
    security: httpSecurityFrom(config.auth, authenticator),
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
    audit: { store: auditStore, revisions, publicKeyFiles: config.audit.publicKeyFiles },
  });
  logger.info({ address: `http://${config.host}:${config.port}`, auth: authenticator.kind, signsIdentity: config.identityKey !== undefined, temporal: config.temporal.describe }, 'fos1 API listening');
  // Metrics on their own loopback listener (FOS1_METRICS_PORT), outside the API's authentication.
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info(metrics.listener, 'metrics listening (GET /metrics)');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  server.close();
  await server.flushAudit();
  await Promise.all([auditStore.close(), revisions.close()]);
  metricsServer?.close();
  await tracing?.shutdown();
  await connection.close();
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
