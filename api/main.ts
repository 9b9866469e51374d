/**
 * API entry point: parses configuration once, connects to Temporal and serves the HTTP API
 * until SIGINT/SIGTERM: `npx tsx api/main.ts` (in a cluster; `npm start` runs the API in its own process
 * with the same settings, see scripts/start-dev.ts).
 */
import { Client, Connection } from '@temporalio/client';
import pino from 'pino';
import { createAuthenticator, httpSecurityFrom } from '../auth/config';
import { parseApiConfig } from './config';
import { startApiServer } from './server';

async function main(): Promise<void> {
  const config = parseApiConfig(process.env);
  const logger = pino({ level: config.logLevel, base: { component: 'api' } });
  const authenticator = createAuthenticator(config.auth);
  const connection = await Connection.connect({ address: config.temporalAddress });
  const client = new Client({ connection, namespace: config.temporalNamespace });
  const server = await startApiServer({
    client,
    port: config.port,
    host: config.host,
    logger,
    security: httpSecurityFrom(config.auth, authenticator),
    ...(config.identityKey ? { identityKey: config.identityKey } : {}),
  });
  logger.info({ address: `http://${config.host}:${config.port}`, auth: authenticator.kind, signsIdentity: config.identityKey !== undefined }, 'fos1 API listening');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  server.close();
  await connection.close();
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
