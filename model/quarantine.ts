/**
 * Quarantine of an endpoint, the pure parts: the label a decision puts on a Pod, the one
 * fos1-owned CiliumClusterwideNetworkPolicy that isolates every endpoint carrying it, and the
 * operator's exceptions to that isolation.
 *
 * Why deny rules: Cilium gives deny precedence over allow, so `ingressDeny`/`egressDeny` keep a
 * quarantined pod isolated whatever allow policies other people wrote for it. An exception is
 * therefore not an allow rule on top of the deny (it would lose) but a hole cut into the deny:
 * the deny's peer selectors match every endpoint *except* the exception's peers, and an allow
 * rule on the exception's ports lets that traffic through the default-deny the policy puts the
 * pod in. With no exceptions (the default) the deny is simply `entities: [all]` both ways.
 *
 * Pure code: bundled into workflows (no Node built-ins).
 */
import { z } from 'zod';
import { formatPath } from './issue-path';
import { CHANGE_ID_ANNOTATION, CILIUM_API_VERSION, objectSetDifferences, ownershipLabels, POD_NAMESPACE_LABEL, type KubeObject, type PolicySource } from './firewall-translate';
import { canonicalIp, parseCidr } from './ip';
import { shortHash } from './short-hash';

/** The default quarantine label (rules/rule-set.ts's default too). */
export const DEFAULT_QUARANTINE_LABEL = 'fos1.io/quarantine=true';

/** `kind` of the ownership source of quarantine policies (one source per label). */
export const QUARANTINE_SOURCE_KIND = 'Quarantine';
/** Quarantine policies are cluster-wide; the ownership label needs a namespace value all the same. */
export const QUARANTINE_SOURCE_NAMESPACE = 'cluster';

/** A bad quarantine label or configuration: names the field and the rule it broke. */
export class QuarantineInputError extends Error {
  constructor(
    readonly field: string,
    readonly rule: string,
  ) {
    super(`${field}: ${rule}`);
    this.name = 'QuarantineInputError';
  }
}

/** A parsed `key=value` Pod label. */
export interface QuarantineLabel {
  key: string;
  value: string;
}

const DNS_SUBDOMAIN_PART = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** Prefixes Kubernetes reserves for its own components (and fos1 must not impersonate). */
const RESERVED_PREFIXES = ['kubernetes.io', 'k8s.io'];

/** Checks a label key by Kubernetes' rules; returns the broken rule or null. */
export function labelKeyProblem(key: string): string | null {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined) {
    if (prefix.length === 0 || prefix.length > 253) return 'the prefix before "/" must be a DNS subdomain of 1–253 characters';
    if (!prefix.split('.').every((p) => DNS_SUBDOMAIN_PART.test(p))) return `the prefix "${prefix}" must be a DNS subdomain (lower-case letters, digits, "-", ".")`;
    if (RESERVED_PREFIXES.some((r) => prefix === r || prefix.endsWith(`.${r}`))) return `the prefix "${prefix}" is reserved for Kubernetes components`;
  }
  if (name.length === 0 || name.length > 63) return 'the name part must be 1–63 characters';
  if (!LABEL_NAME.test(name)) return 'the name part must be letters, digits, "-", "_", "." and begin and end with a letter or digit';
  return null;
}

/** Checks a label value by Kubernetes' rules; returns the broken rule or null. */
export function labelValueProblem(value: string): string | null {
  if (value.length > 63) return 'the value must be at most 63 characters';
  if (value.length > 0 && !LABEL_NAME.test(value)) return 'the value must be empty or letters, digits, "-", "_", "." beginning and ending with a letter or digit';
  return null;
}

/** Parses `key=value`; throws {@link QuarantineInputError} naming `field` and the rule. */
export function parseQuarantineLabel(text: unknown, field = 'quarantineLabel'): QuarantineLabel {
  if (typeof text !== 'string') throw new QuarantineInputError(field, 'must be a string "key=value"');
  const eq = text.indexOf('=');
  if (eq < 0) throw new QuarantineInputError(field, 'must be a Kubernetes label "key=value" (no "=" found)');
  const key = text.slice(0, eq);
  const value = text.slice(eq + 1);
  const keyProblem = labelKeyProblem(key);
  if (keyProblem) throw new QuarantineInputError(`${field}.key`, `"${key}" is not a Kubernetes label key: ${keyProblem}`);
  const valueProblem = labelValueProblem(value);
  if (valueProblem) throw new QuarantineInputError(`${field}.value`, `"${value}" is not a Kubernetes label value: ${valueProblem}`);
  return { key, value };
}

/** `key=value`. */
export function formatQuarantineLabel(label: QuarantineLabel): string {
  return `${label.key}=${label.value}`;
}

/**
 * The single address a quarantine target names: a /32 or /128 prefix (or a bare address).
 * A wider prefix is many endpoints, which quarantine does not do (block it instead).
 */
export function quarantineAddress(target: string, field = 'target'): string {
  let cidr;
  try {
    cidr = parseCidr(target);
  } catch (err) {
    throw new QuarantineInputError(field, `"${target}" is not an IP prefix: ${err instanceof Error ? err.message : String(err)}`);
  }
  const width = cidr.family === 4 ? 32 : 128;
  if (cidr.prefixLength !== width) throw new QuarantineInputError(field, `quarantine isolates one endpoint: the target must be a /${width}, not ${target}`);
  return canonicalIp(target.split('/')[0] as string);
}

// ─── configuration ──────────────────────────────────────────────────────────────────

const labelValueSchema = z.string().superRefine((v, ctx) => {
  const p = labelValueProblem(v);
  if (p) ctx.addIssue({ code: 'custom', message: `must be a Kubernetes label value: ${p}` });
});

/** One peer a quarantined endpoint may still talk to (egress) or hear from (ingress). */
export const quarantineExceptionSchema = z
  .object({
    /** What it is for (appears in the policy's description). */
    name: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS-1123 label'),
    direction: z.enum(['ingress', 'egress']),
    /** Namespace of the peer pods. */
    namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a namespace name'),
    /** Labels the peer pods carry (at least one, at most two: each is a term of the deny's carve-out). */
    labels: z
      .record(z.string(), labelValueSchema)
      .superRefine((l, ctx) => {
        // Keys checked here rather than by a key schema: zod reports a bad record key only as
        // "Invalid key in record", without the rule.
        for (const k of Object.keys(l)) {
          const p = labelKeyProblem(k);
          if (p) ctx.addIssue({ code: 'custom', path: [k], message: `must be a Kubernetes label key: ${p}` });
        }
      })
      .refine((l) => Object.keys(l).length >= 1 && Object.keys(l).length <= 2, 'must name 1 or 2 labels'),
    /** Ports allowed to/from the peer; empty allows none (the peer is only exempt from the deny). */
    ports: z
      .array(z.object({ port: z.number().int().min(1).max(65535), protocol: z.enum(['TCP', 'UDP', 'SCTP', 'ANY']).default('TCP') }).strict())
      .min(1, 'an exception must allow at least one port')
      .max(8),
  })
  .strict();
export type QuarantineException = z.output<typeof quarantineExceptionSchema>;

/**
 * Quarantine configuration of the cluster worker. Exceptions per direction are capped at 3:
 * the carve-out is a product of the exceptions' terms (see {@link renderQuarantinePolicy}).
 */
export const quarantineConfigSchema = z
  .object({
    exceptions: z.array(quarantineExceptionSchema).max(6).default([]),
    /**
     * System namespaces ({@link SYSTEM_NAMESPACES}) whose pods quarantine may isolate all the
     * same; by default none: isolating CoreDNS or fos1 itself takes the cluster (or the
     * enforcement that would lift it) down with the pod.
     */
    allowSystemNamespaces: z.array(z.enum(['kube-system', 'kube-public', 'kube-node-lease', 'fos1-system'])).max(4).default([]),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const direction of ['ingress', 'egress'] as const) {
      if (c.exceptions.filter((e) => e.direction === direction).length > 3) {
        ctx.addIssue({ code: 'custom', path: ['exceptions'], message: `at most 3 ${direction} exceptions (each one multiplies the size of the deny rule)` });
      }
    }
  });
export type QuarantineConfig = z.output<typeof quarantineConfigSchema>;
export type QuarantineConfigInput = z.input<typeof quarantineConfigSchema>;

/** Namespaces whose pods automated quarantine refuses unless `allowSystemNamespaces` names them: Kubernetes' own and fos1's. */
export const SYSTEM_NAMESPACES = ['kube-system', 'kube-public', 'kube-node-lease', 'fos1-system'] as const;

/** Whether quarantine may isolate a pod in `namespace` under `config`. */
export function namespaceQuarantinable(namespace: string, config: QuarantineConfig): boolean {
  return !(SYSTEM_NAMESPACES as readonly string[]).includes(namespace) || (config.allowSystemNamespaces as readonly string[]).includes(namespace);
}

/** The exception most clusters want: DNS to kube-dns (CoreDNS keeps the `k8s-app: kube-dns` label). */
export const KUBE_DNS_EXCEPTION: z.input<typeof quarantineExceptionSchema> = {
  name: 'kube-dns',
  direction: 'egress',
  namespace: 'kube-system',
  labels: { 'k8s-app': 'kube-dns' },
  ports: [
    { port: 53, protocol: 'UDP' },
    { port: 53, protocol: 'TCP' },
  ],
};

/** Parses the configuration; throws {@link QuarantineInputError} naming the first bad field. */
export function parseQuarantineConfig(raw: unknown): QuarantineConfig {
  const parsed = quarantineConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new QuarantineInputError(formatPath(issue.path) || '(config)', issue.message);
  }
  return parsed.data;
}

// ─── the policy ─────────────────────────────────────────────────────────────────────

/** Name of the policy (and of its ownership source) for a label: readable, unique, ≤ 63. */
export function quarantinePolicyName(label: QuarantineLabel): string {
  const text = formatQuarantineLabel(label);
  const readable = text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 36)
    .replace(/-+$/, '');
  return `fos1-quarantine-${readable}-${shortHash(text)}`;
}

/** The ownership source of a label's policy: fos1 only ever prunes or restores inside it. */
export function quarantineSource(label: QuarantineLabel): PolicySource {
  return { kind: QUARANTINE_SOURCE_KIND, namespace: QUARANTINE_SOURCE_NAMESPACE, name: quarantinePolicyName(label) };
}

/** Entities that are not pods: denied outright even when exceptions cut holes for some pods. */
const NON_POD_ENTITIES = ['world', 'host', 'remote-node', 'kube-apiserver', 'ingress', 'init', 'health', 'unmanaged'] as const;

type Selector = { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: 'NotIn'; values: string[] }[] };

/**
 * The CiliumClusterwideNetworkPolicy isolating every endpoint labelled `label`.
 *
 * Per direction: with no exceptions, deny `entities: [all]`. With exceptions E1…En, deny the
 * non-pod entities, and deny every pod that is none of the exceptions: NOT(E1 ∨ … ∨ En) is
 * ⋀ᵢ ⋁ⱼ (term j of Eᵢ does not hold); peer selectors in one rule are OR-ed and the
 * expressions in one selector AND-ed, so each selector picks one negated term from each
 * exception (a product, hence the caps on exceptions and their labels). An allow rule per
 * exception then lets its ports through.
 */
export function renderQuarantinePolicy(label: QuarantineLabel, config: QuarantineConfig, changeId?: string): KubeObject {
  const spec: Record<string, unknown> = {
    description: `fos1 quarantine: isolates every endpoint labelled ${formatQuarantineLabel(label)}${
      config.exceptions.length ? `, except ${config.exceptions.map((e) => `${e.direction} ${e.name}`).join(', ')}` : ''
    }`,
    endpointSelector: { matchLabels: { [label.key]: label.value } },
  };
  for (const direction of ['ingress', 'egress'] as const) {
    const peerKey = direction === 'ingress' ? 'fromEndpoints' : 'toEndpoints';
    const entityKey = direction === 'ingress' ? 'fromEntities' : 'toEntities';
    const exceptions = config.exceptions.filter((e) => e.direction === direction);
    if (exceptions.length === 0) {
      spec[`${direction}Deny`] = [{ [entityKey]: ['all'] }];
      continue;
    }
    const termsOf = (e: QuarantineException) => [
      { key: POD_NAMESPACE_LABEL, value: e.namespace },
      ...Object.entries(e.labels)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => ({ key: `k8s:${k}`, value: v })),
    ];
    let selectors: { key: string; value: string }[][] = [[]];
    for (const e of exceptions) selectors = selectors.flatMap((s) => termsOf(e).map((t) => [...s, t]));
    const notAnyException: Selector[] = selectors.map((terms) => ({ matchExpressions: terms.map((t) => ({ key: t.key, operator: 'NotIn', values: [t.value] })) }));
    spec[`${direction}Deny`] = [{ [entityKey]: [...NON_POD_ENTITIES] }, { [peerKey]: notAnyException }];
    spec[direction] = exceptions.map((e) => ({
      [peerKey]: [{ matchLabels: { [POD_NAMESPACE_LABEL]: e.namespace, ...Object.fromEntries(Object.entries(e.labels).map(([k, v]) => [`k8s:${k}`, v])) } }],
      toPorts: [{ ports: e.ports.map((p) => ({ port: String(p.port), protocol: p.protocol })) }],
    }));
  }
  const metadata: KubeObject['metadata'] = { name: quarantinePolicyName(label), labels: ownershipLabels(quarantineSource(label)) };
  if (changeId) metadata.annotations = { [CHANGE_ID_ANNOTATION]: changeId };
  return { apiVersion: CILIUM_API_VERSION, kind: 'CiliumClusterwideNetworkPolicy', metadata, spec };
}

/**
 * Whether `current` is already the policy `desired` describes: labels and spec (key order
 * aside). The change-id annotation differs per run and does not count.
 */
export function samePolicy(desired: KubeObject, current: KubeObject | undefined): boolean {
  if (!current) return false;
  const strip = (o: KubeObject): KubeObject => ({ ...o, metadata: { name: o.metadata.name, ...(o.metadata.labels ? { labels: o.metadata.labels } : {}) } });
  return objectSetDifferences([strip(desired)], [strip(current)]).length === 0;
}

/** Whether a policy's `endpointSelector.matchLabels` selects an endpoint with `labels`. */
export function policySelects(policy: KubeObject, labels: Record<string, string>): boolean {
  const selector = (policy.spec as { endpointSelector?: { matchLabels?: Record<string, string> } } | undefined)?.endpointSelector?.matchLabels;
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels[k.replace(/^(k8s|any):/, '')] === v);
}
