/**
 * `npm start`: fos1 on its embedded default, on one machine.
 *
 *  1. a sandbox fleet: three router nodes `router-1..3` (FOS1_DEV_FLEET), each its own
 *     network namespace (`fos1-dev`, `fos1-dev-2`, `fos1-dev-3`) and node worker (task
 *     queue `fos1-node-router-N`), wired through a bridge in `fos1-dev-upstream`
 *     (10.200.255.1, with a tiny TCP service on port 8000) so probes between nodes and to
 *     the upstream are real traffic; the host's own routes are never touched. All node
 *     workers run in this one process (one Temporal worker per node task queue), each with
 *     its own bpffs pin folder (`/sys/fs/bpf/fos1-dev`, `…-2`, `…-3`). The fleet's inventory
 *     (`<state dir>/inventory.yaml`, labels for rollouts' selectors) is written on first start;
 *  2. the Temporal dev server with SQLite file persistence and the Web UI, with fos1's
 *     search attributes registered;
 *  3. the workers (cluster + every node's task queue) acting on the sandbox namespaces,
 *     and the HTTP API;
 *  4. the IDS ingest worker with the default rule set, tailing `<state dir>/eve.json`
 *     (append a Suricata alert line there and its source is blocked on the sandbox node)
 *     and taking NDJSON at POST http://127.0.0.1:8081/v1/eve. It keeps its read position
 *     next to the file, so a restart neither re-reads old alerts nor skips new ones.
 *
 * With `--kube` (`npm start -- --kube`; off by default, it adds the apiserver's start-up):
 *  5. etcd + kube-apiserver with fos1's and Cilium's CRDs, a kubeconfig at
 *     `<state dir>/kubeconfig`, and fos1's controllers (FirewallRule, NetworkInterface,
 *     VLANPolicy) starting changes on the sandbox fleet — `kubectl apply -f` a CRD object and
 *     watch its status (scripts/dev-kube.ts, deploy/README.md). The controllers sign their
 *     changes with `<state dir>/controller-identity.key` (created on first start).
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
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Connection, Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { stringify as toYaml } from 'yaml';
import { createLogger } from '../log/logger';
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
import { startDevKube, type DevKube } from './dev-kube';
import { ensureSandboxFleet, MAX_SANDBOX_FLEET, sandboxFleetLayout, startUpstreamService, type SandboxFleet } from './sandbox-netns';
import { parseMetricsConfig, temporalTelemetryOptions } from '../metrics/config';
import { registerNodeMapMetrics } from '../metrics/node-collectors';
import { startMetricsServer } from '../metrics/server';
import { setupTracing, tracingClientInterceptors, TRACING_WORKFLOW_INTERCEPTOR_MODULES } from '../telemetry/tracing';
import { clientConnectionOptions, nativeConnectionOptions, parseTemporalEnv, type TemporalConnectionConfig } from '../workers/temporal-connection';
import { workflowBundleOptions } from '../workers/workflow-bundle';

const configSchema = z.object({
  FOS1_DEV_NETNS: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/).default('fos1-dev'),
  /** Sandbox router nodes `router-1..N` (router-1 in FOS1_DEV_NETNS, router-N in `<FOS1_DEV_NETNS>-N`). */
  FOS1_DEV_FLEET: z.coerce.number().int().min(1, 'FOS1_DEV_FLEET must be 1 or more').max(MAX_SANDBOX_FLEET, `FOS1_DEV_FLEET must be at most ${MAX_SANDBOX_FLEET}`).default(3),
  /** router-1's bpffs folder; router-N's is `<FOS1_BPF_PIN_DIR>-N`. */
  FOS1_BPF_PIN_DIR: z.string().regex(/^\/sys\/fs\/bpf(\/[A-Za-z0-9_.-]+)+$/).default('/sys/fs/bpf/fos1-dev'),
  /** The fleet inventory (YAML/JSON list of nodes and labels); default `<state dir>/inventory.yaml`, written on first start. */
  FOS1_INVENTORY_FILE: z.string().min(1).optional(),
  TEMPORAL_PORT: z.coerce.number().int().min(1).max(65535).default(7233),
  TEMPORAL_UI_PORT: z.coerce.number().int().min(1).max(65535).default(8233),
  FOS1_API_PORT: z.coerce.number().int().min(1).max(65535).default(8080),
  /** NDJSON EVE over HTTP for the ingest worker (on 127.0.0.1). */
  FOS1_INGEST_HTTP_PORT: z.coerce.number().int().min(1).max(65535).default(8081),
  /** EVE file the ingest worker tails (default `<state dir>/eve.json`, created empty). */
  FOS1_EVE_FILE: z.string().min(1).optional(),
  /** Key shared by the API (signs) and the cluster worker (verifies); created on first start. */
  FOS1_IDENTITY_KEY_FILE: z.string().min(1).optional(),
  /** Approval policy and change windows (docs/approvals.md); default deploy/approval-policy/dev.yaml, which asks for nothing. */
  FOS1_APPROVAL_POLICY_FILE: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
}).extend(authEnvSchema.shape);

async function main(): Promise<void> {
  const config = configSchema.parse(process.env);
  const logger = createLogger({ level: config.LOG_LEVEL, base: { component: 'dev' } });
  // Metrics are on by default here (off by default elsewhere): fos1's on 127.0.0.1:9464, the SDK's on :9465.
  const metrics = parseMetricsConfig({ FOS1_METRICS_PORT: '9464', FOS1_TEMPORAL_METRICS_PORT: '9465', ...process.env });
  Runtime.install({ logger: new DefaultLogger('WARN', (e) => logger.warn({ ...e.meta }, e.message)), shutdownSignals: [], ...temporalTelemetryOptions(metrics) });
  // Traces only with OTEL_EXPORTER_OTLP_ENDPOINT (telemetry/tracing.ts).
  const tracing = setupTracing('fos1', process.env);

  const fleet = sandboxFleetLayout({ prefix: config.FOS1_DEV_NETNS, size: config.FOS1_DEV_FLEET, firstNetns: config.FOS1_DEV_NETNS });
  ensureSandboxFleet(fleet);
  const upstreamService = await startUpstreamService(fleet);
  process.on('exit', () => upstreamService.kill('SIGTERM'));
  logger.info(
    { nodes: fleet.nodes.map((n) => `${n.name} (${n.netns}: lan0 ${n.lan[0]}, up0 ${n.upstream.v4})`), upstream: `${fleet.upstream.netns}: ${fleet.upstream.v4}, tcp ${fleet.upstream.tcpPort}` },
    'sandbox fleet ready (router-1: gateway 10.200.0.1 / fd00:200::1 on lan0)',
  );

  const stateDir = devStateDir();
  mkdirSync(stateDir, { recursive: true });
  const inventoryFile = config.FOS1_INVENTORY_FILE ?? join(stateDir, 'inventory.yaml');
  if (!config.FOS1_INVENTORY_FILE && !existsSync(inventoryFile)) {
    writeFileSync(inventoryFile, defaultInventory(fleet), { mode: 0o644 });
    logger.info({ inventoryFile }, 'wrote the sandbox fleet inventory (edit its labels for rollout selectors)');
  }
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
  // The IDS ingest worker, in this process: the other FOS1_* ingest variables (rules file,
  // guard file, coalescing, state file, unix socket) work as for `ingest/main.ts`. The guard
  // (FOS1_GUARD_FILE) is the cluster worker's too: in one process, one configuration.
  const eveFile = config.FOS1_EVE_FILE ?? join(stateDir, 'eve.json');
  closeSync(openSync(eveFile, 'a'));
  const ingestConfig = parseIngestConfig({ ...process.env, FOS1_ENFORCE_NODES: 'router-1', FOS1_EVE_FILE: eveFile, FOS1_INGEST_HTTP_PORT: String(config.FOS1_INGEST_HTTP_PORT) });
  // DPI verdicts aim at the side outside the *enforcing node's* networks (docs/dpi.md): read
  // them in router-1's namespace, not in this machine's own (whose addresses are not the node's).
  ingestConfig.localNetworks.netns ??= fleet.nodes[0]?.netns;
  if (!process.env.FOS1_GUARD_FILE) {
    // Without a guard file, protect the sandbox's own addresses and gateways (and loopback).
    ingestConfig.guard = guardConfigSchema.parse({
      allowLists: { 'dev-sandbox': ['10.200.0.0/30', 'fd00:200::/126'], 'dev-upstream': ['10.200.255.0/24', 'fd00:200:ffff::/64'], loopback: ['127.0.0.0/8', '::1/128'] },
    });
  }
  // --kube: the apiserver first, so the cluster worker can apply Cilium policy to it.
  const devKube: DevKube | undefined = process.argv.includes('--kube') ? await startDevKube(stateDir, logger.child({ component: 'kube' })) : undefined;
  if (devKube) process.on('exit', () => void devKube.kube.stop());
  const connection = await NativeConnection.connect(nativeConnectionOptions(temporalConfig));
  // One bundle for every worker of this process (bundling is the slow part of start-up).
  // The approval policy (docs/approvals.md): the dev default asks for nothing.
  const approvalPolicyFile = config.FOS1_APPROVAL_POLICY_FILE ?? join(__dirname, '..', 'deploy', 'approval-policy', 'dev.yaml');
  // With tracing on, the bundle carries the OpenTelemetry workflow interceptors.
  const workflowBundle = await bundleWorkflowCode(workflowBundleOptions({ logger: new DefaultLogger('WARN'), ...(tracing ? { workflowInterceptorModules: TRACING_WORKFLOW_INTERCEPTOR_MODULES } : {}) }));
  const workers: Worker[] = [];
  for (const node of fleet.nodes) {
    const nodeLogger = logger.child({ node: node.name });
    const bpfPinDir = node.index === 1 ? config.FOS1_BPF_PIN_DIR : `${config.FOS1_BPF_PIN_DIR}-${node.index}`;
    // Every sandbox node's maps are read at scrape, with its name as the `node` label.
    registerNodeMapMetrics(node.name, bpfPinDir);
    workers.push(
      ...(await createWorkers({
        connection,
        namespace: temporalConfig.namespace,
        nodeName: node.name,
        // router-1's process slot also serves the cluster task queue (change workflows).
        clusterWorker: node.index === 1,
        identityKey,
        ...(node.index === 1 && devKube ? { controllerIdentityKey: devKube.controllerIdentityKey } : {}),
        ...(node.index === 1 ? { audit } : {}),
        guard: ingestConfig.guard,
        ...(node.index === 1 ? { approvalPolicyFile } : {}),
        ...(node.index === 1 && devKube ? { ciliumDeps: { kube: devKube.kube.client, fieldManager: 'fos1', logger: nodeLogger } } : {}),
        inventory: { kind: 'file', path: inventoryFile },
        nodeDeps: createNodeDeps(
          {
            netns: node.netns,
            routeProtocol: 241,
            bpfPinDir,
            blocklistMaxEntries: { v4: 1_048_576, v6: 262_144 },
            // Preallocated hash maps cost ~80 B a slot: the extra sandbox nodes get smaller ones.
            ...(node.index === 1 ? {} : { blocklistHostMaxEntries: { v4: 65_536, v6: 16_384 } }),
            feeds: { dirs: [feedDir] },
          },
          nodeLogger,
        ),
        workflowBundle,
        logger: nodeLogger,
        ...(tracing ? { tracing } : {}),
      })),
    );
  }
  const client = new Client({ connection: await Connection.connect(clientConnectionOptions(temporalConfig)), namespace: temporalConfig.namespace, ...(tracing ? { interceptors: tracingClientInterceptors() } : {}) });
  const api = await startApiServer({
    client,
    port: config.FOS1_API_PORT,
    host: '127.0.0.1',
    logger,
    security,
    identityKey,
    audit: { store: openAuditStore(auditConfig.store), revisions: openRevisionStore(auditConfig.store, true), publicKeyFiles: auditConfig.publicKeyFiles },
  });
  const metricsServer = metrics.listener ? await startMetricsServer(metrics.listener) : undefined;
  if (metrics.listener) logger.info({ metrics: `http://${metrics.listener.host}:${metrics.listener.port}/metrics`, temporalMetrics: metrics.temporalBindAddress ? `http://${metrics.temporalBindAddress}/metrics` : 'off' }, 'metrics listening');

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
    metricsServer?.close();
    // The tail saves its position once the decisions in flight are sent, then workers stop.
    void ingest.stop().finally(() => workers.forEach((w) => w.shutdown()));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const running = Promise.all(workers.map((w) => w.run()));
  // After the workers poll: a change started before would find no node worker and fail.
  if (devKube) {
    devKube.startControllers(client);
    logger.info({ kubeconfig: devKube.kubeconfig }, `controllers running — try: KUBECONFIG=${devKube.kubeconfig} kubectl apply -f deploy/examples/firewall-rule.yaml`);
  }
  try {
    await running;
  } finally {
    await api.flushAudit();
    await audit.close();
    await devKube?.stop();
    await tracing?.shutdown();
    await connection.close();
    temporal?.kill('SIGTERM');
    // Its pipes would keep this process alive after the workers stopped.
    upstreamService.kill('SIGTERM');
  }
}

/**
 * The sandbox fleet's inventory: every node in site `lab`, role `edge`, spread over zones
 * `a`, `b`, `c`; router-1 is labelled `canary: "true"` for a first wave by selector.
 */
function defaultInventory(fleet: SandboxFleet): string {
  const zones = ['a', 'b', 'c'];
  const nodes = fleet.nodes.map((n) => ({
    name: n.name,
    labels: { site: 'lab', role: 'edge', zone: zones[(n.index - 1) % zones.length] ?? 'a', ...(n.index === 1 ? { canary: 'true' } : {}) },
  }));
  return `# fos1's sandbox fleet (npm start): the nodes a staged rollout can target, with labels\n# for its wave selectors (docs/rollouts.md). Edits take effect with the next rollout.\n${toYaml(nodes)}`;
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
