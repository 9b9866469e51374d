/**
 * Entry point of the HTTP API (api/server.ts) as its own process — the Helm chart's API
 * Deployment runs it. Configuration is parsed once, here, from the environment:
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TLS*` | `localhost:7233`, `default`, off | Temporal, as every fos1 process reaches it (workers/temporal-connection.ts) |
 * | `FOS1_API_PORT` | `8080` | port to listen on |
 * | `FOS1_API_HOST` | `127.0.0.1` | address to bind (`0.0.0.0` in a pod, behind the Service) |
 * | `LOG_LEVEL` | `info` | pino level |
 */
import { Client, Connection } from '@temporalio/client';
import pino from 'pino';
import { z } from 'zod';
import { clientConnectionOptions, parseEnvWithTemporal, type TemporalConnectionConfig } from '../workers/temporal-connection';
import { startApiServer } from './server';

const envSchema = z.object({
  FOS1_API_PORT: z.coerce.number().int().min(1).max(65535, 'FOS1_API_PORT must be a port 1-65535').default(8080),
  FOS1_API_HOST: z.union([z.ipv4(), z.ipv6()], 'FOS1_API_HOST must be an IP address').default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
});

/** Parsed API process configuration. */
export interface ApiProcessConfig {
  temporal: TemporalConnectionConfig;
  port: number;
  host: string;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseApiConfig(env: NodeJS.ProcessEnv): ApiProcessConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('API', envSchema, env);
  return { temporal, port: e.FOS1_API_PORT, host: e.FOS1_API_HOST, logLevel: e.LOG_LEVEL };
}

async function main(): Promise<void> {
  const config = parseApiConfig(process.env);
  const logger = pino({ level: config.logLevel });
  const connection = await Connection.connect(clientConnectionOptions(config.temporal));
  const server = await startApiServer({ client: new Client({ connection, namespace: config.temporal.namespace }), port: config.port, host: config.host, logger });
  logger.info({ host: config.host, port: config.port, temporal: config.temporal.describe }, 'fos1 API listening');
  const stop = () => {
    server.close();
    void connection.close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
