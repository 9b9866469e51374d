/**
 * The change workflow's cluster policy activities (workflows/cluster-policy-step.ts): validate,
 * snapshot, apply and restore the Cilium objects one change writes, through a real Kubernetes API.
 *
 * - `prepareClusterPolicy` runs before any node is touched: the policy-map estimate (the same
 *   check as the policy change workflow), a server-side dry-run of every object against the
 *   CRDs the cluster really serves — every document judged, not only up to the first bad one —
 *   and a snapshot of every object the change may write or prune (absent ones recorded as absent);
 * - `applyClusterPolicy` server-side applies with fos1's field manager (the translated set
 *   through the Cilium activities, with their prune; native documents as written);
 * - `restoreClusterPolicy` brings each snapshotted object back exactly: an object that did not
 *   exist is deleted, one that did gets its previous labels, annotations and content back
 *   (a replace on the current resourceVersion, so no field of the failed change survives in a
 *   list merge), one that was pruned is created again. The workflow reads back and compares.
 *
 * Rejections carry the document (`Kind namespace/name`), the field the apiserver named and its
 * message (Cilium's rule, from the CRD's schema or CEL). Errors that may heal (429, 5xx other
 * than a schema refusal, unreachable) are `KubeUnavailable` and retried.
 */
import { KubeApiError, type ObjectRef, type StoredObject } from '../k8s/client';
import { CLUSTER_POLICY_KINDS, objectRefKey, type ClusterPolicyObjects } from '../model/cluster-policy';
import { failure, FailureType } from '../model/failures';
import type { KubeObject, PolicyMapEstimate, PolicySource } from '../model/firewall-translate';
import { createCiliumActivities, type CiliumActivityDeps, type PolicyKubeClient } from './cilium-policy';
import { ErrorDomains, translateErrors } from './failures';

/** The Kubernetes client calls these activities make (a fake implements it in workflow tests' recordings). */
export interface ClusterPolicyKubeClient extends PolicyKubeClient {
  get(ref: ObjectRef): Promise<StoredObject | undefined>;
  create(obj: KubeObject, options?: { fieldManager?: string }): Promise<StoredObject>;
  replace(obj: StoredObject, options?: { fieldManager?: string }): Promise<StoredObject>;
}

/** What the cluster policy activities need: the Cilium activities' dependencies, with a client that can also get, create and replace. */
export interface ClusterPolicyActivityDeps extends CiliumActivityDeps {
  kube: ClusterPolicyKubeClient;
}

/** One object the change may write or prune, as it was before. */
export interface ClusterSnapshotEntry {
  ref: ObjectRef;
  /** `Kind namespace/name`. */
  key: string;
  /** Normalised (intent fields only); null when it did not exist. */
  before: KubeObject | null;
}

/** Every object the change may write or prune, before anything was written. */
export interface ClusterSnapshot {
  entries: ClusterSnapshotEntry[];
}

/** A document the cluster refused, with the apiserver's words. */
export interface ClusterRejection {
  /** The request field that holds it (`clusterPolicy.cilium[3]`, or `clusterPolicy.rules` for the translated set). */
  field: string;
  /** `Kind namespace/name`. */
  object: string;
  /** Path inside the document the apiserver named (`spec.egress[0].auth`), when it named one. */
  path?: string;
  /** The apiserver's message: Cilium's rule, from its CRD. */
  rule: string;
}

/** Result of `prepareClusterPolicy`. */
export interface ClusterPlan {
  /** One line per object: `+` created, `~` changed, `=` unchanged, `-` pruned. */
  plan: string[];
  rejected: ClusterRejection[];
  snapshot: ClusterSnapshot;
  estimates: PolicyMapEstimate[];
}

/** Builds the cluster policy activities around an injected Kubernetes client. */
export function createClusterPolicyActivities(deps: ClusterPolicyActivityDeps) {
  const fieldManager = deps.fieldManager ?? 'fos1';
  const { kube, logger } = deps;
  const cilium = createCiliumActivities(deps);

  async function read(ref: ObjectRef): Promise<KubeObject | null> {
    const stored = await kube.get(ref);
    return stored ? normaliseDocument(stored) : null;
  }

  /** Every object the change writes, and those of the firewall source it may prune. */
  async function touchedRefs(objects: ClusterPolicyObjects): Promise<ObjectRef[]> {
    const all = [...(objects.firewall?.desired ?? []), ...objects.documents.map((d) => d.object)];
    if (objects.firewall) all.push(...(await cilium.readPolicies({ source: objects.firewall.source })).objects);
    const byKey = new Map(all.map((o) => [objectRefKey(o), toRef(o)]));
    return sortRefs([...byKey.values()]);
  }

  return {
    /**
     * Validates everything against the cluster before any node is touched, and snapshots what
     * the change may change. A policy-map overflow fails (PolicyMapOverflow); rejections are
     * returned, every one of them, for the workflow to refuse the change with.
     */
    async prepareClusterPolicy(input: { changeId: string; objects: ClusterPolicyObjects }): Promise<ClusterPlan> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const { objects } = input;
        const source: PolicySource = objects.firewall?.source ?? { kind: 'ChangeRequest', namespace: 'default', name: input.changeId };
        const estimates = await cilium.checkPolicyMap({ source, desired: [...(objects.firewall?.desired ?? []), ...objects.documents.map((d) => d.object)] });
        const entries: ClusterSnapshotEntry[] = [];
        for (const ref of await touchedRefs(objects)) entries.push({ ref, key: objectRefKey({ kind: ref.kind, metadata: ref }), before: await read(ref) });
        const before = new Map(entries.map((e) => [e.key, e.before]));
        const rejected: ClusterRejection[] = [];
        const plan: string[] = [];
        const line = (key: string, after: KubeObject) => {
          const was = before.get(key) ?? null;
          plan.push(was === null ? `+ ${key}` : sameObject(was, after) ? `= ${key} (unchanged)` : `~ ${key}`);
        };
        if (objects.firewall) {
          try {
            const planned = await cilium.applyPolicies({ source: objects.firewall.source, desired: objects.firewall.desired, dryRun: true });
            for (const obj of planned.stored) line(objectRefKey(obj), normaliseDocument(obj));
            for (const key of planned.pruned) plan.push(`- ${key} (pruned: no longer in ${source.kind} ${source.namespace}/${source.name})`);
          } catch (err) {
            const type = (err as { type?: string }).type;
            if (type !== FailureType.PolicyRejected && type !== FailureType.PolicyConflict) throw err;
            rejected.push({ field: 'clusterPolicy.rules', object: `the translated rules of ${source.kind} ${source.namespace}/${source.name}`, rule: (err as Error).message });
          }
        }
        for (const doc of sortDocuments(objects.documents)) {
          const key = objectRefKey(doc.object);
          try {
            line(key, normaliseDocument(await kube.apply(doc.object, { fieldManager, dryRun: true })));
          } catch (err) {
            const refusal = refusalOf(err);
            if (!refusal) throw err;
            rejected.push(...refusal.map((r) => ({ field: doc.field, object: key, ...r })));
          }
        }
        logger.info({ changeId: input.changeId, plan: plan.length, rejected: rejected.length }, 'cluster policy prepared');
        return { plan, rejected, snapshot: { entries }, estimates };
      });
    },

    /** Applies the change's cluster policy (groups first, then policies); returns the objects as stored. */
    async applyClusterPolicy(input: { objects: ClusterPolicyObjects }): Promise<{ stored: KubeObject[] }> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const { objects } = input;
        const stored: KubeObject[] = [];
        const docs = sortDocuments(objects.documents);
        const groups = docs.filter((d) => d.object.kind === 'CiliumCIDRGroup');
        for (const d of groups) stored.push(normaliseDocument(await kube.apply(d.object, { fieldManager })));
        if (objects.firewall) stored.push(...(await cilium.applyPolicies({ source: objects.firewall.source, desired: objects.firewall.desired })).stored);
        for (const d of docs.filter((x) => x.object.kind !== 'CiliumCIDRGroup')) stored.push(normaliseDocument(await kube.apply(d.object, { fieldManager })));
        logger.info({ applied: stored.map(objectRefKey) }, 'cluster policy applied');
        return { stored };
      });
    },

    /** Brings every snapshotted object back to how it was (see the module comment); idempotent. */
    async restoreClusterPolicy(input: { snapshot: ClusterSnapshot }): Promise<{ restored: string[]; deleted: string[] }> {
      return translateErrors(ErrorDomains.cilium, async () => {
        const restored: string[] = [];
        const deleted: string[] = [];
        // Groups before the policies that reference them come back; policies before groups go.
        for (const e of input.snapshot.entries) {
          if (e.before === null) continue;
          await restoreOne(e.ref, e.before);
          restored.push(e.key);
        }
        for (const e of [...input.snapshot.entries].reverse()) {
          if (e.before !== null) continue;
          if (await kube.delete(e.ref)) deleted.push(e.key);
        }
        logger.info({ restored, deleted }, 'cluster policy restored');
        return { restored, deleted };
      });
    },

    /** Reads the given objects back (null: absent), normalised like the snapshot. */
    async readClusterPolicy(input: { refs: ObjectRef[] }): Promise<(KubeObject | null)[]> {
      return translateErrors(ErrorDomains.cilium, async () => Promise.all(input.refs.map(read)));
    },
  };

  async function restoreOne(ref: ObjectRef, before: KubeObject): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const current = await kube.get(ref);
      try {
        if (!current) {
          await kube.create(before, { fieldManager });
        } else {
          // The whole intent of the previous object, on the current resourceVersion.
          await kube.replace({ ...before, metadata: { ...before.metadata, resourceVersion: current.metadata.resourceVersion } } as StoredObject, { fieldManager });
        }
        return;
      } catch (err) {
        // Someone wrote it between the read and the write: read again (a few times).
        if (err instanceof KubeApiError && err.status === 409 && attempt < 4) continue;
        throw err;
      }
    }
  }
}

/** The activity interface workflows proxy (`import type` only). */
export type ClusterPolicyActivities = ReturnType<typeof createClusterPolicyActivities>;

/** Stand-ins for a cluster worker without Kubernetes: every call fails, non-retryable, saying why. */
export function unavailableClusterPolicyActivities(reason: string): ClusterPolicyActivities {
  const fail = async (): Promise<never> => {
    throw failure(FailureType.ClusterPolicyUnavailable, reason);
  };
  return { prepareClusterPolicy: fail, applyClusterPolicy: fail, restoreClusterPolicy: fail, readClusterPolicy: fail };
}

/**
 * The intent of an object: every top-level field but `status`, and of `metadata` the name,
 * namespace, labels and annotations (server-managed fields dropped), so a snapshot compares
 * equal to a read-back. Unlike the Cilium activities' normalisation it keeps `specs` and any
 * other field a native document carries.
 */
export function normaliseDocument(obj: KubeObject | StoredObject): KubeObject {
  const { metadata: m, status: _status, ...rest } = obj as StoredObject;
  const metadata: KubeObject['metadata'] = { name: m.name };
  if (m.namespace) metadata.namespace = m.namespace;
  if (m.labels && Object.keys(m.labels).length > 0) metadata.labels = { ...m.labels };
  const annotations = Object.fromEntries(Object.entries(m.annotations ?? {}).filter(([k]) => k !== 'kubectl.kubernetes.io/last-applied-configuration'));
  if (Object.keys(annotations).length > 0) metadata.annotations = annotations;
  return { ...rest, metadata } as KubeObject;
}

/** Deep equality of two normalised objects (key order ignored). */
export function sameObject(a: KubeObject | null, b: KubeObject | null): boolean {
  return stable(a) === stable(b);
}

function stable(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stable).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stable((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}

/**
 * The apiserver's refusal of a document, field by field; undefined for errors that are not a
 * verdict on the document (unreachable, throttled, a server fault).
 */
export function refusalOf(err: unknown): { path?: string; rule: string }[] | undefined {
  if (!(err instanceof KubeApiError)) return undefined;
  if (err.status === 404) return [{ rule: `the cluster serves no such kind (${err.message}); is this version of Cilium's CRDs installed?` }];
  // Server-side apply refuses a field the CRD's schema does not declare with a 500 "failed to create typed patch object".
  const typed = /failed to create typed patch object[^:]*\):\s*(\.?[^\s:]+):\s*(.+)$/s.exec(err.message);
  if (err.status === 500 && typed) return [{ path: (typed[1] as string).replace(/^\./, ''), rule: `${(typed[2] as string).trim()} (apiserver: ${err.status} ${err.reason})` }];
  if (err.retryable) return undefined;
  const causes = err.causes.filter((c) => c.field || c.message);
  if (causes.length === 0) return [{ rule: err.message }];
  return causes.map((c) => ({ ...(c.field ? { path: c.field.replace(/^\./, '') } : {}), rule: `${c.message ?? 'invalid'} (apiserver: ${err.status} ${err.reason})` }));
}

function toRef(obj: KubeObject): ObjectRef {
  return { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, ...(obj.metadata.namespace ? { namespace: obj.metadata.namespace } : {}) };
}

function rank(kind: string): number {
  const i = (CLUSTER_POLICY_KINDS as readonly string[]).indexOf(kind);
  return i < 0 ? CLUSTER_POLICY_KINDS.length : i;
}

function sortRefs(refs: ObjectRef[]): ObjectRef[] {
  return [...refs].sort((a, b) => rank(a.kind) - rank(b.kind) || `${a.namespace ?? ''}/${a.name}`.localeCompare(`${b.namespace ?? ''}/${b.name}`));
}

function sortDocuments<T extends { object: KubeObject }>(docs: T[]): T[] {
  return [...docs].sort((a, b) => rank(a.object.kind) - rank(b.object.kind));
}
