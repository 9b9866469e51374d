/**
 * Quarantine activities (cluster worker): find the Pod that owns an address, put the
 * quarantine label on it and take it off again, read it back, and render the label's policy
 * from the worker's configuration. The policy itself is applied by the Cilium policy
 * activities (activities/cilium-policy.ts); this file never writes a policy.
 *
 * The label is written with server-side apply under fos1's field manager and an apply
 * configuration holding nothing but that one label, so fos1 owns that field and no other.
 * Taking it off is the same apply with an empty configuration: the apiserver removes the
 * fields fos1 owned and nobody else does — a label an operator had also set stays.
 *
 * Errors become ApplicationFailures: no pod is `NoEndpoint`, several are `AmbiguousEndpoint`,
 * a host-network pod is `HostNetworkEndpoint` (its address is the node's: Cilium does not
 * isolate it with endpoint policy), 409 is `LabelConflict` (someone else set the label to
 * another value), other 4xx `QuarantineRejected`, 429/5xx/unreachable `KubeUnavailable`
 * (retryable); see activities/failures.ts.
 */
import type { Logger } from 'pino';
import type { ApplyOptions, ObjectRef, StoredObject } from '../k8s/client';
import { failure, FailureType } from '../model/failures';
import type { KubeObject } from '../model/firewall-translate';
import { canonicalIp, parseIp } from '../model/ip';
import { namespaceQuarantinable, parseQuarantineLabel, renderQuarantinePolicy, type QuarantineConfig } from '../model/quarantine';
import { ErrorDomains, translateErrors } from './failures';

/** The part of {@link KubeClient} the activities use. */
export interface QuarantineKubeClient {
  apply(obj: KubeObject, options: ApplyOptions): Promise<StoredObject>;
  get(ref: ObjectRef): Promise<StoredObject | undefined>;
  list(apiVersion: string, kind: string, options?: { namespace?: string; labelSelector?: string; fieldSelector?: string }): Promise<{ items: StoredObject[] }>;
}

/** What the quarantine activities need; injected by the worker. */
export interface QuarantineActivityDeps {
  kube: QuarantineKubeClient;
  /** Server-side apply field manager (default `fos1`, the same as the Cilium activities). */
  fieldManager?: string;
  /** Exceptions to the isolation (parsed once at the entry point). */
  config: QuarantineConfig;
  logger: Logger;
}

/** The Pod a quarantine labels. */
export interface EndpointRef {
  namespace: string;
  name: string;
  uid: string;
  /** The address it was found by. */
  ip: string;
}

/** A Pod's quarantine label as read back. */
export interface EndpointLabelState {
  /** False when the Pod is gone, or replaced by another with the same name (other uid). */
  exists: boolean;
  /** The label's value on the Pod, or undefined when absent. */
  value?: string;
  /** Whether fos1's field manager owns the label. */
  ownedByFos1: boolean;
  /** Other field managers that own the label (an operator's `kubectl label`, …). */
  otherOwners: string[];
  /** Every label on the Pod (to check the policy selects it). */
  labels: Record<string, string>;
}

interface PodShape {
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; managedFields?: { manager?: string; fieldsV1?: unknown }[]; deletionTimestamp?: string };
  spec?: { hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

/** Builds the quarantine activities around an injected Kubernetes client. */
export function createQuarantineActivities(deps: QuarantineActivityDeps) {
  const fieldManager = deps.fieldManager ?? 'fos1';
  const { kube, logger } = deps;

  async function podOf(endpoint: EndpointRef): Promise<PodShape | undefined> {
    const pod = (await kube.get({ apiVersion: 'v1', kind: 'Pod', namespace: endpoint.namespace, name: endpoint.name })) as PodShape | undefined;
    return pod && pod.metadata.uid === endpoint.uid ? pod : undefined;
  }

  return {
    /**
     * The live Pod whose `status.podIP` or `status.podIPs` holds `address`: first by the
     * apiserver's `status.podIP` field selector, then (the second address of a dual-stack
     * pod, or an address written in another form) a list of every pod, compared canonically.
     */
    async findEndpoint(input: { address: string }): Promise<EndpointRef> {
      return translateErrors(ErrorDomains.quarantine, async () => {
        const ip = parseIp(input.address) ? canonicalIp(input.address) : undefined;
        if (!ip) throw failure(FailureType.InvalidQuarantine, `address: "${input.address}" is not an IP address`);
        const live = (p: PodShape) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';
        const holds = (p: PodShape) => [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)].some((a) => a !== undefined && parseIp(a) !== null && canonicalIp(a) === ip);
        let candidates = ((await kube.list('v1', 'Pod', { fieldSelector: `status.podIP=${ip}` })).items as PodShape[]).filter(live);
        if (candidates.length === 0) candidates = ((await kube.list('v1', 'Pod')).items as PodShape[]).filter((p) => live(p) && holds(p));
        const name = (p: PodShape) => `${p.metadata.namespace}/${p.metadata.name}`;
        if (candidates.length === 0) {
          throw failure(FailureType.NoEndpoint, `no running pod has the address ${ip} (status.podIP / status.podIPs)`);
        }
        const pods = candidates.filter((p) => !p.spec?.hostNetwork);
        if (pods.length === 0) {
          throw failure(FailureType.HostNetworkEndpoint, `${ip} belongs to host-network pod(s) ${candidates.map(name).join(', ')}: that is the node's address, which endpoint policy cannot isolate`);
        }
        if (pods.length > 1) {
          throw failure(FailureType.AmbiguousEndpoint, `${ip} is held by ${pods.length} pods (${pods.map(name).join(', ')}); refusing to guess`);
        }
        const pod = pods[0]!;
        if (!namespaceQuarantinable(pod.metadata.namespace ?? '', deps.config)) {
          throw failure(FailureType.ProtectedNamespace, `${ip} is pod ${name(pod)} in the system namespace ${pod.metadata.namespace}; quarantine refuses system namespaces unless the quarantine configuration's allowSystemNamespaces names it`);
        }
        return { namespace: pod.metadata.namespace ?? '', name: pod.metadata.name, uid: pod.metadata.uid ?? '', ip };
      });
    },

    /** The label's policy, rendered with this worker's exceptions. */
    async renderQuarantinePolicy(input: { label: string; changeId?: string }): Promise<KubeObject> {
      return translateErrors(ErrorDomains.quarantine, () => renderQuarantinePolicy(parseQuarantineLabel(input.label, 'label'), deps.config, input.changeId));
    },

    /** Reads the Pod's quarantine label and who owns it. */
    async readEndpointLabel(input: { endpoint: EndpointRef; label: string }): Promise<EndpointLabelState> {
      return translateErrors(ErrorDomains.quarantine, async () => {
        const { key } = parseQuarantineLabel(input.label, 'label');
        const pod = await podOf(input.endpoint);
        if (!pod) return { exists: false, ownedByFos1: false, otherOwners: [], labels: {} };
        const owners = (pod.metadata.managedFields ?? []).filter((m) => ownsLabel(m.fieldsV1, key)).map((m) => m.manager ?? '?');
        const labels = pod.metadata.labels ?? {};
        const state: EndpointLabelState = { exists: true, ownedByFos1: owners.includes(fieldManager), otherOwners: owners.filter((o) => o !== fieldManager), labels };
        if (key in labels) state.value = labels[key];
        return state;
      });
    },

    /**
     * Server-side applies the label, and nothing else, to the Pod. The uid in the apply
     * configuration is a precondition: a replacement pod with the same name is not labelled.
     */
    async labelEndpoint(input: { endpoint: EndpointRef; label: string }): Promise<void> {
      return translateErrors(ErrorDomains.quarantine, async () => {
        const { key, value } = parseQuarantineLabel(input.label, 'label');
        const { namespace, name, uid } = input.endpoint;
        await kube.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, uid, labels: { [key]: value } } as KubeObject['metadata'] }, { fieldManager });
        logger.info({ pod: `${namespace}/${name}`, label: input.label }, 'quarantine label applied');
      });
    },

    /**
     * Gives up fos1's fields on the Pod (an empty apply configuration): the label goes unless
     * another manager owns it too. A Pod that is gone (or replaced) has nothing to remove.
     */
    async unlabelEndpoint(input: { endpoint: EndpointRef }): Promise<{ podGone: boolean }> {
      return translateErrors(ErrorDomains.quarantine, async () => {
        const { namespace, name, uid } = input.endpoint;
        if (!(await podOf(input.endpoint))) return { podGone: true };
        await kube.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, uid } as KubeObject['metadata'] }, { fieldManager });
        logger.info({ pod: `${namespace}/${name}` }, 'quarantine label released');
        return { podGone: false };
      });
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type QuarantineActivities = ReturnType<typeof createQuarantineActivities>;

/**
 * What a cluster worker without Kubernetes registers instead: every quarantine activity fails
 * at once, non-retryable `QuarantineUnavailable`, so a quarantine is refused (and audited)
 * instead of waiting for a worker that will never take it.
 */
export function unavailableQuarantineActivities(reason: string): QuarantineActivities {
  const fail = async (): Promise<never> => {
    throw failure(FailureType.QuarantineUnavailable, reason);
  };
  return { findEndpoint: fail, renderQuarantinePolicy: fail, readEndpointLabel: fail, labelEndpoint: fail, unlabelEndpoint: fail };
}

/** Whether a managedFields entry's fieldsV1 holds `f:metadata.f:labels.f:<key>`. */
function ownsLabel(fieldsV1: unknown, key: string): boolean {
  const labels = (fieldsV1 as { 'f:metadata'?: { 'f:labels'?: Record<string, unknown> } } | undefined)?.['f:metadata']?.['f:labels'];
  return labels !== undefined && `f:${key}` in labels;
}
