/**
 * fos1's firewall model: zones (who a policy protects) and rules (what they may talk to).
 *
 * These are the user-facing types behind the `FirewallZone` and `FirewallRule` CRDs and the
 * policy change workflow. Parsing canonicalises CIDRs and fills defaults, and refuses the
 * combinations Cilium would refuse later (L7 rules on deny, FQDN peers on ingress…), so that
 * a bad rule fails at validation with the field named, before anything is applied.
 * Pure code: bundled into workflows, no Node built-ins.
 */
import { z } from 'zod';
import { formatPath } from './issue-path';
import { cidrSchema, portSchema } from './ip';
import { cidrContains, parseCidr } from './ip';
import { shortHash } from './short-hash';

/** DNS-1123 label: zone, rule and CIDR-group names (they become parts of object names). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Kubernetes label keys (optional DNS-subdomain prefix, then a name of at most 63 characters). */
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** Kubernetes label values: empty or at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends. */
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

const dnsLabel = (what: string) => z.string().regex(DNS_LABEL, `must be a ${what}: a DNS-1123 label (lower-case letters, digits and "-", at most 63)`);

export const labelsSchema = z.record(
  z.string().regex(LABEL_KEY, 'must be a Kubernetes label key'),
  z.string().regex(LABEL_VALUE, 'must be a Kubernetes label value (at most 63 of letters, digits, "-", "_", ".")'),
);

/**
 * A zone: the set of endpoints a rule protects. A pod zone selects pods by label (in the
 * rule's namespace, or cluster-wide); a host zone selects router nodes by node label, which
 * Cilium enforces with its host firewall (clusterwide policy with `nodeSelector`).
 */
export const firewallZoneSchema = z
  .object({
    name: dnsLabel('zone name'),
    /** `pods` (endpointSelector) or `hosts` (nodeSelector, host firewall). */
    kind: z.enum(['pods', 'hosts']).default('pods'),
    /** Labels the zone's pods (or nodes) carry; empty selects all of them. */
    selector: labelsSchema.default({}),
    description: z.string().max(1024).optional(),
  })
  .strict();
export type FirewallZone = z.output<typeof firewallZoneSchema>;

/** Cilium's special peers without an identity of their own. */
export const ENTITIES = ['all', 'world', 'cluster', 'host', 'remote-node', 'kube-apiserver', 'health', 'init', 'ingress', 'unmanaged'] as const;

/**
 * One of several object shapes, chosen by which key is present. Unlike `z.union`, an error
 * inside the chosen shape keeps its field path (`peers[0].cidr: … host bits set`) instead of
 * collapsing into "invalid input" at the union.
 */
function keyedUnion<const B extends Record<string, z.ZodType>>(what: string, branches: B) {
  const keys = Object.keys(branches);
  return z.unknown().transform((value, ctx): z.output<B[keyof B]> => {
    const present = value && typeof value === 'object' ? keys.filter((k) => k in value) : [];
    if (present.length !== 1) {
      ctx.addIssue({ code: 'custom', message: `${what} must have exactly one of ${keys.join(', ')}${present.length > 1 ? ` (found ${present.join(', ')})` : ''}` });
      return z.NEVER;
    }
    const parsed = (branches[present[0] as keyof B] as z.ZodType).safeParse(value);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path as PropertyKey[] });
      return z.NEVER;
    }
    return parsed.data as z.output<B[keyof B]>;
  });
}

const fqdnSchema = keyedUnion('an FQDN selector', {
  matchName: z.object({ matchName: z.string().max(255).regex(/^([-a-zA-Z0-9_]+[.]?)+$/, 'must be a DNS name') }).strict(),
  matchPattern: z.object({ matchPattern: z.string().max(255).regex(/^([-a-zA-Z0-9_*]+[.]?)+$/, 'must be a DNS name pattern ("*" wildcards)') }).strict(),
});

/** Who is on the other side of a rule. Exactly one kind per peer. */
export const peerSchema = keyedUnion('a peer', {
  /** Another zone of the same namespace (its pods) — by name. */
  zone: z.object({ zone: dnsLabel('zone name') }).strict(),
  /** Pods by label, optionally in another namespace. */
  labels: z.object({ labels: labelsSchema, namespace: dnsLabel('namespace').optional() }).strict(),
  /** A prefix, minus some sub-prefixes (`toCIDRSet` / `fromCIDRSet` with `except`). */
  cidr: z.object({ cidr: cidrSchema, except: z.array(cidrSchema).default([]) }).strict(),
  /** A CiliumCIDRGroup by name (fos1 names its own groups `fos1-<namespace>-<name>-<hash>`, see {@link cidrGroupObjectName}). */
  cidrGroup: z.object({ cidrGroup: dnsLabel('CIDR group name') }).strict(),
  entity: z.object({ entity: z.enum(ENTITIES) }).strict(),
  /** DNS names (egress only): Cilium allows the addresses the names resolved to. */
  fqdn: z.object({ fqdn: fqdnSchema }).strict(),
});
export type Peer = z.output<typeof peerSchema>;

export const PROTOCOLS = ['TCP', 'UDP', 'SCTP', 'ANY'] as const;

export const portRuleSchema = z
  .object({
    port: portSchema,
    /** Last port of a range (inclusive). */
    endPort: portSchema.optional(),
    protocol: z.enum(PROTOCOLS).default('TCP'),
  })
  .strict()
  .refine((p) => p.endPort === undefined || p.endPort >= p.port, { message: 'endPort must not be below port', path: ['endPort'] });
export type PortRule = z.output<typeof portRuleSchema>;

/** One allowed HTTP request shape; method and path are POSIX extended regular expressions. */
export const httpRuleSchema = z
  .object({
    method: z.string().min(1).optional(),
    path: z.string().min(1).optional(),
    host: z.string().min(1).optional(),
    /**
     * Headers that must be present; with a value, Cilium (Envoy) compares it exactly — header
     * values are not regular expressions.
     */
    headers: z.array(z.object({ name: z.string().min(1).regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name'), value: z.string().optional() }).strict()).default([]),
  })
  .strict();

export const kafkaRuleSchema = z
  .object({
    role: z.enum(['produce', 'consume']).optional(),
    apiKey: z.string().min(1).optional(),
    topic: z.string().min(1).max(255).regex(/^[a-zA-Z0-9._-]+$/, 'must be a Kafka topic name').optional(),
    clientID: z.string().min(1).optional(),
  })
  .strict()
  .refine((k) => !(k.role && k.apiKey), { message: 'role and apiKey are mutually exclusive (Cilium accepts one or the other)', path: ['apiKey'] });

export const dnsRuleSchema = fqdnSchema;

/** Application-layer constraints on a rule's ports: one protocol per rule. */
export const l7Schema = keyedUnion('l7', {
  http: z.object({ http: z.array(httpRuleSchema).min(1) }).strict(),
  kafka: z.object({ kafka: z.array(kafkaRuleSchema).min(1) }).strict(),
  dns: z.object({ dns: z.array(dnsRuleSchema).min(1) }).strict(),
});

/** A firewall rule: for the endpoints of `zone`, allow or deny traffic with `peers` on `ports`. */
export const firewallRuleSchema = z
  .object({
    name: dnsLabel('rule name'),
    zone: dnsLabel('zone name'),
    direction: z.enum(['ingress', 'egress']),
    action: z.enum(['allow', 'deny']).default('allow'),
    /** Empty: any peer (the rule then only constrains ports / L7). */
    peers: z.array(peerSchema).default([]),
    ports: z.array(portRuleSchema).max(40, 'at most 40 ports per rule').default([]),
    l7: l7Schema.optional(),
    description: z.string().max(1024).optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.l7 && rule.action === 'deny') {
      ctx.addIssue({ code: 'custom', path: ['l7'], message: 'deny rules cannot carry L7 constraints (Cilium enforces deny at L3/L4 only)' });
    }
    if (rule.l7 && rule.ports.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['ports'], message: 'an L7 rule needs at least one port for the proxy to listen on' });
    }
    if (rule.l7 && rule.ports.some((p) => p.endPort !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['ports'], message: 'L7 rules cannot use port ranges' });
    }
    rule.peers.forEach((peer, i) => {
      if ('fqdn' in peer && rule.direction !== 'egress') {
        ctx.addIssue({ code: 'custom', path: ['peers', i, 'fqdn'], message: 'FQDN peers are egress only' });
      }
      if ('fqdn' in peer && rule.action === 'deny') {
        ctx.addIssue({ code: 'custom', path: ['peers', i, 'fqdn'], message: 'FQDN peers cannot be denied (Cilium has no toFQDNs in egressDeny)' });
      }
      if ('cidr' in peer) {
        const outer = parseCidr(peer.cidr);
        peer.except.forEach((ex, j) => {
          if (!cidrContains(outer, parseCidr(ex)) || ex === peer.cidr) {
            ctx.addIssue({ code: 'custom', path: ['peers', i, 'except', j], message: `${ex} is not strictly inside ${peer.cidr}` });
          }
        });
      }
    });
    const fqdnPeers = rule.peers.filter((p) => 'fqdn' in p).length;
    if (fqdnPeers > 0 && fqdnPeers < rule.peers.length) {
      ctx.addIssue({ code: 'custom', path: ['peers'], message: 'FQDN peers cannot be mixed with other peers in one rule (Cilium: toFQDNs cannot occur with other to* selectors)' });
    }
  });
export type FirewallRule = z.output<typeof firewallRuleSchema>;

/** A named list of prefixes, published as a CiliumCIDRGroup. */
export const cidrGroupSchema = z
  .object({ name: dnsLabel('CIDR group name'), cidrs: z.array(cidrSchema).min(1) })
  .strict();
export type CidrGroup = z.output<typeof cidrGroupSchema>;

/** A validation problem: the field (dotted path) and the rule it breaks. */
export interface FirewallIssue {
  field: string;
  message: string;
}

/** Parses a rule, or returns every issue with its field path. */
export function validateFirewallRule(input: unknown): { ok: true; rule: FirewallRule } | { ok: false; issues: FirewallIssue[] } {
  const parsed = firewallRuleSchema.safeParse(input);
  if (parsed.success) return { ok: true, rule: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => ({ field: formatPath(i.path), message: i.message })) };
}

/** Parses a zone, or returns every issue with its field path. */
export function validateFirewallZone(input: unknown): { ok: true; zone: FirewallZone } | { ok: false; issues: FirewallIssue[] } {
  const parsed = firewallZoneSchema.safeParse(input);
  if (parsed.success) return { ok: true, zone: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => ({ field: formatPath(i.path), message: i.message })) };
}

/** Renders issues one per line, `field: rule`, prefixed by what was validated. */
export function formatFirewallIssues(what: string, issues: FirewallIssue[]): string {
  return `invalid ${what}:\n${issues.map((i) => `${i.field || '(root)'}: ${i.message}`).join('\n')}`;
}

/**
 * Name of a cluster-scoped object fos1 makes from a namespaced one (a host-firewall policy, a
 * CIDR group): the namespace, the name and a hash of the pair. The hash keeps names from
 * meeting across namespaces where the dashes would (`a-b`/`c` and `a`/`b-c`), so one
 * namespace's rule can never overwrite, or be pruned as, another's. At most 140 characters.
 */
export function clusterScopedName(namespace: string, name: string): string {
  return `fos1-${namespace}-${name}-${shortHash(`${namespace}/${name}`)}`;
}

/** Name of the CiliumCIDRGroup fos1 publishes for a {@link CidrGroup} of `namespace`. */
export function cidrGroupObjectName(namespace: string, group: string): string {
  return clusterScopedName(namespace, group);
}
