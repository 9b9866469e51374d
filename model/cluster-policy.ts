/**
 * Cluster-scoped policy a change request may carry beside node state (`clusterPolicy`):
 *
 * - fos1's firewall model (zones, rules, CIDR groups), translated into Cilium objects exactly
 *   as the policy change workflow translates them (model/firewall-translate.ts); the
 *   translated set is the whole desired set of its `source` (stale objects of that source are
 *   pruned), so a FirewallRule's policies live under one owner whichever workflow writes them;
 * - native Cilium documents (`CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`,
 *   `CiliumCIDRGroup`) passed through as written: fos1 adds nothing to them (no labels, no
 *   annotations), it only fills a missing namespace of a namespaced kind.
 *
 * Only the envelope is checked here (kind, apiVersion group, names): the documents' content is
 * validated by the cluster's own CRDs (server-side dry-run) before any node is touched, so
 * the rules are Cilium's, not a copy of them. Pure code: bundled into workflows.
 */
import { z } from 'zod';
import { cidrGroupSchema, firewallRuleSchema, firewallZoneSchema } from './firewall';
import { translateCidrGroup, translateRule, TranslateError, type KubeObject, type PolicySource } from './firewall-translate';
import type { ValidationIssue } from './change-request';

/** The kinds a change may carry, in apply order (groups before the policies that reference them). */
export const CLUSTER_POLICY_KINDS = ['CiliumCIDRGroup', 'CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy'] as const;
export type ClusterPolicyKind = (typeof CLUSTER_POLICY_KINDS)[number];

/** Kinds that live in a namespace. */
const NAMESPACED: ReadonlySet<string> = new Set(['CiliumNetworkPolicy']);

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Object names: DNS-1123 subdomains. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const namespaceSchema = z.string().regex(DNS_LABEL, 'must be a namespace name (DNS-1123 label)');

/**
 * One native Cilium document. The envelope is checked; everything else (spec, specs, labels…)
 * is kept as written for the apiserver to judge.
 */
export const ciliumDocumentSchema = z
  // Any Kubernetes object type-checks as input (the request arrives as JSON); the envelope is checked below.
  .custom<KubeObject>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'must be a Kubernetes object')
  .pipe(ciliumEnvelopeSchema())
  .meta({ description: 'A native Cilium document (apiVersion cilium.io/…, kind CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or CiliumCIDRGroup), applied as written; its content is validated by the cluster\'s CRDs.' });

function ciliumEnvelopeSchema() {
  return z
  .object({
    apiVersion: z.string().regex(/^cilium\.io\/v[0-9a-z]+$/, 'must be a cilium.io API version (e.g. "cilium.io/v2")'),
    kind: z.string().refine((k) => (CLUSTER_POLICY_KINDS as readonly string[]).includes(k), { message: `must be one of ${CLUSTER_POLICY_KINDS.join(', ')}` }),
    metadata: z
      .object({
        name: z.string().max(253).regex(DNS_SUBDOMAIN, 'must be a Kubernetes object name (DNS-1123 subdomain)'),
        namespace: namespaceSchema.optional(),
      })
      .loose(),
  })
  .loose()
  .superRefine((doc, ctx) => {
    if (!NAMESPACED.has(doc.kind) && doc.metadata.namespace !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['metadata', 'namespace'], message: `${doc.kind} is cluster-scoped: it has no namespace` });
    }
  });
}

const sourceSchema = z
  .object({
    kind: z.string().regex(/^[A-Za-z][A-Za-z0-9]{0,62}$/, 'must be a Kubernetes kind'),
    namespace: namespaceSchema,
    name: z.string().regex(DNS_LABEL, 'must be a DNS-1123 label'),
  })
  .strict();

/** `clusterPolicy` of a change request. */
export const clusterPolicySchema = z
  .object({
    /** Namespace of the fos1 rules (and their pod zones), and of CiliumNetworkPolicy documents that name none. */
    namespace: namespaceSchema.default('default'),
    /**
     * The fos1 object the translated rules belong to (a FirewallRule, or a set an operator
     * names): the rules below are its whole desired set, and its objects no longer in it are
     * pruned. Required when rules or CIDR groups are given; with empty lists it removes the
     * source's policies.
     */
    source: sourceSchema.optional(),
    zones: z.array(firewallZoneSchema).max(256).default([]),
    rules: z.array(firewallRuleSchema).max(256).default([]),
    cidrGroups: z.array(cidrGroupSchema).max(256).default([]),
    /** Native Cilium documents, applied as written. */
    cilium: z.array(ciliumDocumentSchema).max(256).default([]),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (!p.source && (p.rules.length > 0 || p.cidrGroups.length > 0)) {
      ctx.addIssue({ code: 'custom', path: ['source'], message: 'must name the fos1 object the rules belong to (their policies are pruned within it)' });
    }
    if (!p.source && p.rules.length === 0 && p.cidrGroups.length === 0 && p.cilium.length === 0) {
      ctx.addIssue({ code: 'custom', path: [], message: 'carries nothing: give rules (with their source) or cilium documents' });
    }
  });

export type ClusterPolicy = z.output<typeof clusterPolicySchema>;
export type ClusterPolicyInput = z.input<typeof clusterPolicySchema>;

/** One native document, as it will be applied, and where it came from in the request. */
export interface ClusterDocument {
  /** `clusterPolicy.cilium[3]`: the field that names it in the request. */
  field: string;
  object: KubeObject;
}

/** What a change's cluster policy writes: the translated set of one source, and native documents. */
export interface ClusterPolicyObjects {
  firewall?: { source: PolicySource; desired: KubeObject[] };
  documents: ClusterDocument[];
}

/** `Kind namespace/name` (or `Kind name`). */
export function objectRefKey(obj: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${obj.kind} ${obj.metadata.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata.name}`;
}

/**
 * Translates the fos1 part and fills namespaces of the native part. Issues name the field
 * (`clusterPolicy.rules[2].zone`, `clusterPolicy.cilium[1].metadata.name`) and the rule.
 */
export function clusterPolicyObjects(policy: ClusterPolicy, changeId: string): { ok: true; objects: ClusterPolicyObjects } | { ok: false; issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = [];
  let firewall: ClusterPolicyObjects['firewall'];
  if (policy.source) {
    const source: PolicySource = policy.source;
    const desired: KubeObject[] = policy.cidrGroups.map((g) => translateCidrGroup(g, source, changeId));
    policy.rules.forEach((rule, i) => {
      try {
        desired.push(translateRule({ rule, zones: policy.zones, namespace: policy.namespace, source, changeId }));
      } catch (err) {
        if (!(err instanceof TranslateError)) throw err;
        issues.push({ field: `clusterPolicy.rules[${i}].${err.field}`, message: err.message.slice(err.field.length + 2) });
      }
    });
    firewall = { source, desired };
  }
  const documents: ClusterDocument[] = policy.cilium.map((doc, i) => {
    // A deep copy (no structuredClone in the workflow sandbox): the request stays as written.
    const object = JSON.parse(JSON.stringify(doc)) as KubeObject;
    if (NAMESPACED.has(object.kind)) object.metadata.namespace ??= policy.namespace;
    return { field: `clusterPolicy.cilium[${i}]`, object };
  });
  // One object, one writer: a document must not name an object the translation writes, or another document's.
  const seen = new Map<string, string>((firewall?.desired ?? []).map((o) => [objectRefKey(o), 'the translated rules']));
  for (const d of documents) {
    const key = objectRefKey(d.object);
    const other = seen.get(key);
    if (other) issues.push({ field: `${d.field}.metadata.name`, message: `${key} is also written by ${other}: one object, one writer` });
    else seen.set(key, d.field);
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, objects: { ...(firewall ? { firewall } : {}), documents } };
}

/**
 * A rejection by the apiserver as a validation issue: the request field of the document plus
 * the path the apiserver named inside it, and the document and Cilium's rule in the message.
 */
export function rejectionIssue(document: { field: string; object: string }, rejection: { path?: string; rule: string }): ValidationIssue {
  const path = rejection.path ? `.${rejection.path.replace(/^\./, '')}` : '';
  return { field: `${document.field}${path}`, message: `${document.object} rejected by the cluster: ${rejection.rule}` };
}
