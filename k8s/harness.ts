/**
 * A real Kubernetes API on loopback, the controller-runtime "envtest" way: etcd plus
 * kube-apiserver (both built from the Go module proxy by scripts/bootstrap.d/50-kube.sh),
 * no kubelet, no controllers. Used by development and integration tests.
 *
 * The apiserver generates its own self-signed serving certificate (`--cert-dir`), which the
 * client trusts; clients authenticate with a static bearer token whose user is in
 * `system:masters`. Everything lives in one temporary folder, removed by `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { KubeClient, type KubeConnection, type StoredObject } from './client';
import type { KubeObject } from '../model/firewall-translate';
import { etcdPath, kubeApiserverPath } from './paths';

/** Options of {@link startKubeApiServer}. */
export interface KubeApiServerOptions {
  /** CRD manifests (YAML, any number of documents each) to install before returning. */
  crdFiles?: string[];
  /** How long to wait for etcd and the apiserver to become ready (default 120 s: a busy 2-core box). */
  readyTimeoutMs?: number;
  etcdBinary?: string;
  apiserverBinary?: string;
}

/** A running etcd + kube-apiserver. */
export interface KubeApiServer {
  connection: KubeConnection;
  client: KubeClient;
  /** Temporary folder with the certificates, etcd data and both logs. */
  dir: string;
  /** Installs CRDs from manifests and waits until each is Established. */
  installCrds(files: string[]): Promise<StoredObject[]>;
  /**
   * Stops the kube-apiserver alone (SIGTERM; etcd and the data stay): an apiserver outage,
   * for fault tests. Resolves once the process is gone.
   */
  stopApiServer(): Promise<void>;
  /** Starts the apiserver again on the same port, certificates and etcd; resolves once `/readyz` answers ok. */
  startApiServer(): Promise<void>;
  /** Stops both processes and removes the folder. */
  stop(): Promise<void>;
}

/** Field manager the harness uses for CRDs. */
const HARNESS_FIELD_MANAGER = 'fos1-test-harness';

/** Starts etcd and kube-apiserver on free loopback ports and waits until the API is ready. */
export async function startKubeApiServer(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const timeout = options.readyTimeoutMs ?? 120_000;
  const dir = mkdtempSync(join(tmpdir(), 'fos1-kube-'));
  const processes: ChildProcess[] = [];
  // If the test process dies without stop(), do not leave etcd and the apiserver behind.
  const killOnExit = () => processes.forEach((p) => p.kill('SIGKILL'));
  process.once('exit', killOnExit);
  const stop = async () => {
    for (const p of processes.reverse()) await terminate(p);
    process.removeListener('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [etcdClientPort, etcdPeerPort, apiPort] = await freePorts(3);
    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    const etcd = launch(options.etcdBinary ?? etcdPath(), [
      '--name=fos1',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=fos1=${peerUrl}`,
      // Test data is thrown away: skip fsync, which is most of etcd's cost on a shared disk.
      '--unsafe-no-fsync',
      '--log-level=warn',
    ], join(dir, 'etcd.log'));
    processes.push(etcd);
    await waitFor('etcd', etcd, join(dir, 'etcd.log'), timeout, async () => (await httpGet(`${etcdUrl}/health`)).includes('"health":"true"'));

    const token = randomBytes(24).toString('hex');
    const certDir = join(dir, 'certs');
    mkdirSync(certDir);
    writeFileSync(join(dir, 'tokens.csv'), `${token},fos1-admin,fos1-admin,"system:masters"\n`, { mode: 0o600 });
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const apiserverArgs = [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--cert-dir=${certDir}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://fos1.test',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      // No controller-manager runs, so nothing would mint service-account tokens.
      '--disable-admission-plugins=ServiceAccount',
      '--allow-privileged=true',
      // Fewer background loops: this runs beside other work on small machines.
      '--enable-priority-and-fairness=false',
      '--profiling=false',
      '-v=0',
    ];
    const server = `https://127.0.0.1:${apiPort}`;
    const certFile = join(certDir, 'apiserver.crt');
    // The same arguments each time: a restarted apiserver finds its self-signed certificate in
    // cert-dir and keeps it, so clients holding the CA go on working.
    let apiserver: ChildProcess;
    const startApiServer = async () => {
      apiserver = launch(options.apiserverBinary ?? kubeApiserverPath(), apiserverArgs, join(dir, 'apiserver.log'));
      processes.push(apiserver);
      await waitFor('kube-apiserver', apiserver, join(dir, 'apiserver.log'), timeout, async () => {
        if (!existsSync(certFile)) return false;
        return (await httpGet(`${server}/readyz`, { ca: readFileSync(certFile, 'utf8'), token })) === 'ok';
      });
    };
    const stopApiServer = async () => {
      await terminate(apiserver);
      processes.splice(processes.indexOf(apiserver), 1);
    };
    await startApiServer();
    const connection: KubeConnection = { server, caPem: readFileSync(certFile, 'utf8'), token };
    const client = new KubeClient(connection);
    const api: KubeApiServer = {
      connection,
      client,
      dir,
      installCrds: (files) => installCrds(client, files, timeout),
      stopApiServer,
      startApiServer,
      stop,
    };
    if (options.crdFiles?.length) await api.installCrds(options.crdFiles);
    return api;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Reads every document of the given YAML files. */
export function readManifests(files: string[]): KubeObject[] {
  return files.flatMap((file) =>
    parseAllDocuments(readFileSync(file, 'utf8'))
      .map((doc) => doc.toJS() as KubeObject | null)
      .filter((o): o is KubeObject => o !== null && typeof o === 'object'),
  );
}

async function installCrds(client: KubeClient, files: string[], timeoutMs: number): Promise<StoredObject[]> {
  const crds = readManifests(files).filter((o) => o.kind === 'CustomResourceDefinition');
  for (const crd of crds) await client.apply(crd, { fieldManager: HARNESS_FIELD_MANAGER, force: true });
  const deadline = Date.now() + timeoutMs;
  const installed: StoredObject[] = [];
  for (const crd of crds) {
    for (;;) {
      const stored = await client.get({ apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', name: crd.metadata.name });
      const conditions = (stored?.status?.conditions ?? []) as { type: string; status: string }[];
      if (conditions.some((c) => c.type === 'Established' && c.status === 'True') && (await servesObjects(client, stored as StoredObject))) {
        installed.push(stored as StoredObject);
        break;
      }
      if (Date.now() > deadline) throw new Error(`CRD ${crd.metadata.name} not Established in time: ${JSON.stringify(conditions)}`);
      await sleep(100);
    }
  }
  return installed;
}

/**
 * Established is not the end: for a moment after it, the new kind's storage answers lists with
 * 429 "storage is (re)initializing". Ready means a list of every served version succeeds.
 */
async function servesObjects(client: KubeClient, crd: StoredObject): Promise<boolean> {
  const spec = crd.spec as { group: string; names: { kind: string }; versions: { name: string; served: boolean }[] };
  try {
    for (const v of spec.versions.filter((x) => x.served)) await client.list(`${spec.group}/${v.name}`, spec.names.kind);
    return true;
  } catch {
    return false;
  }
}

function launch(binary: string, args: string[], logFile: string): ChildProcess {
  if (!existsSync(binary)) throw new Error(`${binary} is not built (scripts/bootstrap.sh builds it)`);
  const fd = openSync(logFile, 'a');
  const child = spawn(binary, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return child;
}

async function waitFor(name: string, child: ChildProcess, logFile: string, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${tail(logFile)}`);
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${name} not ready after ${timeoutMs} ms:\n${tail(logFile)}`);
    await sleep(200);
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Asks the OS for free loopback ports (bind to 0, read, close). */
async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address();
        srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
      });
    });
    if (!ports.includes(port)) ports.push(port);
  }
  return ports;
}

async function httpGet(url: string, tls?: { ca: string; token: string }): Promise<string> {
  if (url.startsWith('http://')) {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return res.text();
  }
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: tls?.ca, headers: tls ? { authorization: `Bearer ${tls.token}` } : {}, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
