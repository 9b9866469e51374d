/**
 * Translates fos1's firewall model into Cilium policy objects, and estimates the policy-map
 * entries those objects cost each endpoint.
 *
 * One FirewallRule becomes one Cilium policy with a deterministic name: a CiliumNetworkPolicy
 * in the rule's namespace for a pod zone, a CiliumClusterwideNetworkPolicy with `nodeSelector`
 * (Cilium's host firewall only takes clusterwide policies) for a host zone. Every object
 * carries fos1's ownership labels (so fos1 can find, and prune, only what it made) and the id
 * of the change that produced it. Pure code: bundled into workflows.
 */
import type { CidrGroup, FirewallRule, FirewallZone, Peer, PortRule } from './firewall';
import { cidrGroupObjectName, clusterScopedName } from './firewall';

/** Label every object fos1 writes carries; pruning only ever considers objects with it. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'fos1';
/** Labels naming the fos1 object a policy was made from (its "scope" for pruning). */
export const SOURCE_KIND_LABEL = 'fos1.io/source-kind';
export const SOURCE_NAMESPACE_LABEL = 'fos1.io/source-namespace';
export const SOURCE_NAME_LABEL = 'fos1.io/source-name';
/** Annotation with the change id (the workflow's) that last wrote the object. */
export const CHANGE_ID_ANNOTATION = 'fos1.io/change-id';

export const CILIUM_API_VERSION = 'cilium.io/v2';
/** CiliumCIDRGroup is served as v2alpha1 only by the CRDs fos1 is tested against (Cilium 1.17). */
export const CILIUM_CIDR_GROUP_API_VERSION = 'cilium.io/v2alpha1';

/** Cilium's namespace label on endpoints; clusterwide selectors need it to stay in a namespace. */
export const POD_NAMESPACE_LABEL = 'k8s:io.kubernetes.pod.namespace';

/** The parts of a Kubernetes object fos1 writes and compares. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: unknown;
}

/** The fos1 object a set of Cilium objects comes from. */
export interface PolicySource {
  kind: string;
  namespace: string;
  name: string;
}

/** Thrown for a rule that is valid alone but not with the zones it names. */
export class TranslateError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'TranslateError';
  }
}

/** Labels that mark an object as made by fos1 from `source`. */
export function ownershipLabels(source: PolicySource): Record<string, string> {
  return {
    [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
    [SOURCE_KIND_LABEL]: source.kind.toLowerCase(),
    [SOURCE_NAMESPACE_LABEL]: source.namespace,
    [SOURCE_NAME_LABEL]: source.name,
  };
}

/** Label selector (`k=v,k=v`) of the objects fos1 made from `source`. */
export function ownershipSelector(source: PolicySource): string {
  return Object.entries(ownershipLabels(source))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/** Input of {@link translateRule}. */
export interface TranslateInput {
  rule: FirewallRule;
  /** Zones of the rule's namespace; the rule's zone and any zone peers are looked up here. */
  zones: FirewallZone[];
  namespace: string;
  source: PolicySource;
  changeId: string;
}

type Selector = { matchLabels: Record<string, string> };
type CiliumRule = Record<string, unknown>;

/** Translates one rule into one Cilium policy object. */
export function translateRule(input: TranslateInput): KubeObject {
  const { rule, namespace } = input;
  const zone = findZone(input.zones, rule.zone, 'zone');
  const hostPolicy = zone.kind === 'hosts';
  const key = `${rule.direction}${rule.action === 'deny' ? 'Deny' : ''}`;
  const spec: Record<string, unknown> = {};
  if (rule.description) spec.description = rule.description;
  if (hostPolicy) spec.nodeSelector = { matchLabels: { ...zone.selector } };
  else spec.endpointSelector = { matchLabels: { ...zone.selector } };
  spec[key] = translatePeers(input, hostPolicy).map((peerRule) => ({ ...peerRule, ...translatePorts(rule) }));

  const metadata: KubeObject['metadata'] = {
    // Cluster-scoped (host firewall): the namespace is part of the name, so rules of one name
    // in two namespaces stay two objects.
    name: hostPolicy ? clusterScopedName(namespace, rule.name) : `fos1-${rule.name}`,
    labels: ownershipLabels(input.source),
    annotations: { [CHANGE_ID_ANNOTATION]: input.changeId },
  };
  if (!hostPolicy) metadata.namespace = namespace;
  return {
    apiVersion: CILIUM_API_VERSION,
    kind: hostPolicy ? 'CiliumClusterwideNetworkPolicy' : 'CiliumNetworkPolicy',
    metadata,
    spec,
  };
}

/** Translates a CIDR group into a CiliumCIDRGroup (cluster-scoped). */
export function translateCidrGroup(group: CidrGroup, source: PolicySource, changeId: string): KubeObject {
  return {
    apiVersion: CILIUM_CIDR_GROUP_API_VERSION,
    kind: 'CiliumCIDRGroup',
    metadata: { name: cidrGroupObjectName(source.namespace, group.name), labels: ownershipLabels(source), annotations: { [CHANGE_ID_ANNOTATION]: changeId } },
    spec: { externalCIDRs: [...group.cidrs] },
  };
}

function findZone(zones: FirewallZone[], name: string, field: string): FirewallZone {
  const zone = zones.find((z) => z.name === name);
  if (!zone) throw new TranslateError(field, `zone "${name}" does not exist (known: ${zones.map((z) => z.name).join(', ') || 'none'})`);
  return zone;
}

/**
 * One Cilium rule per kind of peer, each with the rule's ports: separate rules are OR'ed,
 * which is exactly "any of these peers", with no reliance on how Cilium combines different
 * selector kinds inside one rule.
 */
function translatePeers(input: TranslateInput, clusterwide: boolean): CiliumRule[] {
  const { rule } = input;
  const dir = rule.direction === 'ingress' ? 'from' : 'to';
  if (rule.peers.length === 0) return [{ [`${dir}Entities`]: ['all'] }];
  const endpoints: Selector[] = [];
  const cidrSet: Record<string, unknown>[] = [];
  const entities: string[] = [];
  const fqdns: Record<string, string>[] = [];
  rule.peers.forEach((peer: Peer, i) => {
    if ('zone' in peer) {
      const z = findZone(input.zones, peer.zone, `peers[${i}].zone`);
      if (z.kind === 'hosts') throw new TranslateError(`peers[${i}].zone`, `zone "${z.name}" is a hosts zone; use the entity "host" or "remote-node" as a peer`);
      endpoints.push({ matchLabels: clusterwide ? { ...z.selector, [POD_NAMESPACE_LABEL]: input.namespace } : { ...z.selector } });
    } else if ('labels' in peer) {
      const ns = peer.namespace ?? (clusterwide ? input.namespace : undefined);
      endpoints.push({ matchLabels: ns ? { ...peer.labels, [POD_NAMESPACE_LABEL]: ns } : { ...peer.labels } });
    } else if ('cidr' in peer) {
      cidrSet.push(peer.except.length > 0 ? { cidr: peer.cidr, except: [...peer.except] } : { cidr: peer.cidr });
    } else if ('cidrGroup' in peer) {
      cidrSet.push({ cidrGroupRef: cidrGroupObjectName(input.namespace, peer.cidrGroup) });
    } else if ('entity' in peer) {
      if (!entities.includes(peer.entity)) entities.push(peer.entity);
    } else {
      fqdns.push({ ...peer.fqdn });
    }
  });
  const out: CiliumRule[] = [];
  if (endpoints.length > 0) out.push({ [`${dir}Endpoints`]: endpoints });
  if (cidrSet.length > 0) out.push({ [`${dir}CIDRSet`]: cidrSet });
  if (entities.length > 0) out.push({ [`${dir}Entities`]: entities });
  if (fqdns.length > 0) out.push({ toFQDNs: fqdns });
  return out;
}

function translatePorts(rule: FirewallRule): CiliumRule {
  if (rule.ports.length === 0) return {};
  const ports = rule.ports.map((p: PortRule) => (p.endPort !== undefined && p.endPort !== p.port ? { port: String(p.port), endPort: p.endPort, protocol: p.protocol } : { port: String(p.port), protocol: p.protocol }));
  const toPort: Record<string, unknown> = { ports };
  if (rule.l7) {
    if ('http' in rule.l7) {
      toPort.rules = {
        http: rule.l7.http.map((h) => {
          const out: Record<string, unknown> = {};
          if (h.method) out.method = h.method;
          if (h.path) out.path = h.path;
          if (h.host) out.host = h.host;
          if (h.headers.length > 0) out.headerMatches = h.headers.map((hd) => (hd.value === undefined ? { name: hd.name } : { name: hd.name, value: hd.value }));
          return out;
        }),
      };
    } else if ('kafka' in rule.l7) {
      toPort.rules = { kafka: rule.l7.kafka.map((k) => ({ ...k })) };
    } else {
      toPort.rules = { dns: rule.l7.dns.map((d) => ({ ...d })) };
    }
  }
  return { toPorts: [toPort] };
}

/** Cilium's default policy map size: entries per endpoint (`bpf-policy-map-max`). */
export const DEFAULT_POLICY_MAP_MAX = 16_384;

/** Assumptions for identities fos1 cannot count from the policy alone. */
export interface PolicyMapEstimateOptions {
  /** Identities a label selector matches (the cluster's pods decide; default 1). */
  identitiesPerSelector?: number;
  /** Identities one FQDN selector resolves to over time (default 1 per name, 16 per pattern). */
  identitiesPerFqdnName?: number;
  identitiesPerFqdnPattern?: number;
  /** Prefixes in each CiliumCIDRGroup by object name; unknown groups count as 1. */
  cidrGroupSizes?: Record<string, number>;
}

/** Estimated policy-map entries for the endpoints one selector picks. */
export interface PolicyMapEstimate {
  /** `CiliumNetworkPolicy ns {"app":"web"}` or `host {"role":"edge"}`: who the entries land on. */
  subject: string;
  entries: number;
  /** The policies contributing, `kind/namespace/name`. */
  policies: string[];
}

/**
 * Estimates the policy-map entries each selected endpoint needs, summed over every policy
 * selecting it with the same selector: for each rule, identities × (ports × protocols), where
 * a port range costs one entry per aligned power-of-two block (that is how Cilium stores
 * ranges in its LPM policy map) and protocol ANY costs three (TCP, UDP, SCTP).
 * Endpoints matched by two different selectors are not merged, so this is a lower bound for
 * them — good enough to refuse the changes that cannot possibly fit.
 */
export function estimatePolicyMapEntries(policies: KubeObject[], options: PolicyMapEstimateOptions = {}): PolicyMapEstimate[] {
  const bySubject = new Map<string, PolicyMapEstimate>();
  for (const policy of policies) {
    const specBody = policy.spec as Record<string, unknown> | undefined;
    const specsList = (policy as unknown as { specs?: unknown[] }).specs;
    const specs = [specBody, ...(Array.isArray(specsList) ? specsList : [])].filter((s): s is Record<string, unknown> => typeof s === 'object' && s !== null);
    for (const spec of specs) {
      const subject = subjectKey(policy, spec);
      const entry = bySubject.get(subject) ?? { subject, entries: 0, policies: [] };
      entry.entries += specEntries(spec, options);
      const ref = `${policy.kind}/${policy.metadata.namespace ?? ''}/${policy.metadata.name}`;
      if (!entry.policies.includes(ref)) entry.policies.push(ref);
      bySubject.set(subject, entry);
    }
  }
  return [...bySubject.values()].sort((a, b) => b.entries - a.entries);
}

function subjectKey(policy: KubeObject, spec: Record<string, unknown>): string {
  if (spec.nodeSelector) return `hosts ${stableJson(spec.nodeSelector)}`;
  return `${policy.kind === 'CiliumNetworkPolicy' ? `namespace ${policy.metadata.namespace ?? ''}` : 'cluster'} ${stableJson(spec.endpointSelector ?? {})}`;
}

function specEntries(spec: Record<string, unknown>, o: PolicyMapEstimateOptions): number {
  let total = 0;
  for (const key of ['ingress', 'egress', 'ingressDeny', 'egressDeny']) {
    const rules = spec[key];
    if (!Array.isArray(rules)) continue;
    for (const rule of rules as Record<string, unknown>[]) total += ruleIdentities(rule, o) * rulePortEntries(rule);
  }
  return total;
}

function ruleIdentities(rule: Record<string, unknown>, o: PolicyMapEstimateOptions): number {
  const perSelector = o.identitiesPerSelector ?? 1;
  const len = (v: unknown) => (Array.isArray(v) ? v.length : 0);
  let ids = 0;
  for (const dir of ['from', 'to']) {
    ids += len(rule[`${dir}Endpoints`]) * perSelector;
    ids += len(rule[`${dir}Entities`]);
    ids += len(rule[`${dir}CIDR`]);
    const set = rule[`${dir}CIDRSet`];
    if (Array.isArray(set)) {
      for (const c of set as Record<string, unknown>[]) {
        if (typeof c.cidrGroupRef === 'string') ids += o.cidrGroupSizes?.[c.cidrGroupRef] ?? 1;
        else ids += 1 + len(c.except);
      }
    }
  }
  const fqdns = rule.toFQDNs;
  if (Array.isArray(fqdns)) {
    for (const f of fqdns as Record<string, unknown>[]) ids += f.matchPattern !== undefined ? (o.identitiesPerFqdnPattern ?? 16) : (o.identitiesPerFqdnName ?? 1);
  }
  // A rule with only ports applies to every peer: one wildcard-identity entry per port.
  return ids === 0 ? 1 : ids;
}

function rulePortEntries(rule: Record<string, unknown>): number {
  const toPorts = rule.toPorts;
  if (!Array.isArray(toPorts) || toPorts.length === 0) return 1;
  let n = 0;
  for (const tp of toPorts as Record<string, unknown>[]) {
    const ports = Array.isArray(tp.ports) ? (tp.ports as Record<string, unknown>[]) : [];
    for (const p of ports) {
      const start = Number(p.port);
      const end = typeof p.endPort === 'number' && Number.isInteger(start) ? p.endPort : start;
      const blocks = Number.isInteger(start) && end >= start ? portRangeBlocks(start, end) : 1;
      const protocols = p.protocol === undefined || p.protocol === 'ANY' || p.protocol === '' ? 3 : 1;
      n += blocks * protocols;
    }
  }
  return Math.max(n, 1);
}

/** Number of aligned power-of-two blocks (port/mask pairs) that exactly cover [start, end]. */
export function portRangeBlocks(start: number, end: number): number {
  let count = 0;
  let cur = start;
  while (cur <= end) {
    let size = 1;
    // Grow the block while it stays aligned at `cur` and inside the range.
    while (cur % (size * 2) === 0 && cur + size * 2 - 1 <= end) size *= 2;
    cur += size;
    count++;
  }
  return count;
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Differences between two sets of normalised objects (by kind/namespace/name, then deep
 * equality of labels, annotations and spec), one line each; empty when equal.
 */
export function objectSetDifferences(expected: KubeObject[], actual: KubeObject[]): string[] {
  const key = (o: KubeObject) => `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
  const actualByKey = new Map(actual.map((o) => [key(o), o]));
  const expectedKeys = new Set(expected.map(key));
  const out: string[] = [];
  for (const e of expected) {
    const a = actualByKey.get(key(e));
    if (!a) out.push(`missing ${key(e)}`);
    else if (stableJson(comparable(e)) !== stableJson(comparable(a))) out.push(`differs ${key(e)}: expected ${stableJson(comparable(e))}, found ${stableJson(comparable(a))}`);
  }
  for (const a of actual) if (!expectedKeys.has(key(a))) out.push(`unexpected ${key(a)}`);
  return out;
}

function comparable(o: KubeObject): unknown {
  return { apiVersion: o.apiVersion, labels: o.metadata.labels ?? {}, annotations: o.metadata.annotations ?? {}, spec: o.spec ?? null };
}
