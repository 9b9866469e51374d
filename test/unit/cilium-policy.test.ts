/**
 * Unit tests of the Cilium policy activities' logic with a fake Kubernetes client: which
 * errors are retryable, what gets pruned, what is refused before any write. The same
 * activities run against a real kube-apiserver in test/integration/k8s-cilium-policy.privileged.test.ts.
 */
import pino from 'pino';
import { createCiliumActivities, type PolicyKubeClient } from '../../activities/cilium-policy';
import { FailureType } from '../../model/failures';
import { KubeApiError, type ObjectRef, type StoredObject } from '../../k8s/client';
import { validateFirewallRule, validateFirewallZone } from '../../model/firewall';
import { translateRule, type KubeObject, type PolicySource } from '../../model/firewall-translate';
import { failureOf } from '../helpers/failures';

const source: PolicySource = { kind: 'FirewallRule', namespace: 'shop', name: 'r1' };
const zones = [validateFirewallZone({ name: 'web', selector: { app: 'web' } })].map((r) => (r.ok ? r.zone : undefined)).filter((z) => z !== undefined);
const policy = (name: string, extra: object = {}, src = source): KubeObject => {
  const r = validateFirewallRule({ name, zone: 'web', direction: 'ingress', ...extra });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return translateRule({ rule: r.rule, zones, namespace: 'shop', source: src, changeId: 'c' });
};

/** In-memory apiserver: objects by key, label-selector lists, optional failure injection. */
class FakeKube implements PolicyKubeClient {
  objects = new Map<string, StoredObject>();
  calls: string[] = [];
  failApply: KubeApiError | undefined;
  async apply(obj: KubeObject, options: { dryRun?: boolean }): Promise<StoredObject> {
    this.calls.push(`apply ${obj.metadata.name}${options.dryRun ? ' (dry-run)' : ''}`);
    if (this.failApply) throw this.failApply;
    const stored = { ...obj, metadata: { ...obj.metadata, uid: 'u', resourceVersion: '1' } };
    if (!options.dryRun) this.objects.set(`${obj.kind}/${obj.metadata.name}`, stored);
    return stored;
  }
  async list(_apiVersion: string, kind: string, options: { labelSelector?: string } = {}): Promise<{ items: StoredObject[] }> {
    const wanted = (options.labelSelector ?? '').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]);
    return { items: [...this.objects.values()].filter((o) => o.kind === kind && wanted.every(([k, v]) => o.metadata.labels?.[k] === v)) };
  }
  async delete(ref: ObjectRef, options: { dryRun?: boolean } = {}): Promise<boolean> {
    this.calls.push(`delete ${ref.name}${options.dryRun ? ' (dry-run)' : ''}`);
    if (!options.dryRun) this.objects.delete(`${ref.kind}/${ref.name}`);
    return true;
  }
}

const logger = pino({ level: 'silent' });

describe('cilium policy activities', () => {
  it('prunes only the objects of the same source that are no longer desired, never another source', async () => {
    const kube = new FakeKube();
    const acts = createCiliumActivities({ kube, logger });
    const other = policy('other', {}, { ...source, name: 'r2' });
    await acts.applyPolicies({ source: { ...source, name: 'r2' }, desired: [other] });
    await acts.applyPolicies({ source, desired: [policy('a'), policy('b')] });
    const result = await acts.applyPolicies({ source, desired: [policy('a')] });
    expect(result.pruned).toEqual(['CiliumNetworkPolicy shop/fos1-b']);
    expect([...kube.objects.keys()].sort()).toEqual(['CiliumNetworkPolicy/fos1-a', 'CiliumNetworkPolicy/fos1-other']);
  });

  it('refuses to take over an object another fos1 source made (same field manager would not conflict)', async () => {
    const kube = new FakeKube();
    const acts = createCiliumActivities({ kube, logger });
    const src2 = { ...source, kind: 'PolicySet', name: 'set' };
    await acts.applyPolicies({ source: src2, desired: [policy('shared', {}, src2)] });
    const failure = await failureOf(acts.applyPolicies({ source, desired: [policy('shared')] }));
    expect(failure.type).toBe(FailureType.PolicyConflict);
    expect(failure.message).toBe('CiliumNetworkPolicy shop/fos1-shared already belongs to policyset shop/set; rename one of them');
    expect(kube.objects.get('CiliumNetworkPolicy/fos1-shared')?.metadata.labels?.['fos1.io/source-name']).toBe('set');
  });

  it('dry-run prunes nothing and persists nothing', async () => {
    const kube = new FakeKube();
    const acts = createCiliumActivities({ kube, logger });
    await acts.applyPolicies({ source, desired: [policy('a')] });
    const planned = await acts.applyPolicies({ source, desired: [policy('b')], dryRun: true });
    expect(planned).toMatchObject({ applied: ['CiliumNetworkPolicy shop/fos1-b'], pruned: ['CiliumNetworkPolicy shop/fos1-a'] });
    expect([...kube.objects.keys()]).toEqual(['CiliumNetworkPolicy/fos1-a']);
  });

  it.each([
    [409, 'Conflict', FailureType.PolicyConflict, true],
    [422, 'Invalid', FailureType.PolicyRejected, true],
    [403, 'Forbidden', FailureType.PolicyRejected, true],
    [429, 'TooManyRequests', FailureType.KubeUnavailable, false],
    [503, 'ServiceUnavailable', FailureType.KubeUnavailable, false],
    [500, 'InternalError', FailureType.KubeUnavailable, false],
    [0, 'Unreachable', FailureType.KubeUnavailable, false],
  ])('maps HTTP %i to %s → %s (nonRetryable %s)', async (status, reason, type, nonRetryable) => {
    const kube = new FakeKube();
    kube.failApply = new KubeApiError(status, reason, `apply CiliumNetworkPolicy shop/fos1-a: ${status} ${reason}: spec.ingress[0]: bad`);
    const failure = await failureOf(createCiliumActivities({ kube, logger }).applyPolicies({ source, desired: [policy('a')] }));
    expect(failure.type).toBe(type);
    expect(failure.nonRetryable).toBe(nonRetryable);
    expect(failure.message).toContain('spec.ingress[0]: bad');
  });

  it('treats server-side apply\'s 500 for an undeclared field as a rejection, not an outage', async () => {
    const kube = new FakeKube();
    kube.failApply = new KubeApiError(500, 'HTTP500', 'apply CiliumNetworkPolicy shop/fos1-a: 500 HTTP500: failed to create typed patch object (shop/fos1-a; cilium.io/v2, Kind=CiliumNetworkPolicy): .spec.egress[0].auth: field not declared in schema');
    const failure = await failureOf(createCiliumActivities({ kube, logger }).applyPolicies({ source, desired: [policy('a')] }));
    expect(failure.type).toBe(FailureType.PolicyRejected);
    expect(failure.nonRetryable).toBe(true);
  });

  it('refuses to write an object without the source ownership labels (it could never be pruned)', async () => {
    const kube = new FakeKube();
    const foreign = policy('a', {}, { ...source, name: 'someone-else' });
    const failure = await failureOf(createCiliumActivities({ kube, logger }).applyPolicies({ source, desired: [foreign] }));
    expect(failure.type).toBe(FailureType.PolicyRejected);
    expect(kube.calls).toEqual([]);
  });

  it('refuses a change whose policy-map estimate exceeds the map, before writing anything', async () => {
    const kube = new FakeKube();
    const acts = createCiliumActivities({ kube, logger, policyMapMax: 16_384 });
    // 400 prefixes × 16 port blocks (1–65535) × 3 protocols = 19,200 entries for the "web" pods.
    const peers = Array.from({ length: 400 }, (_, i) => ({ cidr: `10.${Math.floor(i / 256)}.${i % 256}.0/24` }));
    const big = policy('big', { peers, ports: [{ port: 1, endPort: 65535, protocol: 'ANY' }] });
    const failure = await failureOf(acts.checkPolicyMap({ source, desired: [big] }));
    expect(failure.type).toBe(FailureType.PolicyMapOverflow);
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/about 19200 policy-map entries .* more than the map holds \(16384\)/);
    expect(kube.calls).toEqual([]);
    const fits = await acts.checkPolicyMap({ source, desired: [policy('small', { peers: peers.slice(0, 300), ports: [{ port: 1, endPort: 65535, protocol: 'ANY' }] })] });
    expect(fits[0]?.entries).toBe(14_400);
  });

  it('counts other sources’ policies on the same selector toward the same endpoints', async () => {
    const kube = new FakeKube();
    const acts = createCiliumActivities({ kube, logger, policyMapMax: 100 });
    const src2 = { ...source, name: 'r2' };
    await acts.applyPolicies({ source: src2, desired: [policy('existing', { ports: Array.from({ length: 30 }, (_, i) => ({ port: 1000 + i, protocol: 'ANY' })) }, src2)] });
    // existing: 1 × 90 entries; new: 1 × 15 → 105 > 100.
    const failure = await failureOf(acts.checkPolicyMap({ source, desired: [policy('new', { ports: Array.from({ length: 5 }, (_, i) => ({ port: 2000 + i, protocol: 'ANY' })) })] }));
    expect(failure.message).toContain('about 105 policy-map entries');
  });
});
