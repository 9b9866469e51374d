/**
 * `npm start`: fos1 on its embedded default, on one machine.
 *
 *  1. a sandbox network namespace standing in for the router node (the host's own
 *     routes are never touched by the dev stack);
 *  2. the Temporal dev server with SQLite file persistence and the Web UI, with fos1's
 *     search attributes registered;
 *  3. the worker (cluster + node task queues) acting on the sandbox namespace, and the
 *     HTTP API;
 *  4. the IDS ingest worker with the default rule set, tailing `<state dir>/eve.json`
 *     (append a Suricata alert line there and its source is blocked on the sandbox node)
 *     and taking NDJSON at POST http://127.0.0.1:8081/v1/eve. It keeps its read position
 *     next to the file, so a restart neither re-reads old alerts nor skips new ones.
 *
 * Every HTTP endpoint needs a bearer token. On first start this creates, under the state
 * directory (mode 0600): `tokens.json` (sha256 of each token → principal and roles),
 * `admin-token` (the admin token itself, for the README's curl commands) and
 * `identity.key` (the key the API signs identity assertions with and the cluster worker
 * checks them with). The token is never logged; the log names the files.
 *
 * Blocklists by reference (`blocklistRef: { file }`) are read only from `<state dir>/feeds/`,
 * which this creates.
 *
 * Ctrl-C stops everything; state (workflow history) survives a restart.
 *
 * With `TEMPORAL_ADDRESS` set, step 2 is skipped: the worker, the API and ingest use that
 * Temporal instead, with TLS/mTLS from the `TEMPORAL_TLS_*` variables (docs/security.md); its
 * namespace must exist and have fos1's search attributes registered.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { Connection, Client } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pino from 'pino';
import { z } from 'zod';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from '../model/naming';
import { startApiServer } from '../api/server';
import { authEnvSchema, createAuthenticator, defaultIdentityKeyFile, defaultTokenFile, httpSecurityFrom } from '../auth/config';
import { createIdentityKeyFile, loadIdentityKey } from '../auth/identity-assertion';
import { createTokenFile } from '../auth/token-file';
import { openAuditStore, openRevisionStore } from '../activities/audit-store';
import { auditConfigFrom, auditEnvSchema, openWorkerAuditStores } from '../workers/audit';
import { createNodeDeps, createWorkers } from '../workers/fos1-worker';
import { parseIngestConfig } from '../ingest/config';
import { startIngest } from '../ingest/ingest-worker';
import { guardConfigSchema } from '../model/enforcement-guard';
import { devStateDir, temporalCliPath } from './paths';
import { createSandboxNamespace } from './sandbox-netns';
import { clientConnectionOptions, nativeConnectionOptions, parseTemporalEnv, type TemporalConnectionConfig } from '../workers/temporal-connection';

const configSchema = z.object({
  FOS1_DEV_NETNS: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/).default('fos1-dev'),
  FOS1_NODE_NAME: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/).default('router-1'),
  FOS1_BPF_PIN_DIR: z.string().regex(/^\/sys\/fs\/bpf(\/[A-Za-z0-9_.-]+)+$/).default('/sys/fs/bpf/fos1-dev'),
  TEMPORAL_PORT: z.coerce.number().int().min(1).max(65535).default(7233),
  TEMPORAL_UI_PORT: z.coerce.number().int().min(1).max(65535).default(8233),
  FOS1_API_PORT: z.coerce.number().int().min(1).max(65535).default(8080),
  /** NDJSON EVE over HTTP for the ingest worker (on 127.0.0.1). */
  FOS1_INGEST_HTTP_PORT: z.coerce.number().int().min(1).max(65535).default(8081),
  /** EVE file the ingest worker tails (default `<state dir>/eve.json`, created empty). */
  FOS1_EVE_FILE: z.string().min(1).optional(),
  /** Key shared by the API (signs) and the cluster worker (verifies); created on first start. */
  FOS1_IDENTITY_KEY_FILE: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
}).extend(authEnvSchema.shape);

async function main(): Promise<void> {
  const config = configSchema.parse(process.env);
  const logger = pino({ level: config.LOG_LEVEL, base: { node: config.FOS1_NODE_NAME } });
  Runtime.install({ logger: new DefaultLogger('WARN', (e) => logger.warn({ ...e.meta }, e.message)), shutdownSignals: [] });

  ensureDevNamespace(config.FOS1_DEV_NETNS);
  logger.info({ netns: config.FOS1_DEV_NETNS }, 'sandbox namespace ready (gateway 10.200.0.1 / fd00:200::1 on lan0)');

  const stateDir = devStateDir();
  mkdirSync(stateDir, { recursive: true });
  let temporal: ChildProcess | undefined;
  let temporalConfig: TemporalConnectionConfig;
  if (process.env.TEMPORAL_ADDRESS) {
    temporalConfig = parseTemporalEnv(process.env);
    logger.info({ temporal: temporalConfig.describe }, 'using the Temporal at TEMPORAL_ADDRESS (no dev server)');
  } else {
    // The dev server listens in plaintext on loopback; TLS settings would be silently unused.
    const tlsVars = Object.keys(process.env).filter((k) => (k.startsWith('TEMPORAL_TLS') || k === 'TEMPORAL_API_KEY') && process.env[k]);
    if (tlsVars.length > 0) throw new Error(`${tlsVars.join(', ')}: set, but TEMPORAL_ADDRESS is not; the embedded dev server has no TLS (set TEMPORAL_ADDRESS to use a Temporal that has)`);
    temporalConfig = parseTemporalEnv({ TEMPORAL_ADDRESS: `127.0.0.1:${config.TEMPORAL_PORT}` });
    temporal = startTemporalServer(join(stateDir, 'temporal.db'), config.TEMPORAL_PORT, config.TEMPORAL_UI_PORT);
    await waitForServer(temporalConfig.address, temporal);
    logger.info({ address: temporalConfig.address, ui: `http://localhost:${config.TEMPORAL_UI_PORT}` }, 'Temporal dev server ready');
  }

  const auth = authEnvSchema.parse(config);
  if (auth.FOS1_AUTH === 'token-file') {
    const tokenFile = auth.FOS1_TOKEN_FILE ?? defaultTokenFile();
    const tokenOut = join(stateDir, 'admin-token');
    if (createTokenFile(tokenFile, tokenOut)) {
      logger.info({ tokenFile, adminToken: tokenOut }, `created the token file with an admin token; read it with: cat ${tokenOut}`);
    } else {
      logger.info({ tokenFile }, 'bearer tokens from the token file (see docs/security.md to add one)');
    }
  }
  const identityKeyFile = config.FOS1_IDENTITY_KEY_FILE ?? defaultIdentityKeyFile();
  if (createIdentityKeyFile(identityKeyFile)) logger.info({ identityKeyFile }, 'created the identity key (the API signs who submitted a change; the worker checks it)');
  const identityKey = loadIdentityKey(identityKeyFile);
  const authenticator = createAuthenticator(auth);
  const security = httpSecurityFrom(auth, authenticator);

  // Blocklists by reference may name only files in this folder (FOS1_FEED_DIRS in a cluster).
  const feedDir = join(stateDir, 'feeds');
  mkdirSync(feedDir, { recursive: true });
  logger.info({ feedDir }, 'blocklist files by reference are read from the feed directory only');

  // The durable audit store and revisions: <state dir>/audit (or FOS1_AUDIT_POSTGRES_URL), the key beside it.
  const auditConfig = auditConfigFrom(auditEnvSchema.parse(process.env), join(stateDir, 'audit'));
  const audit = openWorkerAuditStores(auditConfig, logger);
  logger.info({ backend: auditConfig.store.backend, dir: auditConfig.dir, publicKey: auditConfig.publicKeyFiles }, 'audit store open (verify: GET /v1/audit/verify, or tsx scripts/audit-verify.ts)');
  const connection = await NativeConnection.connect(nativeConnectionOptions(temporalConfig));
  const workers = await createWorkers({
    connection,
    namespace: temporalConfig.namespace,
    nodeName: config.FOS1_NODE_NAME,
    clusterWorker: true,
    identityKey,
    audit,
    nodeDeps: createNodeDeps(
      { netns: config.FOS1_DEV_NETNS, routeProtocol: 241, bpfPinDir: config.FOS1_BPF_PIN_DIR, blocklistMaxEntries: { v4: 1_048_576, v6: 262_144 }, feeds: { dirs: [feedDir] } },
      logger,
    ),
    logger,
  });
  const client = new Client({ connection: await Connection.connect(clientConnectionOptions(temporalConfig)), namespace: temporalConfig.namespace });
  const api = await startApiServer({
    client,
    port: config.FOS1_API_PORT,
    host: '127.0.0.1',
    logger,
    security,
    identityKey,
    audit: { store: openAuditStore(auditConfig.store), revisions: openRevisionStore(auditConfig.store, true), publicKeyFiles: auditConfig.publicKeyFiles },
  });

  // The IDS ingest worker, in this process: the other FOS1_* ingest variables (rules file,
  // guard file, coalescing, state file, unix socket) work as for `ingest/main.ts`.
  const eveFile = config.FOS1_EVE_FILE ?? join(stateDir, 'eve.json');
  closeSync(openSync(eveFile, 'a'));
  const ingestConfig = parseIngestConfig({ ...process.env, FOS1_ENFORCE_NODES: config.FOS1_NODE_NAME, FOS1_EVE_FILE: eveFile, FOS1_INGEST_HTTP_PORT: String(config.FOS1_INGEST_HTTP_PORT) });
  if (!process.env.FOS1_GUARD_FILE) {
    // Without a guard file, protect the sandbox's own addresses and gateways (and loopback).
    ingestConfig.guard = guardConfigSchema.parse({ allowLists: { 'dev-sandbox': ['10.200.0.0/30', 'fd00:200::/126'], loopback: ['127.0.0.0/8', '::1/128'] } });
  }
  const ingest = await startIngest(ingestConfig, { workflows: client.workflow, logger: logger.child({ component: 'ingest' }), authenticator });
  logger.info(
    { eveFile, eveStateFile: ingestConfig.eveStateFile, ndjson: `http://127.0.0.1:${config.FOS1_INGEST_HTTP_PORT}/v1/eve` },
    'IDS ingest running — append a Suricata alert line to the EVE file (see README) to block its source',
  );
  logger.info(
    { api: `http://127.0.0.1:${config.FOS1_API_PORT}`, taskQueues: workers.map((w) => w.options.taskQueue) },
    'fos1 is running — start a change from the Web UI, `temporal workflow start`, or POST /v1/changes (see README)',
  );

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping');
    api.close();
    // The tail saves its position once the decisions in flight are sent, then workers stop.
    void ingest.stop().finally(() => workers.forEach((w) => w.shutdown()));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await api.flushAudit();
    await audit.close();
    await connection.close();
    temporal?.kill('SIGTERM');
  }
}

/** Creates the sandbox namespace once; later starts reuse it (and the routes fos1 put there). */
function ensureDevNamespace(name: string): void {
  const existing = execFileSync('ip', ['-json', 'netns', 'list']).toString();
  const names = (JSON.parse(existing || '[]') as { name: string }[]).map((n) => n.name);
  if (names.includes(name)) return;
  createSandboxNamespace(name, ['10.200.0.2/24', 'fd00:200::2/64']);
}

function startTemporalServer(dbFile: string, port: number, uiPort: number): ChildProcess {
  const args = ['server', 'start-dev', '--db-filename', dbFile, '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort), '--log-level', 'warn'];
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTE_DEFINITIONS)) args.push('--search-attribute', `${name}=${type}`);
  const child = spawn(temporalCliPath(), args, { stdio: ['ignore', 'inherit', 'inherit'] });
  // However this process ends, the dev server must not outlive it (it holds the ports).
  process.on('exit', () => child.kill('SIGTERM'));
  child.on('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') {
      console.error(`Temporal dev server exited (code ${code}, signal ${signal})`);
      process.exit(1);
    }
  });
  return child;
}

async function waitForServer(address: string, server: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 120; attempt++) {
    if (server.exitCode !== null) throw new Error('Temporal dev server exited during start-up');
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      await connection.healthService.check({});
      await connection.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw new Error(`Temporal dev server did not answer on ${address} within 60s`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
