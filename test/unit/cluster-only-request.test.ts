/**
 * Cluster-only change requests (model/change-request.ts): `clusterPolicy` with no node part is
 * valid; neither is refused naming both fields; a node part given by half is refused as before.
 * And the FirewallRule controller's request for one rule (controllers/firewall-rule-controller.ts).
 */
import { firewallRuleChangeId, firewallRuleChangeRequest } from '../../controllers/firewall-rule-controller';
import type { StoredObject } from '../../k8s/client';
import { isClusterOnly, validateChangeRequest } from '../../model/change-request';

const base = { id: 'c1', author: 'alice', reason: 'test' };
const clusterPolicy = { namespace: 'shop', cilium: [{ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'p' }, spec: {} }] };
const issues = (req: object) => {
  const r = validateChangeRequest(req, Date.parse('2026-01-01T00:00:00Z'));
  return r.ok ? [] : r.issues.map((i) => `${i.field}: ${i.message}`);
};

describe('cluster-only change requests', () => {
  it('accepts clusterPolicy without any node part, and says it is cluster-only', () => {
    const r = validateChangeRequest({ ...base, clusterPolicy }, 0);
    expect(r.ok).toBe(true);
    expect(r.ok && isClusterOnly(r.request)).toBe(true);
  });

  it('a request with a node part is not cluster-only, with or without clusterPolicy', () => {
    expect(isClusterOnly({ ...base, targets: ['n1'], patch: {}, clusterPolicy })).toBe(false);
    expect(isClusterOnly({ ...base, targetSelector: {}, desired: {} })).toBe(false);
  });

  it('refuses a request with neither a node part nor clusterPolicy, naming both fields and the way out', () => {
    expect(issues(base)).toEqual([
      'desired: give exactly one of "desired" (full state) or "patch", or only "clusterPolicy" (a cluster-only change)',
      'targets: give exactly one of "targets" (node names) or "targetSelector" (labels over the inventory), or only "clusterPolicy" (a cluster-only change)',
    ]);
  });

  it('refuses a node part given by half, even with clusterPolicy', () => {
    expect(issues({ ...base, targets: ['n1'], clusterPolicy })).toEqual(['desired: give exactly one of "desired" (full state) or "patch"']);
    expect(issues({ ...base, patch: {}, clusterPolicy })).toEqual(['targets: give exactly one of "targets" (node names) or "targetSelector" (labels over the inventory)']);
  });

  it('refuses an empty clusterPolicy naming it', () => {
    expect(issues({ ...base, clusterPolicy: {} })).toEqual(['clusterPolicy: carries nothing: give rules (with their source) or cilium documents']);
  });
});

describe('the FirewallRule controller request', () => {
  const rule = { apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', metadata: { name: 'web-in', namespace: 'shop', uid: 'u1', generation: 3 }, spec: { zone: 'web', direction: 'ingress', peers: [{ entity: 'world' }] } } as StoredObject;
  const zone = { apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name: 'web', namespace: 'shop' }, spec: { selector: { app: 'web' } } } as StoredObject;

  it('is a valid cluster-only change of the rule and its zones under the rule as source', () => {
    const id = firewallRuleChangeId(rule, { generation: 3 });
    expect(id).toMatch(/^fwr-web-in-[a-z0-9]+-g3$/);
    const request = firewallRuleChangeRequest(id, { namespace: 'shop', name: 'web-in' }, rule, [zone], 'test');
    const r = validateChangeRequest(request, 0);
    expect(r.ok && isClusterOnly(r.request)).toBe(true);
    expect(r.ok && r.request.clusterPolicy).toMatchObject({ namespace: 'shop', source: { kind: 'FirewallRule', namespace: 'shop', name: 'web-in' }, rules: [{ name: 'web-in', zone: 'web' }], zones: [{ name: 'web', selector: { app: 'web' } }] });
  });

  it('the cleanup carries no rules under the same source (it prunes what the rule owned)', () => {
    const id = firewallRuleChangeId(rule, 'delete');
    expect(id).toMatch(/^fwr-web-in-[a-z0-9]+-del$/);
    const r = validateChangeRequest(firewallRuleChangeRequest(id, { namespace: 'shop', name: 'web-in' }, undefined, [zone], 'deleted'), 0);
    expect(r.ok && r.request.clusterPolicy).toMatchObject({ source: { kind: 'FirewallRule', name: 'web-in' }, rules: [], zones: [] });
  });
});
