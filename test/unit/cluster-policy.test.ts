/**
 * The change request's cluster policy (model/cluster-policy.ts) and the logic of its
 * activities (activities/cluster-policy.ts) over an in-memory object store: envelope checks,
 * one object one writer, how the apiserver's refusals become fields, and exact restores.
 */
import pino from 'pino';
import { createClusterPolicyActivities, normaliseDocument, refusalOf } from '../../activities/cluster-policy';
import { KubeApiError } from '../../k8s/client';
import { validateChangeRequest } from '../../model/change-request';
import { clusterPolicyObjects, clusterPolicySchema, rejectionIssue } from '../../model/cluster-policy';
import type { KubeObject } from '../../model/firewall-translate';
import { FakeKube } from '../helpers/fake-node';

const cnp = (name: string, port = '80', extra: Partial<KubeObject> = {}): KubeObject => ({
  apiVersion: 'cilium.io/v2',
  kind: 'CiliumNetworkPolicy',
  metadata: { name },
  spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ toPorts: [{ ports: [{ port, protocol: 'TCP' }] }] }] },
  ...extra,
});

const base = { id: 'c1', author: 'a', reason: 'r', targets: ['n1'], patch: {} };
const issuesOf = (clusterPolicy: unknown) => {
  const r = validateChangeRequest({ ...base, clusterPolicy }, Date.now());
  return r.ok ? [] : r.issues;
};

describe('clusterPolicy in a change request', () => {
  it('checks the envelope of native documents and names the field', () => {
    expect(issuesOf({ cilium: [{ ...cnp('x'), kind: 'NetworkPolicy' }] })).toEqual([{ field: 'clusterPolicy.cilium[0].kind', message: expect.stringContaining('must be one of CiliumCIDRGroup, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy') }]);
    expect(issuesOf({ cilium: [{ ...cnp('x'), apiVersion: 'networking.k8s.io/v1' }] })[0]?.field).toBe('clusterPolicy.cilium[0].apiVersion');
    expect(issuesOf({ cilium: [cnp('Not_A_Name')] })[0]?.field).toBe('clusterPolicy.cilium[0].metadata.name');
    const ccnp = { ...cnp('x'), kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'x', namespace: 'web' } };
    expect(issuesOf({ cilium: [ccnp] })).toEqual([{ field: 'clusterPolicy.cilium[0].metadata.namespace', message: 'CiliumClusterwideNetworkPolicy is cluster-scoped: it has no namespace' }]);
    expect(issuesOf({ cilium: ['a string'] })[0]).toEqual({ field: 'clusterPolicy.cilium[0]', message: 'must be a Kubernetes object' });
  });

  it('needs a source for rules, and something to carry', () => {
    expect(issuesOf({ rules: [{ name: 'r', zone: 'web', direction: 'ingress' }] })).toEqual([{ field: 'clusterPolicy.source', message: expect.stringContaining('must name the fos1 object') }]);
    expect(issuesOf({})[0]?.message).toContain('carries nothing');
  });

  it('keeps documents as written (a deep copy) and fills only the missing namespace of a namespaced kind', () => {
    const policy = clusterPolicySchema.parse({ namespace: 'web', cilium: [cnp('a', '80', { metadata: { name: 'a', labels: { team: 'x' } } }), { ...cnp('g'), kind: 'CiliumCIDRGroup', apiVersion: 'cilium.io/v2alpha1', spec: { externalCIDRs: ['192.0.2.0/24'] } }] });
    const result = clusterPolicyObjects(policy, 'c1');
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    expect(result.objects.documents.map((d) => [d.field, d.object.metadata])).toEqual([
      ['clusterPolicy.cilium[0]', { name: 'a', labels: { team: 'x' }, namespace: 'web' }],
      ['clusterPolicy.cilium[1]', { name: 'g' }],
    ]);
    expect(policy.cilium[0]?.metadata.namespace).toBeUndefined();
  });

  it('refuses two writers of one object, and names a translation error by its rule field', () => {
    const twice = clusterPolicyObjects(clusterPolicySchema.parse({ namespace: 'web', cilium: [cnp('a'), cnp('a', '443')] }), 'c1');
    expect(twice).toEqual({ ok: false, issues: [{ field: 'clusterPolicy.cilium[1].metadata.name', message: 'CiliumNetworkPolicy web/a is also written by clusterPolicy.cilium[0]: one object, one writer' }] });
    const policy = clusterPolicySchema.parse({ namespace: 'web', source: { kind: 'FirewallRule', namespace: 'web', name: 'set' }, zones: [{ name: 'web', selector: { app: 'web' } }], rules: [{ name: 'r', zone: 'nowhere', direction: 'ingress' }, { name: 'ok', zone: 'web', direction: 'ingress' }], cilium: [cnp('fos1-ok')] });
    const result = clusterPolicyObjects(policy, 'c1');
    expect(result.ok ? [] : result.issues).toEqual([
      { field: 'clusterPolicy.rules[0].zone', message: 'zone "nowhere" does not exist (known: web)' },
      { field: 'clusterPolicy.cilium[0].metadata.name', message: 'CiliumNetworkPolicy web/fos1-ok is also written by the translated rules: one object, one writer' },
    ]);
  });
});

describe("the apiserver's refusals", () => {
  it('turns a 422 into one issue per cause, with the path inside the document', () => {
    const err = new KubeApiError(422, 'Invalid', 'apply CiliumNetworkPolicy web/a: 422 Invalid: …', [{ field: 'spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator', message: 'Unsupported value: "in"' }]);
    const refusal = refusalOf(err) ?? [];
    expect(refusal).toEqual([{ path: 'spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator', rule: 'Unsupported value: "in" (apiserver: 422 Invalid)' }]);
    expect(rejectionIssue({ field: 'clusterPolicy.cilium[2]', object: 'CiliumNetworkPolicy web/a' }, refusal[0]!)).toEqual({
      field: 'clusterPolicy.cilium[2].spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator',
      message: 'CiliumNetworkPolicy web/a rejected by the cluster: Unsupported value: "in" (apiserver: 422 Invalid)',
    });
  });

  it("reads a server-side apply's 500 for an undeclared field as a refusal, other 5xx as not a verdict", () => {
    const typed = new KubeApiError(500, 'InternalError', 'apply CiliumNetworkPolicy web/a: 500 InternalError: failed to create typed patch object (web/a; cilium.io/v2, Kind=CiliumNetworkPolicy): .spec.egress[0].auth: field not declared in schema');
    expect(refusalOf(typed)).toEqual([{ path: 'spec.egress[0].auth', rule: 'field not declared in schema (apiserver: 500 InternalError)' }]);
    expect(refusalOf(new KubeApiError(503, 'ServiceUnavailable', 'x'))).toBeUndefined();
    expect(refusalOf(new KubeApiError(0, 'Unreachable', 'x'))).toBeUndefined();
    expect(refusalOf(new Error('not from the API'))).toBeUndefined();
    expect(refusalOf(new KubeApiError(404, 'NotFound', 'apply X: 404 NotFound'))?.[0]?.rule).toContain('the cluster serves no such kind');
  });
});

describe('cluster policy activities over an object store', () => {
  const logger = pino({ level: 'silent' });
  const doc = (object: KubeObject, i: number) => ({ field: `clusterPolicy.cilium[${i}]`, object: { ...object, metadata: { ...object.metadata, namespace: 'web' } } });

  it('plans, applies and restores exactly: a changed object back in place, a created one deleted', async () => {
    const kube = new FakeKube();
    const acts = createClusterPolicyActivities({ kube, logger });
    await kube.apply({ ...doc(cnp('old', '80', { specs: [{ endpointSelector: {} }] } as Partial<KubeObject>), 0).object }, {});
    const before = [...kube.objects.values()].map(normaliseDocument);
    const objects = { documents: [doc(cnp('old', '443'), 0), doc(cnp('new'), 1)] };
    const prepared = await acts.prepareClusterPolicy({ changeId: 'c1', objects });
    expect(prepared.rejected).toEqual([]);
    expect(prepared.plan).toEqual(['~ CiliumNetworkPolicy web/old', '+ CiliumNetworkPolicy web/new']);
    expect(prepared.snapshot.entries.map((e) => [e.key, e.before === null])).toEqual([
      ['CiliumNetworkPolicy web/new', true],
      ['CiliumNetworkPolicy web/old', false],
    ]);
    expect(kube.objects.size).toBe(1); // the dry run wrote nothing
    await acts.applyClusterPolicy({ objects });
    expect(kube.objects.size).toBe(2);
    const restored = await acts.restoreClusterPolicy({ snapshot: prepared.snapshot });
    expect(restored).toEqual({ restored: ['CiliumNetworkPolicy web/old'], deleted: ['CiliumNetworkPolicy web/new'] });
    // `specs` (a field the Cilium activities' normalisation drops) is back too.
    expect([...kube.objects.values()].map(normaliseDocument)).toEqual(before);
    expect(await acts.readClusterPolicy({ refs: prepared.snapshot.entries.map((e) => e.ref) })).toEqual([null, before[0]]);
    // Idempotent: a second restore changes nothing.
    await acts.restoreClusterPolicy({ snapshot: prepared.snapshot });
    expect([...kube.objects.values()].map(normaliseDocument)).toEqual(before);
  });

  it('collects every refusal of a dry run instead of stopping at the first', async () => {
    const kube = new FakeKube();
    kube.apply = async (obj) => {
      throw new KubeApiError(422, 'Invalid', `apply ${obj.metadata.name}: 422 Invalid`, [{ field: 'spec.x', message: `bad ${obj.metadata.name}` }]);
    };
    const prepared = await createClusterPolicyActivities({ kube, logger }).prepareClusterPolicy({ changeId: 'c1', objects: { documents: [doc(cnp('a'), 0), doc(cnp('b'), 1)] } });
    expect(prepared.rejected).toEqual([
      { field: 'clusterPolicy.cilium[0]', object: 'CiliumNetworkPolicy web/a', path: 'spec.x', rule: 'bad a (apiserver: 422 Invalid)' },
      { field: 'clusterPolicy.cilium[1]', object: 'CiliumNetworkPolicy web/b', path: 'spec.x', rule: 'bad b (apiserver: 422 Invalid)' },
    ]);
  });
});
