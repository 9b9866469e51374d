/**
 * A real Temporal server (built by scripts/bootstrap.d/40-temporal-server.sh) that requires
 * client certificates: frontend and internode TLS with `requireClientAuth`, SQLite file
 * persistence (schema set up on first start), fos1's namespace and search attributes
 * registered through the frontend with an admin client certificate.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { temporal as proto } from '@temporalio/proto';
import { stringify } from 'yaml';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from '../../model/naming';
import { temporalServerPath } from '../../scripts/paths';
import { eventually } from './eventually';
import type { CertFiles } from './test-pki';

/** What the server trusts and presents. */
export interface MtlsServerOptions {
  /** Folder for the config, the SQLite file and the server's log. */
  dir: string;
  /** CA that signs the server certificate and every client certificate the server accepts. */
  ca: CertFiles;
  /** The server's certificate (for 127.0.0.1; also its internode client certificate). */
  server: CertFiles;
  /** A client certificate (signed by `ca`) used here to register the namespace and search attributes. */
  admin: CertFiles;
  namespace: string;
}

/** A running server; `stop()` ends it. */
export interface RunningMtlsServer {
  address: string;
  namespace: string;
  /** The server's log file (for a failure message). */
  logFile: string;
  stop(): Promise<void>;
}

/** Starts the server, waits for its frontend over mTLS, registers namespace and search attributes. */
export async function startMtlsTemporalServer(options: MtlsServerOptions): Promise<RunningMtlsServer> {
  const ports = await freePorts(10);
  const [frontend, frontendHttp, history, matching, worker, frontendMember, historyMember, matchingMember, workerMember] = ports as [number, number, number, number, number, number, number, number, number];
  const address = `127.0.0.1:${frontend}`;
  const configDir = join(options.dir, 'config');
  mkdirSync(configDir, { recursive: true });
  const dynamicConfigFile = join(configDir, 'dynamic.yaml');
  // As the CLI's dev server: new search attributes are visible at once (no cache wait).
  writeFileSync(dynamicConfigFile, stringify({ 'system.forceSearchAttributesCacheRefreshOnRead': [{ value: true, constraints: {} }] }));
  writeFileSync(join(configDir, 'development.yaml'), stringify(serverConfig(options, { address, frontendHttp, history, matching, worker, frontendMember, historyMember, matchingMember, workerMember, frontend, dynamicConfigFile })));

  const logFile = join(options.dir, 'temporal-server.log');
  const logFd = openSync(logFile, 'a');
  const child = spawn(temporalServerPath(), ['--root', options.dir, '--config', 'config', '--env', 'development', '--allow-no-auth', 'start'], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  // However the test process ends, the server must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', killOnExit);
      resolve();
    }),
  );
  const running: RunningMtlsServer = {
    address,
    namespace: options.namespace,
    logFile,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  try {
    await registerFos1Namespace(child, address, options);
  } catch (err) {
    await running.stop();
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- last lines of ${logFile} ---\n${readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n')}`);
  }
  return running;
}

async function registerFos1Namespace(child: ChildProcess, address: string, options: MtlsServerOptions): Promise<void> {
  const tls = { serverRootCACertificate: readFileSync(options.ca.cert), serverNameOverride: 'localhost', clientCertPair: { crt: readFileSync(options.admin.cert), key: readFileSync(options.admin.key) } };
  const connection = (await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`Temporal server exited during start-up (code ${child.exitCode})`);
      try {
        const c = await Connection.connect({ address, tls, connectTimeout: 2000 });
        await c.healthService.check({});
        return c;
      } catch {
        return undefined;
      }
    },
    (c) => c !== undefined,
    `the Temporal server's frontend on ${address} (mTLS)`,
    90_000,
    500,
  )) as Connection;
  try {
    await connection.workflowService.registerNamespace({ namespace: options.namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
    const types: Record<string, proto.api.enums.v1.IndexedValueType> = {
      Keyword: proto.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
      KeywordList: proto.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    };
    const searchAttributes = Object.fromEntries(Object.entries(SEARCH_ATTRIBUTE_DEFINITIONS).map(([name, type]) => [name, types[type] as proto.api.enums.v1.IndexedValueType]));
    // The namespace is cached by every service; retry until the operator service sees it.
    await eventually(
      () =>
        connection.operatorService.addSearchAttributes({ namespace: options.namespace, searchAttributes }).then(
          () => true,
          (err: unknown) => (String(err).includes('already exists') ? true : String(err)),
        ),
      (r) => r === true,
      `fos1's search attributes registered in namespace ${options.namespace}`,
      30_000,
      250,
    );
  } finally {
    await connection.close();
  }
}

interface Ports {
  address: string;
  frontend: number;
  frontendHttp: number;
  history: number;
  matching: number;
  worker: number;
  frontendMember: number;
  historyMember: number;
  matchingMember: number;
  workerMember: number;
  dynamicConfigFile: string;
}

/** The server's static config: one process, all four services, mTLS everywhere, SQLite. */
function serverConfig(options: MtlsServerOptions, p: Ports): unknown {
  const requireClientCert = { certFile: options.server.cert, keyFile: options.server.key, requireClientAuth: true, clientCaFiles: [options.ca.cert] };
  const client = { serverName: '127.0.0.1', rootCaFiles: [options.ca.cert] };
  const sqlite = {
    pluginName: 'sqlite',
    databaseName: join(options.dir, 'temporal.db'),
    connectAddr: 'localhost',
    connectProtocol: 'tcp',
    // `setup`: the SQLite plugin creates the schema on first open (as the CLI's dev server does).
    connectAttributes: { mode: 'rwc', setup: 'true' },
    maxConns: 1,
    maxIdleConns: 1,
  };
  const service = (grpcPort: number, membershipPort: number, extra: object = {}) => ({ rpc: { grpcPort, membershipPort, bindOnIP: '127.0.0.1', ...extra } });
  return {
    log: { stdout: true, level: 'warn' },
    persistence: { defaultStore: 'sqlite', visibilityStore: 'sqlite', numHistoryShards: 1, datastores: { sqlite: { sql: sqlite } } },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' },
      pprof: { port: 0 },
      tls: {
        // Service to service (history, matching, worker, internal calls to the frontend).
        internode: { server: requireClientCert, client },
        // What SDK clients and workers reach; the system worker presents the internode cert.
        frontend: { server: requireClientCert, client },
      },
    },
    services: {
      frontend: service(p.frontend, p.frontendMember, { httpPort: p.frontendHttp }),
      history: service(p.history, p.historyMember),
      matching: service(p.matching, p.matchingMember),
      worker: service(p.worker, p.workerMember),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: p.address, httpAddress: `127.0.0.1:${p.frontendHttp}` } },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } },
    namespaceDefaults: { archival: { history: { state: 'disabled' }, visibility: { state: 'disabled' } } },
    dynamicConfigClient: { filepath: p.dynamicConfigFile, pollInterval: '10s' },
  };
}

/** `n` TCP ports free on 127.0.0.1 right now (held together so they differ). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
