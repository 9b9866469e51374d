/**
 * The Kubernetes authenticator on the real kube-apiserver (k8s/harness.ts) behind the real
 * HTTP API on a real Temporal dev server: ServiceAccount tokens minted with the TokenRequest
 * API are checked with TokenReview, and each route's verb with a SubjectAccessReview on
 * `changes.fos1.io` — granted by a RoleBinding to deploy/auth-rbac.yaml's ClusterRoles. The
 * API itself talks to the apiserver as the `fos1-api` service account, with only the
 * permissions deploy/auth-rbac.yaml gives it.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { startApiServer } from '../../api/server';
import { KubernetesAuthenticator } from '../../auth/kubernetes';
import { KubeClient } from '../../k8s/client';
import type { KubeObject } from '../../model/firewall-translate';
import { readManifests, startKubeApiServer, type KubeApiServer } from '../../k8s/harness';
import { describeKube, FOS1_DEPLOY_DIR } from '../helpers/kube';
import { startTemporal } from '../helpers/temporal';

const TEAM = 'team-net';

describeKube('Kubernetes authentication and authorization of the API', ['temporal-cli'], () => {
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let server: Server;
  let base: string;
  let authenticator: KubernetesAuthenticator;
  const tokens: Record<string, string> = {};

  /** A token for a ServiceAccount, from the TokenRequest API (what the kubelet projects into pods). */
  async function serviceAccountToken(namespace: string, name: string): Promise<string> {
    const core = kube.client.config.makeApiClient(k8s.CoreV1Api);
    const request = await core.createNamespacedServiceAccountToken({
      name,
      namespace,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: ['https://fos1.test'], expirationSeconds: 600 } },
    });
    const token = request.status?.token;
    if (!token) throw new Error(`no token for ${namespace}/${name}`);
    return token;
  }

  beforeAll(async () => {
    [kube, env] = await Promise.all([startKubeApiServer(), startTemporal()]);
    for (const m of readManifests([join(FOS1_DEPLOY_DIR, 'auth-rbac.yaml')])) await kube.client.apply(m, { fieldManager: 'fos1-test' });
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: TEAM } });
    for (const name of ['olga', 'victor', 'nobody']) await kube.client.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: TEAM } });
    const bind = (name: string, role: string, sa: string) =>
      kube.client.create({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name, namespace: 'fos1-system' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ kind: 'ServiceAccount', name: sa, namespace: TEAM }],
      } as KubeObject);
    await bind('olga-operates', 'fos1-operator', 'olga');
    await bind('victor-views', 'fos1-viewer', 'victor');
    for (const name of ['olga', 'victor', 'nobody']) tokens[name] = await serviceAccountToken(TEAM, name);

    // The API's own identity: the fos1-api service account, with only what auth-rbac.yaml grants.
    const apiIdentity = new KubeClient({ ...kube.connection, token: await serviceAccountToken('fos1-system', 'fos1-api') });
    authenticator = new KubernetesAuthenticator({ kubeConfig: apiIdentity.config, namespace: 'fos1-system', cacheTtlMs: 60_000 });
    server = await startApiServer({ client: env.client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, 180_000);

  afterAll(async () => {
    server?.close();
    await env?.teardown();
    await kube?.stop();
  });

  const submit = (changeId: string, token?: string) =>
    fetch(`${base}/v1/changes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ id: changeId, reason: 'rbac test', targets: ['router-1'], patch: { routes: { remove: [{ destination: '10.99.0.0/24' }] } } }),
    });
  const exists = (changeId: string) =>
    env.client.workflow
      .getHandle(`change-${changeId}`)
      .describe()
      .then(
        (d) => d,
        () => undefined,
      );

  test('a ServiceAccount bound to fos1-operator in fos1-system can submit, as itself', async () => {
    const res = await submit('rbac-olga', tokens.olga);
    expect(res.status).toBe(202);
    const described = await exists('rbac-olga');
    expect(described).toBeDefined();
    // The author the workflow got is the Kubernetes user name, not anything the body said.
    const history = await env.client.workflow.getHandle('change-rbac-olga').fetchHistory();
    const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data;
    expect(JSON.parse(Buffer.from(input as Uint8Array).toString('utf8'))).toMatchObject({ author: `system:serviceaccount:${TEAM}:olga` });
    await env.client.workflow.getHandle('change-rbac-olga').terminate('test done');
  });

  test('a viewer, an unbound ServiceAccount and a garbage token cannot (403, 403, 401), and nothing starts', async () => {
    const viewer = await submit('rbac-victor', tokens.victor);
    expect(viewer.status).toBe(403);
    expect(((await viewer.json()) as { error: string }).error).toBe(`system:serviceaccount:${TEAM}:victor may not submit changes.fos1.io`);
    expect((await fetch(`${base}/v1/changes?author=system:serviceaccount:${TEAM}:olga`, { headers: { authorization: `Bearer ${tokens.victor}` } })).status).toBe(200);
    expect((await submit('rbac-nobody', tokens.nobody)).status).toBe(403);
    expect((await fetch(`${base}/v1/changes`, { headers: { authorization: `Bearer ${tokens.nobody}` } })).status).toBe(403);
    const garbage = await submit('rbac-garbage', 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln');
    expect(garbage.status).toBe(401);
    expect((await submit('rbac-anonymous')).status).toBe(401);
    for (const id of ['rbac-victor', 'rbac-nobody', 'rbac-garbage', 'rbac-anonymous']) expect(await exists(id)).toBeUndefined();
  });

  test('reviews are cached: repeating a request asks the apiserver nothing new', async () => {
    const before = { ...authenticator.reviews };
    for (let i = 0; i < 3; i++) expect((await fetch(`${base}/v1/changes`, { headers: { authorization: `Bearer ${tokens.victor}` } })).status).toBe(200);
    expect(authenticator.reviews).toEqual(before);
  });
});
