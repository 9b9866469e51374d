/**
 * Least privilege where RBAC cannot express it, proved on the real kube-apiserver with the
 * ValidatingAdmissionPolicies of deploy/rbac.yaml, acting as the service accounts themselves
 * (tokens from the TokenRequest API):
 * - the cluster worker (quarantine role) may set and remove fos1's quarantine label on a pod;
 *   an image change, another label or an annotation is denied;
 * - the cluster worker (policy role) may write only Cilium objects carrying fos1's ownership
 *   label, and may not adopt or delete anyone else's;
 * - a tenant namespace cannot hold a host-firewall zone (FirewallZone kind hosts).
 */
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { KubeApiError, KubeClient } from '../../k8s/client';
import { readManifests, type KubeApiServer } from '../../k8s/harness';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type KubeObject } from '../../model/firewall-translate';
import { eventually } from '../helpers/eventually';
import { describeKube, FOS1_DEPLOY_DIR, startKubeWithCrds } from '../helpers/kube';

const TENANT = `tenant-${process.pid}`;

describeKube('admission policies: what RBAC grants, narrowed to what fos1 does (real apiserver)', [], () => {
  let kube: KubeApiServer;
  /** The cluster worker's own identity (fos1-system/fos1-cluster-worker). */
  let worker: KubeClient;
  /** A tenant's service account, allowed by RBAC to manage FirewallZones in its namespace. */
  let tenant: KubeClient;

  async function tokenFor(namespace: string, name: string): Promise<string> {
    const core = kube.client.config.makeApiClient(k8s.CoreV1Api);
    const request = await core.createNamespacedServiceAccountToken({
      name,
      namespace,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: ['https://fos1.test'], expirationSeconds: 600 } },
    });
    if (!request.status?.token) throw new Error(`no token for ${namespace}/${name}`);
    return request.status.token;
  }
  /** The error of `op`, or undefined when it succeeded. */
  const refusal = (op: () => Promise<unknown>) =>
    op().then(
      () => undefined,
      (err: unknown) => {
        if (err instanceof KubeApiError) return err;
        throw err;
      },
    );
  const pod = (name: string, labels: Record<string, string>, image = 'registry.k8s.io/pause:3.10'): KubeObject => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: TENANT, labels },
    spec: { nodeName: 'node-1', containers: [{ name: 'c', image }] },
  });
  const cnp = (name: string, labels: Record<string, string>): KubeObject => ({
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name, namespace: TENANT, labels },
    spec: { endpointSelector: { matchLabels: { app: name } }, ingress: [{}] },
  });
  const owned = { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, 'fos1.io/source-kind': 'firewallrule', 'fos1.io/source-namespace': TENANT, 'fos1.io/source-name': 'r' };

  beforeAll(async () => {
    kube = await startKubeWithCrds();
    for (const m of readManifests([join(FOS1_DEPLOY_DIR, 'rbac.yaml')])) await kube.client.apply(m, { fieldManager: 'fos1-test' });
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: TENANT } });
    await kube.client.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'netadmin', namespace: TENANT } });
    await kube.client.create({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'zones', namespace: TENANT },
      rules: [{ apiGroups: ['security.fos1.io'], resources: ['firewallzones'], verbs: ['create', 'get', 'update', 'patch'] }],
    } as KubeObject);
    await kube.client.create({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'zones', namespace: TENANT },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'zones' },
      subjects: [{ kind: 'ServiceAccount', name: 'netadmin', namespace: TENANT }],
    } as KubeObject);
    worker = new KubeClient({ ...kube.connection, token: await tokenFor('fos1-system', 'fos1-cluster-worker') });
    tenant = new KubeClient({ ...kube.connection, token: await tokenFor(TENANT, 'netadmin') });
  }, 180_000);

  afterAll(async () => {
    await kube?.stop();
  });

  test('the quarantine role may set and remove fos1\'s label, and nothing else on the pod', async () => {
    await kube.client.create(pod('victim', { app: 'victim' }));
    const image = (img: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'victim', namespace: TENANT }, spec: { containers: [{ name: 'c', image: img }] } });
    // The policies start being enforced a moment after they are created: wait for the first
    // denial of a dry run (admission runs on dry runs too), so no probe changes anything.
    await eventually(() => refusal(() => worker.apply(image('evil.example/miner:1'), { fieldManager: 'fos1', force: true, dryRun: true })), (e) => e !== undefined, 'the policy to be in force');
    const denied = await refusal(() => worker.apply(image('evil.example/miner:1'), { fieldManager: 'fos1', force: true }));
    expect(denied).toMatchObject({ status: 403 });
    expect(denied!.message).toContain("fos1's cluster worker may change only a pod's quarantine label, not its spec (image, command, …)");
    const label = (labels: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'victim', namespace: TENANT, labels } });
    const other = await refusal(() => worker.apply(label({ 'fos1.io/trusted': 'true' }), { fieldManager: 'fos1', force: true }));
    expect(other).toMatchObject({ status: 403 });
    expect(other!.message).toContain('may set or remove only fos1\'s quarantine label (fos1.io/quarantine), no other label');
    const relabel = await refusal(() => worker.apply(label({ app: 'something-else', 'fos1.io/quarantine': 'true' }), { fieldManager: 'fos1', force: true }));
    expect(relabel).toMatchObject({ status: 403 });
    const annotate = await refusal(() => worker.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'victim', namespace: TENANT, annotations: { x: 'y' } } }, { fieldManager: 'fos1', force: true }));
    expect(annotate).toMatchObject({ status: 403 });
    // What quarantine does (activities/quarantine.ts): apply the label under fos1's field manager, then take it off.
    await worker.apply(label({ 'fos1.io/quarantine': 'true' }), { fieldManager: 'fos1' });
    expect((await kube.client.get({ apiVersion: 'v1', kind: 'Pod', namespace: TENANT, name: 'victim' }))?.metadata.labels).toEqual({ app: 'victim', 'fos1.io/quarantine': 'true' });
    await worker.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'victim', namespace: TENANT } }, { fieldManager: 'fos1' });
    const after = await kube.client.get({ apiVersion: 'v1', kind: 'Pod', namespace: TENANT, name: 'victim' });
    expect(after?.metadata.labels).toEqual({ app: 'victim' });
    expect((after?.spec as { containers: { image: string }[] }).containers[0]!.image).toBe('registry.k8s.io/pause:3.10');
    // Anyone else (here the admin) is not bound by it.
    await kube.client.apply(label({ team: 'a' }), { fieldManager: 'admin' });
  });

  test('the policy role may write only fos1-owned Cilium objects', async () => {
    const foreign = cnp('theirs', { team: 'a' });
    await kube.client.create(foreign);
    await eventually(() => refusal(() => worker.apply(cnp('mine-unlabelled', {}), { fieldManager: 'fos1', dryRun: true })), (e) => e !== undefined, 'the policy to be in force');
    const deny = await refusal(() => worker.apply(cnp('mine-unlabelled', {}), { fieldManager: 'fos1' }));
    expect(deny).toMatchObject({ status: 403 });
    expect(deny!.message).toContain('may write only Cilium objects labelled app.kubernetes.io/managed-by=fos1');
    // Not someone else's: neither changed (even by labelling it fos1's) nor deleted.
    const adopt = await refusal(() => worker.apply(cnp('theirs', { team: 'a', ...owned }), { fieldManager: 'fos1', force: true }));
    expect(adopt).toMatchObject({ status: 403 });
    expect(adopt!.message).toContain('may change or delete only Cilium objects fos1 owns');
    const del = await refusal(() => worker.delete({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: TENANT, name: 'theirs' }));
    expect(del).toMatchObject({ status: 403 });
    expect(await kube.client.get({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: TENANT, name: 'theirs' })).toBeDefined();
    // Its own: created, changed, deleted.
    await worker.apply(cnp('fos1-mine', owned), { fieldManager: 'fos1' });
    await worker.apply({ ...cnp('fos1-mine', owned), spec: { endpointSelector: { matchLabels: { app: 'other' } }, ingress: [{}] } }, { fieldManager: 'fos1' });
    expect(await worker.delete({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: TENANT, name: 'fos1-mine' })).toBe(true);
    // Taking fos1's label off its own object (handing it away) is refused too.
    await worker.apply(cnp('fos1-kept', owned), { fieldManager: 'fos1' });
    const disown = await refusal(() => worker.apply(cnp('fos1-kept', {}), { fieldManager: 'fos1' }));
    expect(disown?.message).toContain('may write only Cilium objects labelled app.kubernetes.io/managed-by=fos1');
    expect(disown).toMatchObject({ status: 403 });
  });

  test('a tenant namespace cannot create a host-firewall zone; a pod zone it can, and fos1-system may hold hosts zones', async () => {
    const zone = (namespace: string, name: string, kind: 'pods' | 'hosts'): KubeObject => ({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name, namespace }, spec: { kind, selector: { role: 'edge' } } });
    await eventually(() => refusal(() => tenant.create(zone(TENANT, 'edge', 'hosts'), { dryRun: true })), (e) => e !== undefined, 'the policy to be in force');
    const denied = await refusal(() => tenant.create(zone(TENANT, 'edge', 'hosts')));
    expect(denied).toMatchObject({ status: 403 });
    expect(denied!.message).toContain(`a FirewallZone of kind hosts (the host firewall of every node) may be made only in fos1-system or a namespace labelled fos1.io/host-firewall=true; ${TENANT} is not`);
    await tenant.create(zone(TENANT, 'web', 'pods'));
    // Nor by turning a pod zone into a hosts zone.
    const flipped = await refusal(() => tenant.apply(zone(TENANT, 'web', 'hosts'), { fieldManager: 'tenant', force: true }));
    expect(flipped).toMatchObject({ status: 403 });
    expect(await kube.client.get({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', namespace: TENANT, name: 'edge' })).toBeUndefined();
    // The admin, even, cannot put one in a tenant namespace; fos1-system (labelled) holds them.
    expect(await refusal(() => kube.client.create(zone(TENANT, 'edge2', 'hosts')))).toMatchObject({ status: 403 });
    await kube.client.create(zone('fos1-system', 'edge', 'hosts'));
    // A namespace the admin labels for it may hold one too.
    const labelled = `${TENANT}-infra`;
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: labelled, labels: { 'fos1.io/host-firewall': 'true' } } });
    await kube.client.create(zone(labelled, 'edge', 'hosts'));
  });
});
