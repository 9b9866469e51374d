/**
 * Unit tests of fos1's firewall model and its translation to Cilium policy objects: the
 * shapes the translator produces, the combinations validation refuses (with the field named),
 * and the policy-map estimate. That the apiserver accepts these shapes is checked against the
 * real CRDs in test/integration/k8s-cilium-policy.privileged.test.ts.
 */
import { cidrGroupObjectName, clusterScopedName, validateFirewallRule, validateFirewallZone, type FirewallRule, type FirewallZone } from '../../model/firewall';
import {
  CHANGE_ID_ANNOTATION,
  estimatePolicyMapEntries,
  MANAGED_BY_LABEL,
  objectSetDifferences,
  portRangeBlocks,
  POD_NAMESPACE_LABEL,
  SOURCE_NAME_LABEL,
  translateCidrGroup,
  translateRule,
  TranslateError,
  type KubeObject,
} from '../../model/firewall-translate';

const zone = (input: unknown): FirewallZone => {
  const r = validateFirewallZone(input);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.zone;
};
const rule = (input: unknown): FirewallRule => {
  const r = validateFirewallRule(input);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.rule;
};
const zones = [zone({ name: 'web', selector: { app: 'web' } }), zone({ name: 'db', selector: { app: 'db' } }), zone({ name: 'edge', kind: 'hosts', selector: { 'fos1.io/role': 'edge' } })];
const source = { kind: 'FirewallRule', namespace: 'shop', name: 'r' };
const translate = (r: unknown) => translateRule({ rule: rule(r), zones, namespace: 'shop', source, changeId: 'c1' });
const spec = (o: KubeObject) => o.spec as Record<string, unknown>;

describe('translateRule', () => {
  it('makes a namespaced CiliumNetworkPolicy with a deterministic name, ownership labels and the change id', () => {
    const a = translate({ name: 'web-from-db', zone: 'web', direction: 'ingress', peers: [{ zone: 'db' }], ports: [{ port: 8080 }] });
    const b = translate({ name: 'web-from-db', zone: 'web', direction: 'ingress', peers: [{ zone: 'db' }], ports: [{ port: 8080 }] });
    expect(a).toEqual(b);
    expect(a.kind).toBe('CiliumNetworkPolicy');
    expect(a.metadata).toMatchObject({ name: 'fos1-web-from-db', namespace: 'shop' });
    expect(a.metadata.labels).toMatchObject({ [MANAGED_BY_LABEL]: 'fos1', [SOURCE_NAME_LABEL]: 'r' });
    expect(a.metadata.annotations).toEqual({ [CHANGE_ID_ANNOTATION]: 'c1' });
    expect(spec(a)).toEqual({
      endpointSelector: { matchLabels: { app: 'web' } },
      ingress: [{ fromEndpoints: [{ matchLabels: { app: 'db' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
    });
  });

  it('turns CIDR peers into toCIDRSet with except and CIDR groups into cidrGroupRef, one Cilium rule per peer kind', () => {
    const p = translate({
      name: 'out',
      zone: 'web',
      direction: 'egress',
      peers: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }, { cidrGroup: 'partners' }, { entity: 'world' }, { labels: { app: 'x' }, namespace: 'other' }],
      ports: [{ port: 1000, endPort: 2000, protocol: 'UDP' }],
    });
    const egress = spec(p).egress as Record<string, unknown>[];
    expect(egress).toHaveLength(3);
    expect(egress[0]).toMatchObject({ toEndpoints: [{ matchLabels: { app: 'x', [POD_NAMESPACE_LABEL]: 'other' } }] });
    expect(egress[1]).toMatchObject({ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }, { cidrGroupRef: cidrGroupObjectName('shop', 'partners') }] });
    expect(egress[2]).toMatchObject({ toEntities: ['world'] });
    for (const r of egress) expect(r.toPorts).toEqual([{ ports: [{ port: '1000', endPort: 2000, protocol: 'UDP' }] }]);
  });

  it('puts L7 HTTP (method, path, header), Kafka and DNS rules on the ports', () => {
    const http = translate({ name: 'h', zone: 'web', direction: 'ingress', ports: [{ port: 80 }], l7: { http: [{ method: 'GET', path: '/public/.*', headers: [{ name: 'X-Token', value: '[0-9]+' }] }] } });
    expect((spec(http).ingress as Record<string, unknown>[])[0]).toEqual({
      fromEntities: ['all'],
      toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public/.*', headerMatches: [{ name: 'X-Token', value: '[0-9]+' }] }] } }],
    });
    const kafka = translate({ name: 'k', zone: 'web', direction: 'egress', peers: [{ zone: 'db' }], ports: [{ port: 9092 }], l7: { kafka: [{ role: 'produce', topic: 'orders' }] } });
    expect(JSON.stringify(spec(kafka))).toContain('"kafka":[{"role":"produce","topic":"orders"}]');
    const dns = translate({ name: 'd', zone: 'web', direction: 'egress', peers: [{ entity: 'cluster' }], ports: [{ port: 53, protocol: 'ANY' }], l7: { dns: [{ matchPattern: '*.example.com' }] } });
    expect(JSON.stringify(spec(dns))).toContain('"dns":[{"matchPattern":"*.example.com"}]');
  });

  it('uses toFQDNs for FQDN peers and ingressDeny/egressDeny for deny rules', () => {
    const f = translate({ name: 'f', zone: 'web', direction: 'egress', peers: [{ fqdn: { matchName: 'api.example.com' } }], ports: [{ port: 443 }] });
    expect((spec(f).egress as Record<string, unknown>[])[0]).toMatchObject({ toFQDNs: [{ matchName: 'api.example.com' }] });
    const d = translate({ name: 'deny', zone: 'web', direction: 'ingress', action: 'deny', peers: [{ cidr: '192.0.2.0/24' }] });
    expect(spec(d)).toEqual({ endpointSelector: { matchLabels: { app: 'web' } }, ingressDeny: [{ fromCIDRSet: [{ cidr: '192.0.2.0/24' }] }] });
  });

  it('makes a host-firewall CiliumClusterwideNetworkPolicy with nodeSelector for a hosts zone, keeping pod peers in their namespace', () => {
    const h = translate({ name: 'ssh', zone: 'edge', direction: 'ingress', peers: [{ zone: 'web' }], ports: [{ port: 22 }] });
    expect(h.kind).toBe('CiliumClusterwideNetworkPolicy');
    expect(h.metadata.namespace).toBeUndefined();
    expect(h.metadata.name).toBe(clusterScopedName('shop', 'ssh'));
    expect(h.metadata.name).toMatch(/^fos1-shop-ssh-[0-9a-z]+$/);
    expect(spec(h).nodeSelector).toEqual({ matchLabels: { 'fos1.io/role': 'edge' } });
    expect((spec(h).ingress as Record<string, unknown>[])[0]).toMatchObject({ fromEndpoints: [{ matchLabels: { app: 'web', [POD_NAMESPACE_LABEL]: 'shop' } }] });
  });

  it('gives cluster-scoped objects of one name in two namespaces distinct names, even where the dashes would meet', () => {
    const ssh = { name: 'ssh', zone: 'edge', direction: 'ingress', ports: [{ port: 22 }] };
    const inShop = translateRule({ rule: rule(ssh), zones, namespace: 'shop', source, changeId: 'c1' });
    const inLab = translateRule({ rule: rule(ssh), zones, namespace: 'lab', source: { ...source, namespace: 'lab' }, changeId: 'c1' });
    expect(inShop.metadata.name).not.toBe(inLab.metadata.name);
    // `a-b` + `c` and `a` + `b-c` would both be fos1-a-b-c without the hash.
    expect(clusterScopedName('a-b', 'c')).not.toBe(clusterScopedName('a', 'b-c'));
    expect(cidrGroupObjectName('shop', 'partners')).not.toBe(cidrGroupObjectName('lab', 'partners'));
    expect(clusterScopedName('x'.repeat(63), 'y'.repeat(63)).length).toBeLessThanOrEqual(253);
  });

  it('refuses an unknown zone, naming the field', () => {
    expect(() => translate({ name: 'x', zone: 'nope', direction: 'ingress' })).toThrow(TranslateError);
    expect(() => translate({ name: 'x', zone: 'web', direction: 'ingress', peers: [{ zone: 'ghost' }] })).toThrow('peers[0].zone: zone "ghost" does not exist');
  });

  it('makes a v2alpha1 CiliumCIDRGroup', () => {
    expect(translateCidrGroup({ name: 'partners', cidrs: ['198.51.100.0/24'] }, source, 'c1')).toMatchObject({ apiVersion: 'cilium.io/v2alpha1', kind: 'CiliumCIDRGroup', metadata: { name: cidrGroupObjectName('shop', 'partners') }, spec: { externalCIDRs: ['198.51.100.0/24'] } });
  });
});

describe('validateFirewallRule', () => {
  const issues = (input: unknown) => {
    const r = validateFirewallRule(input);
    return r.ok ? [] : r.issues;
  };
  it.each([
    [{ name: 'x', zone: 'web', direction: 'ingress', action: 'deny', ports: [{ port: 80 }], l7: { http: [{ method: 'GET' }] } }, 'l7', 'deny rules cannot carry L7'],
    [{ name: 'x', zone: 'web', direction: 'ingress', peers: [{ fqdn: { matchName: 'a.b' } }] }, 'peers[0].fqdn', 'egress only'],
    [{ name: 'x', zone: 'web', direction: 'egress', peers: [{ cidr: '10.0.0.1/8' }] }, 'peers[0].cidr', 'host bits'],
    [{ name: 'x', zone: 'web', direction: 'egress', peers: [{ cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] }] }, 'peers[0].except[0]', 'not strictly inside'],
    [{ name: 'x', zone: 'web', direction: 'egress', ports: [{ port: 70000 }] }, 'ports[0].port', '1–65535'],
    [{ name: 'x', zone: 'web', direction: 'egress', ports: [{ port: 20, endPort: 10 }] }, 'ports[0].endPort', 'must not be below'],
    [{ name: 'x', zone: 'web', direction: 'egress', ports: [{ port: 9092 }], l7: { kafka: [{ role: 'produce', apiKey: 'fetch' }] } }, 'l7.kafka[0].apiKey', 'mutually exclusive'],
    [{ name: 'Bad_Name', zone: 'web', direction: 'egress' }, 'name', 'DNS-1123'],
    [{ name: 'x', zone: 'web', direction: 'egress', peers: [{ fqdn: { matchName: 'a.b' } }, { entity: 'world' }] }, 'peers', 'cannot be mixed'],
  ])('refuses %j at %s', (input, field, message) => {
    const found = issues(input);
    expect(found.map((i) => i.field)).toContain(field);
    expect(found.find((i) => i.field === field)?.message).toContain(message);
  });
});

describe('policy-map estimate', () => {
  it('counts a port range as its aligned power-of-two blocks', () => {
    expect(portRangeBlocks(80, 80)).toBe(1);
    expect(portRangeBlocks(1024, 2047)).toBe(1);
    expect(portRangeBlocks(1, 65535)).toBe(16);
    expect(portRangeBlocks(1000, 2000)).toBe(8);
  });

  it('multiplies identities by ports and protocols and sums policies on the same selector', () => {
    const a = translate({ name: 'a', zone: 'web', direction: 'ingress', peers: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }, { entity: 'world' }], ports: [{ port: 80 }, { port: 53, protocol: 'ANY' }] });
    const b = translate({ name: 'b', zone: 'web', direction: 'egress', peers: [{ zone: 'db' }, { zone: 'web' }], ports: [{ port: 1, endPort: 65535, protocol: 'TCP' }] });
    const c = translate({ name: 'c', zone: 'db', direction: 'ingress' });
    const est = estimatePolicyMapEntries([a, b, c], { identitiesPerSelector: 10 });
    // a: (2 cidr identities × 4 port-protocols) + (1 entity × 4) = 12; b: 20 identities × 16 blocks = 320.
    expect(est.find((e) => e.subject.includes('"web"'))).toMatchObject({ entries: 332, policies: ['CiliumNetworkPolicy/shop/fos1-a', 'CiliumNetworkPolicy/shop/fos1-b'] });
    expect(est.find((e) => e.subject.includes('"db"'))?.entries).toBe(1);
  });
});

describe('objectSetDifferences', () => {
  it('names missing, unexpected and differing objects and ignores key order', () => {
    const a = translate({ name: 'a', zone: 'web', direction: 'ingress' });
    const b = translate({ name: 'b', zone: 'web', direction: 'ingress' });
    const reordered = JSON.parse(JSON.stringify({ ...a, spec: { ingress: spec(a).ingress, endpointSelector: spec(a).endpointSelector } })) as KubeObject;
    expect(objectSetDifferences([a], [reordered])).toEqual([]);
    const changed = { ...a, metadata: { ...a.metadata, annotations: { [CHANGE_ID_ANNOTATION]: 'c2' } } };
    expect(objectSetDifferences([a, b], [changed])).toEqual([expect.stringMatching(/^differs CiliumNetworkPolicy shop\/fos1-a/), 'missing CiliumNetworkPolicy shop/fos1-b']);
    expect(objectSetDifferences([], [b])).toEqual(['unexpected CiliumNetworkPolicy shop/fos1-b']);
  });
});
