/**
 * Cilium policy activities: read, check, apply and restore the Cilium objects fos1 made from
 * one fos1 object (its "source"), through a real Kubernetes API.
 *
 * - apply is server-side apply under a configurable field manager, then a prune of the objects
 *   fos1 made from the same source that are no longer desired (only objects carrying fos1's
 *   ownership labels for that source are ever deleted);
 * - restore is the same apply, given the snapshot, with `force` so fos1 takes back any field
 *   the failed change moved; the workflow then reads back and compares;
 * - before anything is applied, the policy-map entries every endpoint would need are
 *   estimated and a change that cannot fit Cilium's per-endpoint map is refused.
 *
 * Errors become ApplicationFailures: 409 is `PolicyConflict`, other 4xx `PolicyRejected`
 * (both non-retryable: the same request will be refused again), 429/5xx/unreachable
 * `KubeUnavailable` (retryable); see activities/failures.ts.
 */
import type { Logger } from 'pino';
import {
  CILIUM_API_VERSION,
  CILIUM_CIDR_GROUP_API_VERSION,
  DEFAULT_POLICY_MAP_MAX,
  estimatePolicyMapEntries,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  ownershipSelector,
  type KubeObject,
  type PolicyMapEstimate,
  type PolicyMapEstimateOptions,
  type PolicySource,
} from '../model/firewall-translate';
import { failure, FailureType } from '../model/failures';
import type { ApplyOptions, ObjectRef, StoredObject } from '../k8s/client';
import { ErrorDomains, translateErrors } from './failures';

/** The kinds fos1 writes, in apply order (groups before the policies that reference them). */
export const CILIUM_KINDS: readonly { apiVersion: string; kind: string; namespaced: boolean }[] = [
  { apiVersion: CILIUM_CIDR_GROUP_API_VERSION, kind: 'CiliumCIDRGroup', namespaced: false },
  { apiVersion: CILIUM_API_VERSION, kind: 'CiliumNetworkPolicy', namespaced: true },
  { apiVersion: CILIUM_API_VERSION, kind: 'CiliumClusterwideNetworkPolicy', namespaced: false },
];

/** The part of {@link KubeClient} the activities use (a fake implements it in unit tests). */
export interface PolicyKubeClient {
  apply(obj: KubeObject, options: ApplyOptions): Promise<StoredObject>;
  list(apiVersion: string, kind: string, options?: { namespace?: string; labelSelector?: string }): Promise<{ items: StoredObject[] }>;
  delete(ref: ObjectRef, options?: { dryRun?: boolean }): Promise<boolean>;
}

/** What the Cilium activities need; injected by the worker. */
export interface CiliumActivityDeps {
  kube: PolicyKubeClient;
  /** Server-side apply field manager (default `fos1`). */
  fieldManager?: string;
  /** Per-endpoint policy map size to check against (Cilium's `bpf-policy-map-max`, default 16384). */
  policyMapMax?: number;
  estimate?: PolicyMapEstimateOptions;
  logger: Logger;
}

/** The objects fos1 made from one source, normalised (no server-managed fields). */
export interface PolicySnapshot {
  source: PolicySource;
  objects: KubeObject[];
}

/** Result of {@link createCiliumActivities}'s `applyPolicies`. */
export interface ApplyResult {
  /** `Kind ns/name` of each object applied. */
  applied: string[];
  /** `Kind ns/name` of each object pruned. */
  pruned: string[];
  /** The objects as the server stored them, normalised: what verification compares with. */
  stored: KubeObject[];
}

/** Builds the Cilium policy activities around an injected Kubernetes client. */
export function createCiliumActivities(deps: CiliumActivityDeps) {
  const fieldManager = deps.fieldManager ?? 'fos1';
  const { kube, logger } = deps;

  async function readOwned(labelSelector: string): Promise<KubeObject[]> {
    const out: KubeObject[] = [];
    for (const k of CILIUM_KINDS) {
      const { items } = await kube.list(k.apiVersion, k.kind, { labelSelector });
      out.push(...items.map(normaliseObject));
    }
    return sortObjects(out);
  }

  async function converge(source: PolicySource, desired: KubeObject[], options: { dryRun: boolean; force: boolean }): Promise<ApplyResult> {
    const sorted = sortForApply(desired);
    sorted.forEach((obj) => assertOwnedBy(obj, source));
    // Same field manager means no apply conflict: without this check a second source naming the
    // same object would silently take it over, and the first source's prune could never find it.
    const taken = new Map((await readOwned(`${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`)).filter((o) => !sameSource(o, source)).map((o) => [objectKey(o), o]));
    for (const obj of sorted) {
      const other = taken.get(objectKey(obj));
      if (other) {
        const l = other.metadata.labels ?? {};
        throw failure(FailureType.PolicyConflict, `${objectKey(obj)} already belongs to ${l['fos1.io/source-kind']} ${l['fos1.io/source-namespace']}/${l['fos1.io/source-name']}; rename one of them`);
      }
    }
    const stored: KubeObject[] = [];
    for (const obj of sorted) {
      stored.push(normaliseObject(await kube.apply(obj, { fieldManager, force: options.force, dryRun: options.dryRun })));
    }
    const wanted = new Set(sorted.map(objectKey));
    const current = await readOwned(ownershipSelector(source));
    const pruned: string[] = [];
    // Policies first, groups last: never leave a policy pointing at a deleted group.
    for (const obj of [...current].reverse()) {
      if (wanted.has(objectKey(obj))) continue;
      await kube.delete(toRef(obj), { dryRun: options.dryRun });
      pruned.push(objectKey(obj));
    }
    return { applied: sorted.map(objectKey), pruned, stored };
  }

  return {
    /** The objects fos1 made from `source`, as they are now (the snapshot, and the read-back). */
    async readPolicies(input: { source: PolicySource }): Promise<PolicySnapshot> {
      return translateErrors(ErrorDomains.cilium, async () => ({ source: input.source, objects: await readOwned(ownershipSelector(input.source)) }));
    },

    /**
     * Estimates policy-map entries per endpoint selector for `desired` together with every
     * other fos1-owned policy in the cluster, and refuses the change if one would exceed the map.
     */
    async checkPolicyMap(input: { source: PolicySource; desired: KubeObject[] }): Promise<PolicyMapEstimate[]> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const others = (await readOwned(`${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`)).filter((o) => !sameSource(o, input.source));
        const groupSizes: Record<string, number> = { ...deps.estimate?.cidrGroupSizes };
        for (const o of [...others, ...input.desired]) {
          if (o.kind === 'CiliumCIDRGroup') groupSizes[o.metadata.name] = ((o.spec as { externalCIDRs?: string[] }).externalCIDRs ?? []).length;
        }
        const estimates = estimatePolicyMapEntries([...others, ...input.desired].filter((o) => o.kind !== 'CiliumCIDRGroup'), { ...deps.estimate, cidrGroupSizes: groupSizes });
        const max = deps.policyMapMax ?? DEFAULT_POLICY_MAP_MAX;
        const over = estimates.filter((e) => e.entries > max);
        if (over.length > 0) {
          const message = over
            .map((e) => `endpoints selected by ${e.subject} would need about ${e.entries} policy-map entries (identities × ports × protocols), more than the map holds (${max}); policies: ${e.policies.join(', ')}`)
            .join('\n');
          throw failure(FailureType.PolicyMapOverflow, message, [over]);
        }
        return estimates;
      });
    },

    /**
     * Server-side applies `desired` (every object must carry `source`'s ownership labels) and
     * prunes fos1's objects from the same source that are not in it. With `dryRun`, the
     * apiserver validates and admits everything (schema, CEL, webhooks) and persists nothing.
     */
    async applyPolicies(input: { source: PolicySource; desired: KubeObject[]; dryRun?: boolean }): Promise<ApplyResult> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const result = await converge(input.source, input.desired, { dryRun: input.dryRun ?? false, force: false });
        logger.info({ applied: result.applied, pruned: result.pruned, dryRun: input.dryRun ?? false }, 'cilium policies converged');
        return result;
      });
    },

    /** Brings `snapshot.source`'s objects back to the snapshot (force-applied, extras pruned). */
    async restorePolicies(input: { snapshot: PolicySnapshot }): Promise<ApplyResult> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const result = await converge(input.snapshot.source, input.snapshot.objects, { dryRun: false, force: true });
        logger.info({ restored: result.applied, pruned: result.pruned }, 'cilium policies restored');
        return result;
      });
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type CiliumActivities = ReturnType<typeof createCiliumActivities>;

/**
 * The fields of an object that are the user's intent: apiVersion, kind, name, namespace,
 * labels, annotations and spec. Server-managed fields (uid, resourceVersion, generation,
 * managedFields, timestamps, status) are dropped, so a snapshot compares equal to a read-back.
 */
export function normaliseObject(obj: KubeObject | StoredObject): KubeObject {
  const metadata: KubeObject['metadata'] = { name: obj.metadata.name };
  if (obj.metadata.namespace) metadata.namespace = obj.metadata.namespace;
  if (obj.metadata.labels && Object.keys(obj.metadata.labels).length > 0) metadata.labels = { ...obj.metadata.labels };
  const annotations = Object.fromEntries(Object.entries(obj.metadata.annotations ?? {}).filter(([k]) => k !== 'kubectl.kubernetes.io/last-applied-configuration'));
  if (Object.keys(annotations).length > 0) metadata.annotations = annotations;
  const out: KubeObject = { apiVersion: obj.apiVersion, kind: obj.kind, metadata };
  if (obj.spec !== undefined) out.spec = obj.spec;
  return out;
}

/** `Kind namespace/name` (or `Kind name`). */
export function objectKey(obj: KubeObject): string {
  return `${obj.kind} ${obj.metadata.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata.name}`;
}

function toRef(obj: KubeObject): ObjectRef {
  return { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, namespace: obj.metadata.namespace };
}

function sortObjects(objects: KubeObject[]): KubeObject[] {
  return [...objects].sort((a, b) => objectKey(a).localeCompare(objectKey(b)));
}

function sortForApply(objects: KubeObject[]): KubeObject[] {
  const rank = (o: KubeObject) => CILIUM_KINDS.findIndex((k) => k.kind === o.kind);
  return [...objects].sort((a, b) => rank(a) - rank(b) || objectKey(a).localeCompare(objectKey(b)));
}

function sameSource(obj: KubeObject, source: PolicySource): boolean {
  const wanted = ownershipSelector(source).split(',');
  return wanted.every((kv) => {
    const [k, v] = kv.split('=') as [string, string];
    return obj.metadata.labels?.[k] === v;
  });
}

function assertOwnedBy(obj: KubeObject, source: PolicySource): void {
  if (!CILIUM_KINDS.some((k) => k.kind === obj.kind && k.apiVersion === obj.apiVersion)) {
    throw failure(FailureType.PolicyRejected, `${objectKey(obj)}: fos1 only writes ${CILIUM_KINDS.map((k) => `${k.apiVersion} ${k.kind}`).join(', ')}`);
  }
  if (!sameSource(obj, source)) {
    // Without the labels the prune could never find it again: refuse rather than leak it.
    throw failure(FailureType.PolicyRejected, `${objectKey(obj)} does not carry fos1's ownership labels for ${source.kind} ${source.namespace}/${source.name}`);
  }
}
