/**
 * fos1 against a Temporal server that requires client certificates (the real server,
 * built by scripts/bootstrap.d/40-temporal-server.sh, with frontend and internode mTLS and
 * SQLite persistence). Connections are made exactly as the entry points make them: from
 * TEMPORAL_* variables through workers/temporal-connection.ts.
 *
 * - without a client certificate (and in plaintext) a worker and a client are refused;
 * - with a certificate from another CA they are refused;
 * - with certificates from the server's CA, a node worker and the cluster worker run a real
 *   route change on a network namespace, read back with `ip -n <ns> route`.
 *
 * Privileged: needs root, netns, bpffs, openssl and the built Temporal server.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pino from 'pino';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId, SearchAttributes } from '../../model/naming';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { clientConnectionOptions, nativeConnectionOptions, parseTemporalEnv } from '../../workers/temporal-connection';
import { changeWorkflow } from '../../workflows/change';
import { testAuditStores } from '../helpers/audit-stores';
import { describePrivileged } from '../helpers/capabilities';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { workflowBundle } from '../helpers/temporal';
import { startMtlsTemporalServer, type RunningMtlsServer } from '../helpers/temporal-server';
import { TestPki, type CertFiles } from '../helpers/test-pki';

const NODE = 'node-m';
const NAMESPACE = 'fos1-mtls';
/** A worker's connection that failed in the transport (TLS), not in a Temporal call. */
const NATIVE_REFUSED = /Failed to call GetSystemInfo: .*tonic::transport::Error\(Transport/;

describePrivileged('Temporal with TLS and client certificates (privileged)', ['root', 'netns', 'bpffs', 'openssl', 'temporal-server'], () => {
  let pki: TestPki;
  let ca: CertFiles;
  let rogueCa: CertFiles;
  let server: RunningMtlsServer;
  let ns: TestNamespace;
  let pinDir: string;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger(process.env.FOS1_TEST_LOG ? 'INFO' : 'ERROR') });
    pki = TestPki.create();
    ca = pki.ca('fos1-test-ca');
    rogueCa = pki.ca('rogue-ca');
    const serverDir = join(pki.dir, 'server');
    mkdirSync(serverDir);
    server = await startMtlsTemporalServer({ dir: serverDir, ca, server: pki.leaf('temporal-server', ca, { server: true }), admin: pki.leaf('fos1-admin', ca), namespace: NAMESPACE });
    ns = TestNamespace.create('fos1mtls');
    pinDir = `/sys/fs/bpf/fos1-test-mtls-${randomBytes(4).toString('hex')}`;
  });

  afterAll(async () => {
    await server?.stop();
    // Every map the node worker pinned (blocklist and rate-limit maps) goes with the folder.
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
    ns?.destroy();
    pki?.destroy();
  });

  /** The environment a fos1 process would have: the server's CA, and a client pair if given. */
  function temporalEnv(client?: CertFiles): NodeJS.ProcessEnv {
    return {
      TEMPORAL_ADDRESS: server.address,
      TEMPORAL_NAMESPACE: NAMESPACE,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: ca.cert,
      // The address is an IP; verify the certificate's DNS name (and send it as SNI) instead.
      TEMPORAL_TLS_SERVER_NAME: 'localhost',
      ...(client ? { TEMPORAL_TLS_CLIENT_CERT_PATH: client.cert, TEMPORAL_TLS_CLIENT_KEY_PATH: client.key } : {}),
    };
  }

  /** A client call that needs the frontend to accept us (connect alone may be lazy). */
  async function describeNamespace(env: NodeJS.ProcessEnv): Promise<string | undefined> {
    const connection = await Connection.connect(clientConnectionOptions(parseTemporalEnv(env), { connectTimeout: 3000 }));
    try {
      const answer = await connection.workflowService.describeNamespace({ namespace: NAMESPACE });
      return answer.namespaceInfo?.name ?? undefined;
    } finally {
      await connection.close();
    }
  }

  /**
   * What the server answers a TLS client that writes nothing (so an alert is always read, not
   * lost to a write on a closed socket): the OpenSSL code of its alert, or `accepted` when it
   * sends its first HTTP/2 frame (gRPC servers speak first once the handshake is done).
   */
  function serverAlert(client?: CertFiles): Promise<string> {
    const [host, port] = [server.address.split(':')[0] as string, Number(server.address.split(':')[1])];
    return new Promise((resolve) => {
      const socket = tlsConnect({ host, port, ca: readFileSync(ca.cert), servername: 'localhost', ALPNProtocols: ['h2'], ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}) });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      socket.once('data', () => {
        resolve('accepted');
        socket.destroy();
      });
      socket.once('close', () => resolve('closed without an alert'));
      socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
    });
  }

  // Both SDK connections only say the transport failed (the worker, when it reads the alert
  // before its first write fails, also names it); the alert itself is read with node:tls. The
  // third test connects the same way with the right certificate, so the certificate is the cause.
  test('without a client certificate, a worker and a client are refused (TLS, and plaintext)', async () => {
    const config = parseTemporalEnv(temporalEnv());
    expect(config.describe.tls).toBe('tls');
    expect(await serverAlert()).toBe('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
    await expect(NativeConnection.connect(nativeConnectionOptions(config))).rejects.toThrow(NATIVE_REFUSED);
    await expect(describeNamespace(temporalEnv())).rejects.toThrow(/Failed to connect before the deadline/);
    // Plaintext gRPC to the TLS port never reaches the service either.
    await expect(NativeConnection.connect(nativeConnectionOptions(parseTemporalEnv({ TEMPORAL_ADDRESS: server.address })))).rejects.toThrow(NATIVE_REFUSED);
    await expect(describeNamespace({ TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: NAMESPACE })).rejects.toThrow(/Failed to connect before the deadline/);
  });

  test('with a client certificate from another CA, a worker and a client are refused', async () => {
    const rogue = pki.leaf(`fos1-worker-${NODE}-rogue`, rogueCa);
    const config = parseTemporalEnv(temporalEnv(rogue));
    expect(config.describe.tls).toBe('mtls');
    expect(await serverAlert(rogue)).toBe('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA');
    await expect(NativeConnection.connect(nativeConnectionOptions(config))).rejects.toThrow(NATIVE_REFUSED);
    await expect(describeNamespace(temporalEnv(rogue))).rejects.toThrow(/Failed to connect before the deadline/);
  });

  test('with certificates from the server CA, the workers run a route change on a network namespace', async () => {
    const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
    const workerConfig = parseTemporalEnv(temporalEnv(pki.leaf(`fos1-worker-${NODE}`, ca)));
    const apiCert = pki.leaf('fos1-api', ca);
    const apiConfig = parseTemporalEnv(temporalEnv(apiCert));
    // The same probe as above, with a certificate from the server's CA: no alert.
    expect(await serverAlert(apiCert)).toBe('accepted');
    expect(apiConfig.describe).toMatchObject({ tls: 'mtls', clientCertSubject: 'CN=fos1-api, O=fos1-test' });

    const connection = await NativeConnection.connect(nativeConnectionOptions(workerConfig));
    const audit = testAuditStores();
    const workers = await createWorkers({
      audit,
      connection,
      namespace: workerConfig.namespace,
      nodeName: NODE,
      clusterWorker: true,
      nodeDeps: createNodeDeps(
        { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 }, blocklistStoreDir: join(pki.dir, 'blocklists') },
        logger,
      ),
      logger,
      workflowBundle: await workflowBundle(),
    });
    const running = Promise.all(workers.map((w) => w.run()));
    const clientConnection = await Connection.connect(clientConnectionOptions(apiConfig));
    try {
      const client = new Client({ connection: clientConnection, namespace: apiConfig.namespace });
      const request = { id: `mtls-${randomBytes(3).toString('hex')}`, author: 'alice', reason: 'mTLS end to end', targets: [NODE], desired: { routes: [{ destination: '10.66.0.0/24', gateway: LAN_GATEWAY_V4, metric: 7 }] } } as ChangeRequestInput;
      const handle = await client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(request.id as string), args: [request] });
      const status = await handle.result();
      expect(status.phase).toBe('applied');
      expect(status.nodes[NODE]?.outcome).toBe('applied');

      // Read back with the kernel's own tool, not fos1's.
      const routes = JSON.parse(execFileSync('ip', ['-n', ns.name, '-4', '-json', 'route', 'show', 'proto', String(DEFAULT_ROUTE_PROTOCOL)]).toString()) as Record<string, unknown>[];
      expect(routes).toEqual([expect.objectContaining({ dst: '10.66.0.0/24', gateway: LAN_GATEWAY_V4, dev: 'lan0', metric: 7 })]);
      // The search attributes registered over mTLS are on the workflow.
      const description = await handle.describe();
      expect(description.typedSearchAttributes.get(SearchAttributes.changeId)).toBe(request.id);
      expect(description.typedSearchAttributes.get(SearchAttributes.status)).toBe('applied');
    } finally {
      await clientConnection.close();
      workers.forEach((w) => w.shutdown());
      await running;
      await audit.close();
      await connection.close();
    }
  });
});
