/**
 * In-memory stand-ins for the activities that need root, a kernel or Kubernetes, for the
 * workflow logic tests on the time-skipping server (test/workflow) and for recording replay
 * histories (scripts/record-histories.ts). They keep state the way the real ones do (a
 * node's network state and blocklist, a cluster's pods and policies), so a workflow's
 * verify and rollback read-backs compare against something real enough to fail; the
 * privileged integration tests keep the checks against the real kernel and apiserver.
 *
 * Only what the workflows call is implemented: blocklist patches (not full lists by
 * reference) and the network subsystems as whole-list replacements.
 */
import { ApplicationFailure } from '@temporalio/common';
import { Worker, type InjectedSinks, type NativeConnection, type WorkflowBundle } from '@temporalio/worker';
import { createApprovalActivities } from '../../activities/approval';
import { createIdentityActivities } from '../../activities/identity';
import type { NodeActivities } from '../../activities/node-activities';
import type { CiliumActivities, PolicySnapshot } from '../../activities/cilium-policy';
import type { EndpointLabelState, EndpointRef, QuarantineActivities } from '../../activities/quarantine';
import type { AuditSinks } from '../../model/audit';
import type { BlocklistCheck, BlocklistIntent, BlocklistSnapshot, MapBlocklistEntry, PreparedBlocklist } from '../../model/blocklist-change';
import type { KubeObject } from '../../model/firewall-translate';
import { parseQuarantineLabel, renderQuarantinePolicy } from '../../model/quarantine';
import { CLUSTER_TASK_QUEUE, nodeTaskQueue } from '../../model/naming';
import type { ObservedNetworkState } from '../../model/node-state';

/** The activities of one node the workflows call, faked. */
export type FakeNodeActivities = Pick<
  NodeActivities,
  | 'readNetworkState'
  | 'syncLinks'
  | 'syncVlans'
  | 'syncAddresses'
  | 'syncRoutes'
  | 'syncRules'
  | 'syncZones'
  | 'syncNat'
  | 'syncRateLimits'
  | 'prepareBlocklist'
  | 'applyBlocklist'
  | 'checkBlocklist'
  | 'restoreBlocklist'
>;

/** One fake router node: its network state and its blocklist maps, in memory. */
export class FakeNode {
  network: ObservedNetworkState = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] };
  /** Blocklist entries by prefix: expiry in unix seconds (undefined: never). */
  readonly blocklist = new Map<string, number | undefined>();
  /** Every activity call, in order, by name. */
  readonly calls: string[] = [];
  /**
   * When set, the next blocklist apply writes its entries and then fails with this
   * message (type InjectedFault, not retryable): a half-done apply the rollback must undo.
   */
  failBlocklistApply?: string;

  constructor(readonly name: string) {}

  /** The activities to register on this node's task queue. */
  activities(): FakeNodeActivities {
    const node = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the activities close over the fake
    const replace = (key: 'routes' | 'rules' | 'zones' | 'rateLimits', call: string) => async (input: { desired: unknown[] }) => {
      node.calls.push(call);
      const before = JSON.stringify(node.network[key]);
      (node.network as unknown as Record<string, unknown[]>)[key] = structuredClone(input.desired);
      return { operations: before === JSON.stringify(input.desired) ? [] : [`~ ${key}`] };
    };
    return {
      async readNetworkState() {
        node.calls.push('readNetworkState');
        return structuredClone(node.network);
      },
      async syncLinks(input) {
        node.calls.push('syncLinks');
        node.network.interfaces = structuredClone(input.desired) as ObservedNetworkState['interfaces'];
        return { operations: [] };
      },
      async syncVlans() {
        node.calls.push('syncVlans');
        return { operations: [] };
      },
      async syncAddresses() {
        node.calls.push('syncAddresses');
        return { operations: [] };
      },
      syncRoutes: replace('routes', 'syncRoutes') as FakeNodeActivities['syncRoutes'],
      syncRules: replace('rules', 'syncRules') as FakeNodeActivities['syncRules'],
      syncZones: replace('zones', 'syncZones') as FakeNodeActivities['syncZones'],
      syncRateLimits: replace('rateLimits', 'syncRateLimits') as FakeNodeActivities['syncRateLimits'],
      async syncNat(input) {
        node.calls.push('syncNat');
        node.network.nat = structuredClone(input.desired);
        return { operations: [] };
      },
      async prepareBlocklist(input: { intent: BlocklistIntent; dryRun?: boolean }): Promise<PreparedBlocklist> {
        node.calls.push('prepareBlocklist');
        const intent = input.intent;
        if (intent.mode === 'keep') return { plan: { operations: [], counts: { added: 0, changed: 0, removed: 0 } }, expected: { kind: 'entries', present: [], absent: [] } };
        if (intent.mode !== 'patch') throw ApplicationFailure.create({ type: 'NotImplemented', nonRetryable: true, message: `the fake node plans blocklist patches only, not ${intent.mode}` });
        const present: MapBlocklistEntry[] = [];
        const absent: string[] = [];
        const operations: string[] = [];
        const counts = { added: 0, changed: 0, removed: 0 };
        for (const cidr of [...intent.upsert.map((e) => e.cidr), ...intent.remove]) {
          if (node.blocklist.has(cidr)) present.push(entry(cidr, node.blocklist.get(cidr)));
          else absent.push(cidr);
        }
        for (const e of intent.upsert) {
          if (!node.blocklist.has(e.cidr)) {
            counts.added++;
            operations.push(`+ block ${e.cidr}`);
          } else if (node.blocklist.get(e.cidr) !== e.expiresAt) {
            counts.changed++;
            operations.push(`~ block ${e.cidr}`);
          }
        }
        for (const cidr of intent.remove) {
          if (!node.blocklist.has(cidr)) continue;
          counts.removed++;
          operations.push(`- block ${cidr}`);
        }
        return {
          plan: { operations, counts },
          expected: { kind: 'entries', present: intent.upsert, absent: intent.remove },
          ...(input.dryRun ? {} : { snapshot: { check: { kind: 'entries', present, absent } } }),
        };
      },
      async applyBlocklist(input: { intent: BlocklistIntent }) {
        node.calls.push('applyBlocklist');
        const intent = input.intent;
        if (intent.mode !== 'patch') return { operations: [] };
        for (const e of intent.upsert) node.blocklist.set(e.cidr, e.expiresAt);
        for (const cidr of intent.remove) node.blocklist.delete(cidr);
        const failure = node.failBlocklistApply;
        if (failure !== undefined) {
          node.failBlocklistApply = undefined;
          throw ApplicationFailure.create({ type: 'InjectedFault', nonRetryable: true, message: failure });
        }
        return { operations: [...intent.upsert.map((e) => `+ block ${e.cidr}`), ...intent.remove.map((c) => `- block ${c}`)] };
      },
      async checkBlocklist(input: { check: BlocklistCheck }) {
        node.calls.push('checkBlocklist');
        const check = input.check;
        if (check.kind !== 'entries') return ['the fake node checks entries only'];
        const differences: string[] = [];
        for (const want of check.present) {
          if (!node.blocklist.has(want.cidr)) differences.push(`blocklist: ${want.cidr} is missing`);
          else if ((node.blocklist.get(want.cidr) ?? 0) !== (want.expiresAt ?? 0)) differences.push(`blocklist: ${want.cidr} has another expiry`);
        }
        for (const cidr of check.absent) if (node.blocklist.has(cidr)) differences.push(`blocklist: ${cidr} should be absent`);
        return differences;
      },
      async restoreBlocklist(input: { snapshot: BlocklistSnapshot }) {
        node.calls.push('restoreBlocklist');
        const check = input.snapshot.check;
        if (check.kind !== 'entries') throw ApplicationFailure.create({ type: 'NotImplemented', nonRetryable: true, message: 'the fake node restores entry snapshots only' });
        for (const e of check.present) node.blocklist.set(e.cidr, e.expiresAt);
        for (const cidr of check.absent) node.blocklist.delete(cidr);
        return { operations: [] };
      },
    };
  }
}

function entry(cidr: string, expiresAt: number | undefined): MapBlocklistEntry {
  return expiresAt === undefined ? { cidr } : { cidr, expiresAt };
}

/** The cluster worker's quarantine and Cilium activities, faked. */
export type FakeClusterActivities = Pick<QuarantineActivities, 'findEndpoint' | 'renderQuarantinePolicy' | 'readEndpointLabel' | 'labelEndpoint' | 'unlabelEndpoint'> &
  Pick<CiliumActivities, 'readPolicies' | 'checkPolicyMap' | 'applyPolicies' | 'restorePolicies'>;

/** A fake cluster: pods by IP with their labels (and who set them), and fos1's Cilium policies. */
export class FakeCluster {
  readonly pods = new Map<string, { ref: EndpointRef; labels: Record<string, string>; fos1Labels: Set<string> }>();
  readonly policies = new Map<string, KubeObject>();
  readonly calls: string[] = [];

  /** Adds a pod at `ip`. */
  addPod(ip: string, namespace: string, name: string): EndpointRef {
    const ref: EndpointRef = { namespace, name, uid: `uid-${name}`, ip };
    this.pods.set(ip, { ref, labels: { app: name }, fos1Labels: new Set() });
    return ref;
  }

  private pod(endpoint: EndpointRef) {
    return [...this.pods.values()].find((p) => p.ref.uid === endpoint.uid);
  }

  /** The activities to register on the cluster task queue. */
  activities(): FakeClusterActivities {
    const cluster = this; // eslint-disable-line @typescript-eslint/no-this-alias -- as above
    const labelState = (endpoint: EndpointRef, label: string): EndpointLabelState => {
      const pod = cluster.pod(endpoint);
      const key = label.split('=')[0] ?? label;
      if (!pod) return { exists: false, labels: {}, ownedByFos1: false, otherOwners: [] };
      return { exists: true, value: pod.labels[key], labels: { ...pod.labels }, ownedByFos1: pod.fos1Labels.has(key), otherOwners: [] };
    };
    return {
      async findEndpoint(input: { address: string }) {
        cluster.calls.push('findEndpoint');
        const pod = cluster.pods.get(input.address);
        if (!pod) throw ApplicationFailure.create({ type: 'NoEndpoint', nonRetryable: true, message: `no pod has address ${input.address}` });
        return pod.ref;
      },
      async renderQuarantinePolicy(input: { label: string; changeId?: string }) {
        cluster.calls.push('renderQuarantinePolicy');
        return renderQuarantinePolicy(parseQuarantineLabel(input.label, 'label'), { exceptions: [] }, input.changeId);
      },
      async readEndpointLabel(input: { endpoint: EndpointRef; label: string }) {
        cluster.calls.push('readEndpointLabel');
        return labelState(input.endpoint, input.label);
      },
      async labelEndpoint(input: { endpoint: EndpointRef; label: string }) {
        cluster.calls.push('labelEndpoint');
        const pod = cluster.pod(input.endpoint);
        const [key, value] = input.label.split('=');
        if (!pod || key === undefined || value === undefined) throw ApplicationFailure.create({ type: 'NoEndpoint', nonRetryable: true, message: 'pod gone' });
        pod.labels[key] = value;
        pod.fos1Labels.add(key);
      },
      async unlabelEndpoint(input: { endpoint: EndpointRef }) {
        cluster.calls.push('unlabelEndpoint');
        const pod = cluster.pod(input.endpoint);
        if (!pod) return { podGone: true };
        for (const key of pod.fos1Labels) delete pod.labels[key];
        pod.fos1Labels.clear();
        return { podGone: false };
      },
      async readPolicies(input) {
        cluster.calls.push('readPolicies');
        const snapshot: PolicySnapshot = { source: input.source, objects: [...cluster.policies.values()].map((o) => structuredClone(o)) };
        return snapshot;
      },
      async checkPolicyMap(input) {
        cluster.calls.push('checkPolicyMap');
        return input.desired.map((o) => ({ subject: o.metadata.name, entries: 1, policies: [o.metadata.name] }));
      },
      async applyPolicies(input) {
        cluster.calls.push(input.dryRun ? 'applyPolicies(dryRun)' : 'applyPolicies');
        if (!input.dryRun) for (const o of input.desired) cluster.policies.set(o.metadata.name, structuredClone(o));
        return { applied: input.desired.map((o) => o.metadata.name), pruned: [], stored: input.desired.map((o) => structuredClone(o)) };
      },
      async restorePolicies(input) {
        cluster.calls.push('restorePolicies');
        cluster.policies.clear();
        for (const o of input.snapshot.objects) cluster.policies.set(o.metadata.name, structuredClone(o));
        return { applied: input.snapshot.objects.map((o) => o.metadata.name), pruned: [], stored: input.snapshot.objects };
      },
    };
  }
}

/** Workers serving fos1's real workflow code with fake activities; `stop()` shuts them down. */
export interface FakeWorkers {
  workers: Worker[];
  stop(): Promise<void>;
}

/**
 * Starts a worker per fake node (its task queue, as the node's DaemonSet pod would) and the
 * cluster worker (change, enforcement, coordinator and quarantine workflows), all running
 * the bundled production workflows.
 */
export async function startFakeWorkers(options: {
  connection: NativeConnection;
  namespace?: string;
  workflowBundle: WorkflowBundle;
  nodes: FakeNode[];
  cluster?: FakeCluster;
  /** More activities for the cluster worker (real ones that need no privileges: identity, approval policy). */
  clusterActivities?: object;
}): Promise<FakeWorkers> {
  const { connection, workflowBundle } = options;
  const namespace = options.namespace ?? 'default';
  // Audit records go nowhere: the tests read them from workflow results and queries.
  const sinks: InjectedSinks<AuditSinks> = { audit: { record: { fn: () => undefined, callDuringReplay: false } } };
  const workers: Worker[] = [];
  for (const node of options.nodes) {
    workers.push(await Worker.create({ connection, namespace, taskQueue: nodeTaskQueue(node.name), workflowBundle, activities: node.activities(), sinks }));
  }
  workers.push(
    await Worker.create({
      connection,
      namespace,
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowBundle,
      // The identity and approval-policy activities are the real ones: without a key every
      // change is self-asserted, without a policy file nothing needs approval.
      activities: { ...createIdentityActivities({ identityKey: undefined }), ...createApprovalActivities({ policyFile: undefined }), ...(options.cluster ?? new FakeCluster()).activities(), ...options.clusterActivities },
      sinks,
    }),
  );
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    workers,
    async stop() {
      workers.forEach((w) => w.shutdown());
      await running;
    },
  };
}
