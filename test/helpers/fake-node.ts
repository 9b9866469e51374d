/**
 * In-memory stand-ins for the activities that need root, a kernel or Kubernetes, for the
 * workflow logic tests on the time-skipping server (test/workflow) and for recording replay
 * histories (scripts/record-histories.ts). They keep state the way the real ones do (a
 * node's tables and eBPF maps, a cluster's pods and policies), so a workflow's verify and
 * rollback read-backs compare against something real enough to fail; the privileged
 * integration tests keep the checks against the real kernel and apiserver.
 *
 * A fake node runs the real node activities (activities/node-activities.ts) — the real
 * subsystem contract, planners, blocklist patch and rate-limit code — over in-memory
 * tables and maps in place of `ip`, `nft` and bpffs, so the fake cannot drift from the
 * planner production runs. Faked below the contract: the kernel tables (by executing the
 * planner's operations) and the maps' key-by-key calls. Full blocklist images (a list by
 * reference) are not: the fake maps refuse them.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ApplicationFailure } from '@temporalio/common';
import { Worker, type InjectedSinks, type NativeConnection, type WorkflowBundle } from '@temporalio/worker';
import { BlocklistStore } from '../../activities/blocklist-sync';
import { InjectedFaultError } from '../../activities/failures';
import { createApprovalActivities } from '../../activities/approval';
import { createIdentityActivities } from '../../activities/identity';
import { createNodeActivities, type NodeActivities } from '../../activities/node-activities';
import type { LinkTable } from '../../activities/system/link-table';
import type { NatTable, NatTableState } from '../../activities/system/nat-table';
import type { RouteTable } from '../../activities/system/route-table';
import type { RuleTable } from '../../activities/system/rule-table';
import type { BlocklistMaps, KernelBlocklistEntry } from '../../bpf/blocklist-maps';
import type { KernelRateLimit, RateLimitMaps } from '../../bpf/ratelimit-maps';
import type { CiliumActivities, PolicySnapshot } from '../../activities/cilium-policy';
import { createClusterPolicyActivities, type ClusterPolicyKubeClient } from '../../activities/cluster-policy';
import type { ObjectRef, StoredObject } from '../../k8s/client';
import type { EndpointLabelState, EndpointRef, QuarantineActivities } from '../../activities/quarantine';
import type { AuditSinks } from '../../model/audit';
import type { MetricsSinks } from '../../model/metrics';
import { metricsSinks } from '../../metrics/registry';
import type { KubeObject } from '../../model/firewall-translate';
import { parseQuarantineConfig, parseQuarantineLabel, renderQuarantinePolicy } from '../../model/quarantine';
import type { EnforcementConfigActivities } from '../../activities/enforcement-config';
import { guardConfigSchema, type GuardConfig, type NodeProtectedAddresses } from '../../model/enforcement-guard';
import { CLUSTER_TASK_QUEUE, nodeTaskQueue } from '../../model/naming';
import { createAuditActivities, createRevisionActivities } from '../../activities/audit-store';
import { testAuditStores, type TestAuditStores } from './audit-stores';
import type { InterfaceConfig, NatConfig, ObservedInterface, PolicyRule, Route, Zone } from '../../model/node-state';
import { planAddresses, planLinks, planNat, planRoutes, planRules, planVlans, planZones } from '../../model/plan';
import type { Subsystem } from '../../model/subsystem';
import { applyZoneMapOperations, canonicalZoneMaps, type ZoneMapState } from '../../model/zone-maps';
import type { ZoneMapStore } from '../../activities/subsystems/zonemaps';

/** The activities of one node, as the workflows proxy them. */
export type FakeNodeActivities = NodeActivities;

/** The kernel tables of a fake node (what `ip` and `nft` would show of fos1's state). */
export interface FakeTables {
  interfaces: ObservedInterface[];
  routes: Route[];
  rules: PolicyRule[];
  zones: Zone[];
  nat: NatConfig;
}

/** One fake router node: its kernel tables and eBPF maps in memory, behind the real node activities. */
export class FakeNode {
  readonly tables: FakeTables = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] } };
  /** Blocklist entries by canonical prefix: expiry in unix seconds (undefined: never). */
  readonly blocklist = new Map<string, number | undefined>();
  /** The eBPF zone maps (interfaces by name: the fake node has no ifindexes). */
  zoneMaps: ZoneMapState = { members: [], rules: [], defaults: [] };
  /** Rate limits by canonical prefix, as the maps hold them. */
  readonly rateLimits = new Map<string, KernelRateLimit>();
  /** Every activity call, in order: its name, and the subsystem for apply and restore (`applySubsystem(blocklist)`). */
  readonly calls: string[] = [];
  /**
   * When set, the next blocklist apply writes its entries and then fails with this
   * message (type InjectedFault, not retryable): a half-done apply the rollback must undo.
   * Raised through the real activities' fault hook, right after the maps changed.
   */
  failBlocklistApply?: string;
  /** While set, every restore (`restoreSubsystem`, and each round of `restoreAndCheck`) fails with this message: a node whose restores cannot get through yet. */
  failRestores?: string;
  /** What the node reports as its own addresses, gateways and DNS servers (the guard's default allow-list). */
  protectedAddresses: Omit<NodeProtectedAddresses, 'node'> = { addresses: ['10.77.0.2/32'], gateways: ['10.77.0.1/32'], dnsServers: [] };
  /** Made on first use: the node's store, which only full-list snapshots would write to. */
  private store?: BlocklistStore;

  constructor(readonly name: string) {}

  /** The activities to register on this node's task queue. */
  activities(): FakeNodeActivities {
    const real = createNodeActivities({
      routes: this.routeTable(),
      links: this.linkTable(),
      rules: this.ruleTable(),
      nat: this.natTable(),
      openBlocklist: () => this.blocklistMaps(),
      openRateLimits: () => this.rateLimitMaps(),
      openZoneMaps: () => this.zoneMapStore(),
      blocklistStore: (this.store ??= new BlocklistStore(mkdtempSync(join(tmpdir(), `fos1-fake-${this.name}-`)))),
      faults: (subsystem: Subsystem) => {
        const message = this.failBlocklistApply;
        if (subsystem !== 'blocklist' || message === undefined) return;
        this.failBlocklistApply = undefined;
        throw new InjectedFaultError(message);
      },
      // The fake answers reportProtectedAddresses itself (below); the real one is never reached.
      protectedAddresses: { ip: { netns: undefined, run: () => Promise.reject(new Error('the fake node has no ip command')) } },
      logger: pino({ level: 'silent' }),
    });
    const calls = this.calls;
    return {
      prepareSubsystems: (input) => {
        calls.push('prepareSubsystems');
        return real.prepareSubsystems(input);
      },
      applySubsystem: (input) => {
        calls.push(`applySubsystem(${input.subsystem})`);
        return real.applySubsystem(input);
      },
      checkSubsystems: (input) => {
        calls.push('checkSubsystems');
        return real.checkSubsystems(input);
      },
      restoreSubsystem: (input) => {
        calls.push(`restoreSubsystem(${input.subsystem})`);
        if (this.failRestores !== undefined) return Promise.reject(ApplicationFailure.create({ type: 'NodeUnavailable', message: this.failRestores }));
        return real.restoreSubsystem(input);
      },
      restoreAndCheck: (input) => {
        calls.push(`restoreAndCheck(${input.restores.map((r) => r.subsystem).join(',')})`);
        if (this.failRestores !== undefined) return Promise.reject(ApplicationFailure.create({ type: 'NodeUnavailable', message: this.failRestores }));
        return real.restoreAndCheck(input);
      },
      reportProtectedAddresses: async (input: { node: string }) => {
        calls.push('reportProtectedAddresses');
        return { node: input.node, ...structuredClone(this.protectedAddresses) };
      },
    };
  }

  // The kernel tables: each sync runs the real planner against the table and executes its
  // operations (whole-table replacement where an operation carries the whole row).

  private routeTable(): RouteTable {
    const t = this.tables;
    const fake = {
      read: async () => structuredClone(t.routes),
      sync: async (desired: readonly Route[]) => {
        const ops = planRoutes(t.routes, [...desired]);
        t.routes = structuredClone([...desired]);
        return ops;
      },
    };
    return fake as unknown as RouteTable;
  }

  private ruleTable(): RuleTable {
    const t = this.tables;
    const fake = {
      read: async () => structuredClone(t.rules),
      sync: async (desired: readonly PolicyRule[]) => {
        const ops = planRules(t.rules, [...desired]);
        t.rules = structuredClone([...desired]);
        return ops;
      },
    };
    return fake as unknown as RuleTable;
  }

  private natTable(): NatTable {
    const t = this.tables;
    const fake = {
      readState: async (): Promise<NatTableState> => ({
        exists: true,
        config: structuredClone(t.nat),
        handles: { postrouting: [], prerouting: [] },
        zones: structuredClone(t.zones),
      }),
      syncZones: async (desired: Zone[]) => {
        const ops = planZones(t.zones, desired);
        t.zones = structuredClone(desired);
        return ops;
      },
      sync: async (desired: NatConfig) => {
        const ops = planNat(t.nat, desired);
        t.nat = structuredClone(desired);
        return ops;
      },
    };
    return fake as unknown as NatTable;
  }

  private linkTable(): LinkTable {
    const t = this.tables;
    const find = (name: string) => t.interfaces.find((i) => i.name === name);
    const fake = {
      read: async () => structuredClone(t.interfaces),
      syncLinks: async (desired: readonly InterfaceConfig[], options: { restore?: boolean } = {}) => {
        const ops = planLinks(t.interfaces, [...desired]);
        for (const op of ops) {
          const link = find(op.name);
          if (!link) {
            if (options.restore) continue; // gone since the snapshot: not fos1's to re-create
            throw new Error(`the fake node has no interface ${op.name}`);
          }
          if (op.settings.mtu !== undefined) link.mtu = op.settings.mtu;
          if (op.settings.up !== undefined) link.up = op.settings.up;
        }
        return ops;
      },
      syncVlans: async (desired: readonly InterfaceConfig[]) => {
        const ops = planVlans(t.interfaces, [...desired]);
        for (const op of ops) {
          const { name, parent, id, mtu, up } = op.vlan;
          t.interfaces = t.interfaces.filter((i) => i.name !== name);
          if (op.action === 'add') t.interfaces.push({ name, vlan: { parent, id }, mtu: mtu ?? 1500, up: up ?? true, addresses: [] });
        }
        return ops;
      },
      syncAddresses: async (desired: readonly InterfaceConfig[], options: { restore?: boolean } = {}) => {
        const ops = planAddresses(t.interfaces, [...desired]);
        for (const op of ops) {
          const link = find(op.device);
          if (!link) {
            if (options.restore) continue;
            throw new Error(`the fake node has no interface ${op.device}`);
          }
          link.addresses = op.action === 'add' ? [...link.addresses, op.address].sort() : link.addresses.filter((a) => a !== op.address);
        }
        return ops;
      },
    };
    return fake as unknown as LinkTable;
  }

  // The eBPF maps, key by key (what the patch paths of the real subsystems call).

  private blocklistMaps(): BlocklistMaps {
    const entries = this.blocklist;
    const entryOf = (cidr: string): KernelBlocklistEntry | null => {
      if (!entries.has(cidr)) return null;
      const expiresAt = entries.get(cidr);
      return expiresAt === undefined ? { cidr } : { cidr, expiresAt };
    };
    const whole = (what: string) => () => {
      throw ApplicationFailure.create({ type: 'NotImplemented', nonRetryable: true, message: `the fake node's blocklist maps take patches only, not ${what}` });
    };
    const fake = {
      getExact: (cidr: string) => entryOf(cidr),
      upsert: (upsert: KernelBlocklistEntry[]) => {
        for (const e of upsert) entries.set(e.cidr, e.expiresAt);
      },
      remove: (cidrs: string[]) => {
        for (const c of cidrs) entries.delete(c);
      },
      readAll: () => [...entries.keys()].map((c) => entryOf(c)!),
      dumpImage: whole('a dump of the whole maps (a full list)'),
      placed: whole('a full list'),
      applyImage: whole('a full list'),
      verifyImage: whole('a full list'),
    };
    return fake as unknown as BlocklistMaps;
  }

  /** The eBPF zone maps: the real planner's operations applied to {@link zoneMaps}. */
  private zoneMapStore(): ZoneMapStore {
    return {
      read: () => canonicalZoneMaps(structuredClone(this.zoneMaps)),
      apply: (ops) => {
        this.zoneMaps = canonicalZoneMaps(applyZoneMapOperations(this.zoneMaps, ops));
      },
    };
  }

  private rateLimitMaps(): RateLimitMaps {
    const entries = this.rateLimits;
    const fake = {
      readAll: () => [...entries.values()].map((e) => ({ ...e })),
      get: (cidr: string) => (entries.has(cidr) ? { ...entries.get(cidr)! } : undefined),
      update: (upsert: readonly KernelRateLimit[], remove: readonly string[]) => {
        for (const e of upsert) entries.set(e.cidr, { ...e });
        for (const c of remove) entries.delete(c);
      },
    };
    return fake as unknown as RateLimitMaps;
  }
}

/** The cluster worker's quarantine and Cilium activities, faked. */
export type FakeClusterActivities = Pick<QuarantineActivities, 'findEndpoint' | 'renderQuarantinePolicy' | 'readEndpointLabel' | 'labelEndpoint' | 'unlabelEndpoint'> &
  Pick<CiliumActivities, 'readPolicies' | 'checkPolicyMap' | 'applyPolicies' | 'restorePolicies'> &
  EnforcementConfigActivities;

/**
 * An in-memory Kubernetes object store for the cluster policy activities (the real ones run
 * over it): apply stores the object as given (every document is accepted: no schema), list
 * filters by `k=v` label selectors, replace checks the resourceVersion.
 */
export class FakeKube implements ClusterPolicyKubeClient {
  readonly objects = new Map<string, StoredObject>();
  private version = 0;

  private key(ref: { kind: string; name: string; namespace?: string }): string {
    return `${ref.kind} ${ref.namespace ?? ''}/${ref.name}`;
  }

  private store(obj: KubeObject, dryRun = false): StoredObject {
    const k = this.key({ kind: obj.kind, ...obj.metadata });
    const uid = this.objects.get(k)?.metadata.uid ?? `uid-${k}`;
    const stored = { ...structuredClone(obj), metadata: { ...structuredClone(obj.metadata), uid, resourceVersion: String(++this.version) } } as StoredObject;
    if (!dryRun) this.objects.set(k, stored);
    return structuredClone(stored);
  }

  async apply(obj: KubeObject, options: { dryRun?: boolean }): Promise<StoredObject> {
    return this.store(obj, options.dryRun);
  }

  async get(ref: ObjectRef): Promise<StoredObject | undefined> {
    const o = this.objects.get(this.key(ref));
    return o ? structuredClone(o) : undefined;
  }

  async list(_apiVersion: string, kind: string, options: { labelSelector?: string } = {}): Promise<{ items: StoredObject[] }> {
    const wanted = (options.labelSelector ?? '').split(',').filter((kv) => kv !== '').map((kv) => kv.split('=') as [string, string]);
    const items = [...this.objects.values()].filter((o) => o.kind === kind && wanted.every(([k, v]) => o.metadata.labels?.[k] === v));
    return { items: items.map((o) => structuredClone(o)) };
  }

  async delete(ref: ObjectRef): Promise<boolean> {
    return this.objects.delete(this.key(ref));
  }

  async create(obj: KubeObject): Promise<StoredObject> {
    return this.store(obj);
  }

  async replace(obj: StoredObject): Promise<StoredObject> {
    const current = this.objects.get(this.key({ kind: obj.kind, ...obj.metadata }));
    if (current?.metadata.resourceVersion !== obj.metadata.resourceVersion) throw new Error(`fake kube: stale resourceVersion for ${obj.kind} ${obj.metadata.name}`);
    return this.store(obj);
  }
}

/** A fake cluster: pods by IP with their labels (and who set them), and fos1's Cilium policies. */
export class FakeCluster {
  /** The objects the change workflow's cluster policy step writes (through the real activities). */
  readonly kube = new FakeKube();
  readonly pods = new Map<string, { ref: EndpointRef; labels: Record<string, string>; fos1Labels: Set<string> }>();
  readonly policies = new Map<string, KubeObject>();
  readonly calls: string[] = [];
  /** The cluster worker's guard configuration (FOS1_GUARD_FILE), read by the enforcement workflows; tests change it. */
  guard: GuardConfig = guardConfigSchema.parse({});

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
        return renderQuarantinePolicy(parseQuarantineLabel(input.label, 'label'), parseQuarantineConfig({}), input.changeId);
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
      async readEnforcementConfig() {
        cluster.calls.push('readEnforcementConfig');
        return structuredClone(cluster.guard);
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
 * the bundled production workflows. The cluster worker's identity activity is the real one
 * (it needs nothing but the key).
 */
export async function startFakeWorkers(options: {
  connection: NativeConnection;
  namespace?: string;
  workflowBundle: WorkflowBundle;
  nodes: FakeNode[];
  cluster?: FakeCluster;
  /** The cluster worker's identity key (none: every change is self-asserted, as started outside the API). */
  identityKey?: Buffer;
  /** The audit and revision stores the cluster worker appends to (default: fresh file stores in a temporary folder). */
  audit?: TestAuditStores;
  /** The cluster worker's approval policy file (docs/approvals.md; none: nothing needs approval). */
  approvalPolicyFile?: string;
}): Promise<FakeWorkers> {
  const { connection, workflowBundle } = options;
  const namespace = options.namespace ?? 'default';
  const cluster = options.cluster ?? new FakeCluster();
  // Audit records go nowhere: the tests read them from workflow results and queries.
  // The workers' own metrics sinks (counted in this process's registry, read by nobody here).
  const sinks: InjectedSinks<AuditSinks & MetricsSinks> = { audit: { record: { fn: () => undefined, callDuringReplay: false } }, ...metricsSinks() };
  const workers: Worker[] = [];
  for (const node of options.nodes) {
    workers.push(await Worker.create({ connection, namespace, taskQueue: nodeTaskQueue(node.name), workflowBundle, activities: node.activities(), sinks }));
  }
  // The change workflow checks that every target's worker polls before it starts (describePollers):
  // the fake nodes poll, any other queue has nobody.
  const polled = new Set(options.nodes.map((n) => nodeTaskQueue(n.name)));
  const describePollers = async ({ taskQueues }: { taskQueues: string[] }) =>
    Object.fromEntries(taskQueues.map((q) => [q, polled.has(q) ? { pollers: 1, identities: ['fake-node'] } : { pollers: 0, identities: [] }]));
  // The real audit activities: every workflow waits for its records to be stored before it ends.
  const ownAudit = options.audit ? undefined : testAuditStores();
  const audit = (options.audit ?? ownAudit)!;
  const silent = pino({ level: 'silent' });
  const clusterActivities = {
    ...cluster.activities(),
    // The real cluster policy activities over the in-memory object store.
    ...createClusterPolicyActivities({ kube: cluster.kube, logger: silent }),
    ...createIdentityActivities({ identityKey: options.identityKey }),
    // The real policy activity: it only reads the file.
    ...createApprovalActivities({ policyFile: options.approvalPolicyFile }),
    describePollers,
    ...createAuditActivities({ store: audit.audit, logger: silent }),
    ...createRevisionActivities({ store: audit.revisions, logger: silent }),
  };
  workers.push(await Worker.create({ connection, namespace, taskQueue: CLUSTER_TASK_QUEUE, workflowBundle, activities: clusterActivities, sinks }));
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    workers,
    async stop() {
      workers.forEach((w) => w.shutdown());
      await running;
      await ownAudit?.close();
    },
  };
}
