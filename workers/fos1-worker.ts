/**
 * Builds fos1's workers: the cluster worker (change workflows) and the node worker
 * (node workflows and the activities that touch this node). One process may run both,
 * as the embedded dev stack does; in a cluster the node worker is a DaemonSet pod.
 */
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { NativeConnection, Worker, type InjectedSinks, type WorkerOptions, type WorkflowBundle, type WorkflowBundlePath } from '@temporalio/worker';
import type { Logger } from 'pino';
import { createCiliumActivities } from '../activities/cilium-policy';
import { createClusterPolicyActivities, unavailableClusterPolicyActivities, type ClusterPolicyActivityDeps } from '../activities/cluster-policy';
import { createQuarantineActivities, unavailableQuarantineActivities, type QuarantineActivityDeps } from '../activities/quarantine';
import { createApprovalActivities, type ApprovalPolicyObjectSource } from '../activities/approval';
import { createIdentityActivities } from '../activities/identity';
import { createEnforcementConfigActivities } from '../activities/enforcement-config';
import { guardConfigSchema, type GuardConfig } from '../model/enforcement-guard';
import { createNodeActivities, type NodeActivityDeps } from '../activities/node-activities';
import { createClusterGateActivities, createNodeGateActivities, unavailableNodeGateActivities, type NodeGateDeps } from '../activities/gates';
import { createInventoryActivities, type InventorySource } from '../activities/inventory';
import { createIpRunner } from '../activities/system/ip-runner';
import { RouteTable } from '../activities/system/route-table';
import { LinkTable } from '../activities/system/link-table';
import { RuleTable } from '../activities/system/rule-table';
import { DEFAULT_NAT_TABLE, NatTable } from '../activities/system/nat-table';
import { createNftRunner } from '../activities/system/nft-runner';
import { BlocklistMaps } from '../bpf/blocklist-maps';
import { RateLimitMaps } from '../bpf/ratelimit-maps';
import { ZoneMaps } from '../bpf/zone-maps';
import { BlocklistStore, type FeedLimits } from '../activities/blocklist-sync';
import { createAuditActivities, createRevisionActivities, type AuditStore, type RevisionStore } from '../activities/audit-store';
import type { AuditSinks } from '../model/audit';
import { metricsSinks } from '../metrics/registry';
import { TRACING_WORKFLOW_INTERCEPTOR_MODULES, tracingActivityInterceptors, tracingSinks, type Tracing } from '../telemetry/tracing';
import { CLUSTER_TASK_QUEUE, nodeTaskQueue } from '../model/naming';
import { resetStickyQueues } from './sticky-reset';
import { WORKFLOWS_PATH } from './workflow-bundle';

/** What a node's activities act on. */
export interface NodeTarget {
  netns: string | undefined;
  routeProtocol: number;
  bpfPinDir: string;
  /** `max_entries` of the blocklist LPM tries (prefixes) when they are created. */
  blocklistMaxEntries: { v4: number; v6: number };
  /** `max_entries` of the single-host hash maps (/32, /128) when they are created; the tries' sizes when not given. */
  blocklistHostMaxEntries?: { v4: number; v6: number };
  /**
   * The node's content-addressed blocklist store (referenced lists, rollback snapshots).
   * workers/main.ts passes FOS1_BLOCKLIST_STORE_DIR; tools and tests may leave it out and
   * get a folder under the system's temp dir named after the pin folder.
   */
  blocklistStoreDir?: string;
  /**
   * Where blocklist `{ file }` references may point (FOS1_FEED_DIRS) and the limits of reading
   * one; without `dirs`, no file reference is read.
   */
  feeds?: Partial<FeedLimits>;
  /** `max_entries` of each family's rate-limit map when it is created (16384 when not given). */
  rateLimitMaxEntries?: number;
  /** fos1's nftables table (family inet) for NAT; `fos1` when not given. */
  natTable?: string;
  /** The node's resolv.conf (its DNS servers are never blocked); /etc/resolv.conf when not given. */
  resolvConf?: string;
}

/** The node worker's dependencies: its node activities' and its health gates' (same namespace and pin folder). */
export type NodeWorkerDeps = NodeActivityDeps & {
  /** Where the gate activities measure; without it they answer inconclusive (nothing to measure). */
  gates?: NodeGateDeps;
};

/** Real backends for the node activities: iproute2 in the namespace, pinned maps in bpffs. */
export function createNodeDeps(target: NodeTarget, logger: Logger): NodeWorkerDeps {
  return {
    gates: { netns: target.netns, bpfPinDir: target.bpfPinDir },
    routes: new RouteTable(createIpRunner({ netns: target.netns }), target.routeProtocol),
    links: new LinkTable(createIpRunner({ netns: target.netns })),
    rules: new RuleTable(createIpRunner({ netns: target.netns }), target.routeProtocol),
    nat: new NatTable(createNftRunner({ netns: target.netns }), target.natTable ?? DEFAULT_NAT_TABLE),
    openBlocklist: () =>
      BlocklistMaps.open({
        pinDir: target.bpfPinDir,
        maxEntriesV4: target.blocklistMaxEntries.v4,
        maxEntriesV6: target.blocklistMaxEntries.v6,
        // Single hosts go to hash maps: O(1) inserts, and the layout the datapath programs read.
        hostMaps: {
          maxEntriesV4: (target.blocklistHostMaxEntries ?? target.blocklistMaxEntries).v4,
          maxEntriesV6: (target.blocklistHostMaxEntries ?? target.blocklistMaxEntries).v6,
        },
      }),
    openRateLimits: () => RateLimitMaps.open({ pinDir: target.bpfPinDir, maxEntries: target.rateLimitMaxEntries ?? 16_384 }),
    openZoneMaps: () => ZoneMaps.open({ pinDir: target.bpfPinDir, netns: target.netns }),
    protectedAddresses: { ip: createIpRunner({ netns: target.netns }), ...(target.resolvConf ? { resolvConf: target.resolvConf } : {}) },
    blocklistStore: new BlocklistStore(target.blocklistStoreDir ?? join(tmpdir(), `fos1-blocklists-${basename(target.bpfPinDir)}`), undefined, target.feeds ?? {}),
    logger,
  };
}

/** Sinks that turn workflow audit records into pino log lines (never during replay). */
export function auditSinks(logger: Logger): InjectedSinks<AuditSinks> {
  return {
    audit: {
      record: {
        fn: (info, record) => logger.info({ audit: record, workflowId: info.workflowId, runId: info.runId }, `audit ${record.step} ${record.result}`),
        callDuringReplay: false,
      },
    },
  };
}

/**
 * Worker options that decide how fast work moves on after a worker dies (issue 16; measured
 * in test/chaos/RESULTS.md, "Where the seconds go"; docs/change-workflow.md, "Recovery").
 *
 * `stickyQueueScheduleToStartTimeout`: a workflow's next task goes to the sticky queue of
 * the worker that ran its last one. When that worker was SIGKILLed, the server still counts
 * its sticky queue as polled for about 10 s after the last poll, and every task scheduled in
 * that time waits there for this time-out before it moves to the normal queue (the SDK's
 * default, 10 s, was most of a killed cluster worker's recovery). 3 s: on a live worker a
 * sticky task was picked up in 0.3 s (p50), 1.2 s (p90), 3.2 s (p99) on the 2-core test
 * machine at load average 26, and a task that misses the sticky worker is not lost or
 * wrong, it runs from the normal queue with a full-history replay (histories stay short:
 * long waits continue as new), so a miss costs a replay's CPU, never a result.
 *
 * The workflow task time-out (start-to-close, 10 s, set per workflow) is deliberately left
 * at the default: live workflow tasks took up to 5.4 s at that load (p99 4.1–4.5 s), so a
 * shorter one would time out live workers' tasks and make a loaded node slower still.
 */
export const WORKER_RECOVERY_OPTIONS = {
  stickyQueueScheduleToStartTimeout: '3 seconds',
} as const satisfies Partial<WorkerOptions>;

/** Options of {@link createWorkers}. */
export interface CreateWorkersOptions {
  connection: NativeConnection;
  namespace: string;
  nodeName: string;
  /** Also serve the cluster task queue. */
  clusterWorker: boolean;
  /** Reset the sticky queue of the running workflows of these queues at start (default true; workers/sticky-reset.ts). */
  resetStickyQueues?: boolean;
  /** Serve the node's task queue (default true; false for a cluster-only worker Deployment). */
  nodeWorker?: boolean;
  nodeDeps: NodeWorkerDeps;
  /** Where the cluster worker's `listInventory` reads the fleet (none: it fails, saying what to set). */
  inventory?: InventorySource;
  /**
   * Kubernetes client etc. for the cluster worker's Cilium policy activities and the change
   * workflow's cluster policy step; without it the policy activities are not registered and
   * a change carrying cluster policy is refused (ClusterPolicyUnavailable), nothing applied.
   */
  ciliumDeps?: ClusterPolicyActivityDeps;
  /** Kubernetes client and exceptions for the quarantine activities (they need the Cilium ones too). */
  quarantineDeps?: QuarantineActivityDeps;
  logger: Logger;
  /**
   * The key the API signs identity assertions with (FOS1_IDENTITY_KEY_FILE): with it the
   * cluster worker records API-submitted changes as verified; without it every change is
   * self-asserted.
   */
  identityKey?: Buffer;
  /**
   * The controllers' own key (FOS1_CONTROLLER_IDENTITY_KEY_FILE): with it the cluster worker
   * records the changes the CRD controllers start as verified (principal fos1-controller only).
   */
  controllerIdentityKey?: Buffer;
  /**
   * The cluster worker's enforcement guard (FOS1_GUARD_FILE): allow-lists, prefix bounds and
   * caps; the defaults of model/enforcement-guard.ts when not given. A function is asked each
   * time a workflow reads it (tests change it between cases).
   */
  guard?: GuardConfig | (() => GuardConfig);
  /**
   * The durable audit store and the revision store the cluster worker appends to
   * (workers/audit.ts opens them from FOS1_AUDIT_*). Required with `clusterWorker`: every
   * workflow waits for its audit records to be stored before it ends.
   */
  audit?: { audit: AuditStore; revisions: RevisionStore };
  /** The approval policy file (FOS1_APPROVAL_POLICY_FILE, docs/approvals.md); without it nothing needs approval and no window holds a change. */
  approvalPolicyFile?: string;
  /** The ApprovalPolicy object to read instead of a file (FOS1_APPROVAL_POLICY_NAME, a cluster is configured). */
  approvalPolicyObject?: ApprovalPolicyObjectSource;
  /** A prebuilt bundle, as code (tests build one per file) or a file (FOS1_WORKFLOW_BUNDLE); otherwise workflows/worker-entry.ts is bundled (workers/workflow-bundle.ts). */
  workflowBundle?: WorkflowBundle | WorkflowBundlePath;
  /**
   * Traces (telemetry/tracing.ts): workflow and activity interceptors and the workflow span
   * sink. A prebuilt `workflowBundle` must then include TRACING_WORKFLOW_INTERCEPTOR_MODULES.
   */
  tracing?: Tracing;
}

/** Creates the workers this process runs. Run them with `Promise.all(workers.map(w => w.run()))`. */
export async function createWorkers(options: CreateWorkersOptions): Promise<Worker[]> {
  const { connection, namespace, nodeName, logger } = options;
  const workflowSource = options.workflowBundle
    ? { workflowBundle: options.workflowBundle }
    : { workflowsPath: WORKFLOWS_PATH };
  // Audit records become log lines; workflow counts become metrics (metrics/registry.ts);
  // with tracing, workflow spans go to its span processor.
  const sinks = { ...auditSinks(logger), ...metricsSinks(), ...(options.tracing ? tracingSinks(options.tracing) : {}) };
  const interceptors = options.tracing
    ? { interceptors: { activity: tracingActivityInterceptors(), ...(options.workflowBundle ? {} : { workflowModules: TRACING_WORKFLOW_INTERCEPTOR_MODULES }) } }
    : {};
  const workers: Worker[] = [];
  if (options.nodeWorker ?? true) {
    workers.push(
      await Worker.create({
        connection,
        namespace,
        taskQueue: nodeTaskQueue(nodeName),
        ...workflowSource,
        activities: {
          ...createNodeActivities(options.nodeDeps),
          ...(options.nodeDeps.gates
            ? createNodeGateActivities(options.nodeDeps.gates)
            : unavailableNodeGateActivities(`node worker ${nodeName} was built without gate dependencies (createNodeDeps provides them)`)),
        },
        sinks,
        ...interceptors,
        // Node activities change kernel state one change at a time; serialising them on a
        // node keeps two changes from interleaving their route and map updates.
        maxConcurrentActivityTaskExecutions: 1,
        ...WORKER_RECOVERY_OPTIONS,
      }),
    );
  }
  if (options.clusterWorker) {
    if (!options.audit) throw new Error('the cluster worker needs the audit store (createWorkers option `audit`; workers/audit.ts opens it)');
    const clusterActivities = {
      ...createIdentityActivities({ identityKey: options.identityKey, controllerIdentityKey: options.controllerIdentityKey }),
      ...createAuditActivities({ store: options.audit.audit, logger }),
      ...createRevisionActivities({ store: options.audit.revisions, logger }),
      ...createEnforcementConfigActivities({ guard: options.guard ?? guardConfigSchema.parse({}) }),
      ...createClusterGateActivities(),
      ...createInventoryActivities(options.inventory ?? { kind: 'none' }),
      ...createApprovalActivities({ policyFile: options.approvalPolicyFile, policyObject: options.approvalPolicyObject }),
      ...(options.ciliumDeps ? createCiliumActivities(options.ciliumDeps) : {}),
      ...(options.ciliumDeps
        ? createClusterPolicyActivities(options.ciliumDeps)
        : unavailableClusterPolicyActivities('this cluster worker has no kubeconfig (FOS1_KUBECONFIG unset)')),
      ...(options.quarantineDeps && options.ciliumDeps
        ? createQuarantineActivities(options.quarantineDeps)
        : unavailableQuarantineActivities('quarantine needs Kubernetes: this cluster worker has no kubeconfig (FOS1_KUBECONFIG)')),
    };
    workers.push(await Worker.create({ connection, namespace, taskQueue: CLUSTER_TASK_QUEUE, ...workflowSource, activities: clusterActivities, sinks, ...interceptors, ...WORKER_RECOVERY_OPTIONS }));
  }
  // A restarted worker: the running workflows of its queues go to the normal queue at once
  // instead of waiting out the sticky time-out of the process it replaces (workers/sticky-reset.ts).
  // In the background: start-up does not wait for it, and it never fails start-up.
  if (options.resetStickyQueues ?? true) void resetStickyQueues(connection, namespace, workers.map((w) => w.options.taskQueue), logger);
  return workers;
}
