/**
 * The chaos harness (issue 16): real Temporal dev server with its history in a SQLite file (so
 * it can be restarted where it was), real network namespaces and pinned maps, and the node and
 * cluster workers as child processes (test/chaos/chaos-worker.ts, spawned with argv) that it
 * stops at an exact step of the node workflow and SIGKILLs there.
 *
 * A *cell* is one change on one node with one fault at one step. Cells of a round run at once
 * (each on its own node), so the minutes a fault may cost overlap instead of adding up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { INGEST_CHANNEL_ARGS } from '../../ingest/config';
import { tsToMs } from '@temporalio/common/lib/time';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createIpRunner } from '../../activities/system/ip-runner';
import { DEFAULT_ROUTE_PROTOCOL, RouteTable } from '../../activities/system/route-table';
import { RuleTable } from '../../activities/system/rule-table';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { RateLimitMaps } from '../../bpf/ratelimit-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { eventually } from '../helpers/eventually';
import { startTemporal } from '../helpers/temporal';
import { buildWorkflowBundle } from '../../scripts/build-workflow-bundle';
import type { ChangeStatus } from '../../workflows/change';
import type { KubeConnection } from '../../k8s/client';
import type { ChaosBehaviour, ChaosClusterBehaviour, ChaosNodeSpec, ChaosStop, ChaosWorkerSpec, ClusterStep } from './chaos-worker';

const REPO = join(__dirname, '..', '..');
const ENTRY = join(__dirname, 'chaos-worker.ts');
/** Capacity of each test map: small, so creating 20 nodes' maps costs little kernel memory. */
export const MAP_ENTRIES = 1024;
/** Route table of the network change's policy rule. */
const RULE_TABLE = 100;

/** The kinds of change the matrix covers. */
export type ChangeKind = 'network' | 'blocklist-patch' | 'blocklist-ref' | 'ratelimits';
export const CHANGE_KINDS: readonly ChangeKind[] = ['network', 'blocklist-patch', 'blocklist-ref', 'ratelimits'];
/** The faults. */
export type Fault = 'node-worker SIGKILL' | 'cluster-worker SIGKILL' | 'Temporal restart' | 'kube-apiserver down' | 'none (each activity twice)';

/** The node workflow's steps a change of each kind goes through (failVerify: only on the rollback path). */
export function stepsOf(kind: ChangeKind): { stop: ChaosStop; failVerify: boolean }[] {
  const subsystems = kind === 'network' ? ['routes', 'rules'] : kind === 'ratelimits' ? ['ratelimits'] : ['blocklist'];
  const cells: { stop: ChaosStop; failVerify: boolean }[] = [{ stop: { step: 'snapshot', when: 'before' }, failVerify: false }];
  // After the apply ran and before it is reported is the dangerous side of an apply: the kernel
  // changed, the history does not know. The network change's second apply is stopped before it
  // runs (the first already changed the node), so both sides are covered.
  subsystems.forEach((s, i) => cells.push({ stop: { step: `apply ${s}`, when: i === 0 ? 'after' : 'before' }, failVerify: false }));
  cells.push({ stop: { step: 'verify', when: 'before' }, failVerify: false });
  // Restores run newest first; the last one is stopped after it ran (the node is already restored, the history does not know).
  [...subsystems].reverse().forEach((s, i, all) => cells.push({ stop: { step: `restore ${s}`, when: i === all.length - 1 ? 'after' : 'before' }, failVerify: true }));
  return cells;
}

/** A node of the harness: a namespace, a pin folder, a store, a worker group. */
export interface ChaosNode {
  name: string;
  ns: TestNamespace;
  pinDir: string;
  storeDir: string;
  group: string;
}

/** What one cell found. */
export interface CellResult {
  fault: Fault;
  kind: ChangeKind;
  step: string;
  node: string;
  phase: string;
  /** `applied` + state equals the plan, `rolled-back` + state equals the snapshot, or what went wrong. */
  converged: boolean;
  detail: string;
  /** From the worker/server back to the change's end, ms (undefined without a fault). */
  recoveryMs: number | undefined;
  /** From the kill (or the server's stop) to the change's end, ms. */
  faultToEndMs: number | undefined;
  /** From the change's start to its end, ms. */
  totalMs: number;
}

/** A running worker process. */
interface Group {
  name: string;
  cluster: boolean;
  nodes: ChaosNodeSpec[];
  child?: ChildProcess;
  exited?: Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the server is restarted on it). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The harness: server, nodes, worker processes, and the read-back of each kind of change. */
export class ChaosHarness {
  env!: TestWorkflowEnvironment;
  readonly dir = mkdtempSync(join(tmpdir(), 'fos1-chaos-'));
  readonly feedDir = join(this.dir, 'feeds');
  private readonly id = randomBytes(3).toString('hex');
  private readonly dbFilename = join(this.dir, 'temporal.db');
  private port = 0;
  private readonly bundlePath = join(this.dir, 'workflow-bundle.js');
  readonly nodes = new Map<string, ChaosNode>();
  private readonly groups = new Map<string, Group>();
  private controlDir = '';
  private readonly started = new Set<string>();
  private rounds = 0;
  /** The Kubernetes API the cluster worker's cluster policy activities use (set before its process starts); none: no Cilium step. */
  kube?: KubeConnection;

  /**
   * The harness's own client, on a connection that outlives server restarts: no gRPC retry
   * interceptor (a retry timer left on the test environment's client fires on a shut channel
   * once that client closes with the server, and crashes the process; the harness retries
   * itself) and a short reconnect back-off (ingest/config.ts INGEST_CHANNEL_ARGS).
   */
  client!: Client;
  private connection?: Connection;

  /** Starts the server and bundles the workflows once (the children load the bundle). */
  async start(): Promise<void> {
    mkdirSync(this.feedDir, { recursive: true });
    this.port = await freePort();
    this.env = await startTemporal({ dbFilename: this.dbFilename, port: this.port });
    this.connection = await Connection.connect({ address: `127.0.0.1:${this.port}`, channelArgs: { ...INGEST_CHANNEL_ARGS }, interceptors: [] });
    this.client = new Client({ connection: this.connection, namespace: this.env.namespace ?? 'default' });
    // As a production worker with FOS1_WORKFLOW_BUNDLE: built by the script, loaded from the file.
    await buildWorkflowBundle(this.bundlePath);
  }

  /** Creates a node (namespace, pin folder, store) served by worker group `group`. */
  addNode(name: string, group: string): ChaosNode {
    const node: ChaosNode = { name, ns: TestNamespace.create('fch'), pinDir: `/sys/fs/bpf/fos1-chaos-${this.id}-${name}`, storeDir: join(this.dir, `store-${name}`), group };
    this.nodes.set(name, node);
    return node;
  }

  /** Stops the Temporal server and starts it again on the same port and SQLite file; returns when it stopped and when it was back. */
  async restartTemporal(): Promise<{ faultAt: number; backAt: number }> {
    const faultAt = Date.now();
    await this.env.teardown();
    this.env = await startTemporal({ dbFilename: this.dbFilename, port: this.port });
    return { faultAt, backAt: Date.now() };
  }

  /**
   * Starts a round: a fresh control folder and each node's behaviour (`specs`; a node not in it
   * behaves normally), and every worker process not yet running (the cluster worker's in
   * `clusterGroup`). Processes live on from round to round.
   */
  async startRound(specs: Map<string, Omit<ChaosBehaviour, 'controlDir'>>, options: { clusterGroup: string }): Promise<void> {
    this.controlDir = join(this.dir, `round-${++this.rounds}`);
    mkdirSync(this.controlDir);
    for (const node of this.nodes.values()) {
      const behaviour: ChaosBehaviour = { controlDir: this.controlDir, ...(specs.get(node.name) ?? {}) };
      writeFileSync(join(this.dir, `behaviour-${node.name}.json`), JSON.stringify(behaviour));
    }
    if (!this.groups.has(options.clusterGroup)) this.groups.set(options.clusterGroup, { name: options.clusterGroup, cluster: true, nodes: [] });
    for (const node of this.nodes.values()) {
      const group = this.groups.get(node.group) ?? { name: node.group, cluster: false, nodes: [] };
      if (!group.nodes.some((n) => n.name === node.name)) group.nodes.push({ name: node.name, netns: node.ns.name, pinDir: node.pinDir, storeDir: node.storeDir, feedDir: this.feedDir });
      this.groups.set(node.group, group);
    }
    await Promise.all([...this.groups.values()].filter((g) => !g.child).map((g) => this.spawnGroup(g)));
  }

  /** Spawns a group's process and waits until every worker in it runs; returns when it did. */
  private async spawnGroup(group: Group): Promise<number> {
    const spec: ChaosWorkerSpec = {
      temporalAddress: `127.0.0.1:${this.port}`,
      namespace: this.env.namespace ?? 'default',
      bundlePath: this.bundlePath,
      controlRoot: this.dir,
      cluster: group.cluster,
      nodes: group.nodes,
      mapEntries: MAP_ENTRIES,
      ...(group.cluster && this.kube ? { kube: this.kube } : {}),
    };
    const specFile = join(this.dir, `spec-${group.name}.json`);
    writeFileSync(specFile, JSON.stringify(spec));
    // Node itself with tsx's loader (not the tsx CLI, which runs the script in a grandchild that
    // a SIGKILL of the CLI would leave running).
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, specFile], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env } });
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    group.child = child;
    group.exited = new Promise<void>((resolve) =>
      child.once('exit', () => {
        process.off('exit', killOnExit);
        resolve();
      }),
    );
    const ready = join(this.dir, `ready.${child.pid}`);
    await eventually(
      () => {
        if (child.exitCode !== null) throw new Error(`worker group ${group.name} exited during start-up (code ${child.exitCode})`);
        return existsSync(ready);
      },
      (running) => running,
      `worker group ${group.name} running`,
      300_000,
    );
    return Date.now();
  }

  /** The group's process, SIGKILLed; resolves once it is gone. */
  async kill(groupName: string): Promise<void> {
    const group = this.groups.get(groupName);
    if (!group?.child) throw new Error(`no worker group ${groupName}`);
    group.child.kill('SIGKILL');
    await group.exited;
  }

  /** SIGKILLs the group's process and starts it again (same spec); returns when it was killed and when the new one ran. */
  async killAndRestart(groupName: string): Promise<{ faultAt: number; backAt: number }> {
    const faultAt = Date.now();
    await this.kill(groupName);
    return { faultAt, backAt: await this.spawnGroup(this.groups.get(groupName) as Group) };
  }

  /** Whether the node's interceptor has stopped at its step. */
  stopped(node: string): boolean {
    return existsSync(join(this.controlDir, `${node}.stopped`));
  }

  async waitStopped(nodes: string[], ms = 300_000): Promise<void> {
    await eventually(() => nodes.filter((n) => !this.stopped(n)), (left) => left.length === 0, `nodes ${nodes.join(', ')} stopped at their steps (the list: those not yet)`, ms);
  }

  /** Lets a stopped node go on. */
  release(node: string): void {
    writeFileSync(join(this.controlDir, `${node}.release`), '');
  }

  /**
   * The cluster worker's Kubernetes client's behaviour in the current round (call after
   * startRound): per change workflow id, a name for its markers and the cluster policy step to
   * stop at (chaos-worker.ts ChaosClusterBehaviour).
   */
  setClusterBehaviour(changes: Record<string, { name: string; stop?: ClusterStep }>): void {
    const behaviour: ChaosClusterBehaviour = { controlDir: this.controlDir, changes };
    writeFileSync(join(this.dir, 'behaviour-cluster.json'), JSON.stringify(behaviour));
  }

  /** Whether the change named `name` stands at its cluster policy step. */
  clusterStopped(name: string): boolean {
    return existsSync(join(this.controlDir, `cluster-${name}.stopped`));
  }

  /** Lets a change stopped at its cluster policy step go on. */
  releaseCluster(name: string): void {
    writeFileSync(join(this.controlDir, `cluster-${name}.release`), '');
  }

  /** How many of the change's requests to the apiserver found it down, so far this round. */
  unreachableCount(name: string): number {
    const file = join(this.controlDir, `cluster-${name}.unreachable`);
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
  }

  /** Starts a change; its workflow id follows from its id. */
  async startChange(request: ChangeRequestInput): Promise<string> {
    const workflowId = changeWorkflowId(request.id);
    // A dev server on an overloaded machine has answered NamespaceNotFound for a moment (its
    // namespace cache refresh timed out against SQLite), and a start can meet a restart: ask
    // again, bounded; a start that had gone through answers "already started".
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await this.client.workflow.start('changeWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId, args: [request] });
        break;
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) break;
        if (Date.now() > deadline) throw err;
        await sleep(1000);
      }
    }
    this.started.add(workflowId);
    return workflowId;
  }

  /**
   * Terminates every change this harness started that is still running (its node workflows go
   * with it: the parent-close policy), so a failed round leaves nothing that moves the next
   * round's nodes. A terminated change may leave its node half-changed; the next round reads
   * every node's state before it starts, so that is its snapshot.
   */
  async terminateLeftovers(): Promise<string[]> {
    const left: string[] = [];
    for (const workflowId of this.started) {
      const handle = this.client.workflow.getHandle(workflowId);
      const running = await handle.describe().then((d) => d.status.name === 'RUNNING', () => false);
      if (running) {
        left.push(workflowId);
        await handle.terminate('chaos harness: the round ended without this change').catch(() => undefined);
      }
    }
    this.started.clear();
    return left;
  }

  /** The change's final status (a failed change carries it in its failure's details). */
  async result(workflowId: string, ms: number): Promise<ChangeStatus> {
    // The harness's client reconnects after a server restart; a call that broke is asked again.
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        const outcome = await this.client.workflow.getHandle(workflowId).result();
        return outcome as ChangeStatus;
      } catch (err) {
        const details = (err as { cause?: { details?: unknown[] } }).cause?.details;
        if (details?.[0] && typeof (details[0] as ChangeStatus).phase === 'string') return details[0] as ChangeStatus;
        if (err instanceof WorkflowFailedError) throw err;
        // The connection broke under a restart: ask again until the deadline.
        if (Date.now() > deadline) throw err;
        await sleep(250);
      }
    }
  }

  /**
   * Where a cell's seconds went: the history events of the change workflow and of every child
   * it started (waves, node workflows), in time order, relative to `zero` (the worker back),
   * with what explains a wait — the task queue a workflow task was scheduled on (sticky or
   * normal), a time-out's type, an activity's name and attempt. Written per cell when
   * FOS1_CHAOS_TIMELINE names a folder (RESULTS.md, "Where the seconds go").
   */
  async timeline(workflowId: string, zero: number): Promise<string[]> {
    const { EventType, TaskQueueKind, TimeoutType } = temporal.api.enums.v1;
    const lines: { at: number; text: string }[] = [];
    const seen = new Set<string>();
    const visit = async (id: string, runId: string | undefined, label: string): Promise<void> => {
      if (seen.has(`${id}/${runId ?? ''}`)) return;
      seen.add(`${id}/${runId ?? ''}`);
      const history = await this.client.workflow.getHandle(id, runId).fetchHistory();
      const children: { id: string; runId: string }[] = [];
      const activities = new Map<number, string>();
      for (const e of history.events ?? []) {
        const type = EventType[e.eventType ?? 0]?.replace(/^EVENT_TYPE_/, '') ?? String(e.eventType);
        let detail = '';
        if (e.workflowTaskScheduledEventAttributes) {
          const q = e.workflowTaskScheduledEventAttributes.taskQueue;
          detail = `${q?.kind === TaskQueueKind.TASK_QUEUE_KIND_STICKY ? 'sticky' : 'normal'} queue, attempt ${e.workflowTaskScheduledEventAttributes.attempt ?? 1}`;
        } else if (e.workflowTaskTimedOutEventAttributes) {
          detail = TimeoutType[e.workflowTaskTimedOutEventAttributes.timeoutType ?? 0] ?? '';
        } else if (e.workflowTaskFailedEventAttributes) {
          detail = e.workflowTaskFailedEventAttributes.failure?.message?.split('\n')[0] ?? '';
        } else if (e.activityTaskScheduledEventAttributes) {
          const name = `${e.activityTaskScheduledEventAttributes.activityType?.name ?? '?'}`;
          activities.set(Number(e.eventId), name);
          detail = name;
        } else if (e.activityTaskStartedEventAttributes) {
          detail = `${activities.get(Number(e.activityTaskStartedEventAttributes.scheduledEventId)) ?? '?'} attempt ${e.activityTaskStartedEventAttributes.attempt ?? 1}`;
        } else if (e.activityTaskCompletedEventAttributes) {
          detail = activities.get(Number(e.activityTaskCompletedEventAttributes.scheduledEventId)) ?? '?';
        } else if (e.activityTaskTimedOutEventAttributes) {
          const a = e.activityTaskTimedOutEventAttributes;
          detail = `${activities.get(Number(a.scheduledEventId)) ?? '?'} ${TimeoutType[a.failure?.timeoutFailureInfo?.timeoutType ?? 0] ?? ''}`;
        } else if (e.activityTaskFailedEventAttributes) {
          detail = `${activities.get(Number(e.activityTaskFailedEventAttributes.scheduledEventId)) ?? '?'}: ${e.activityTaskFailedEventAttributes.failure?.message?.split('\n')[0] ?? ''}`;
        } else if (e.markerRecordedEventAttributes) {
          detail = e.markerRecordedEventAttributes.markerName ?? '';
        } else if (e.childWorkflowExecutionStartedEventAttributes?.workflowExecution) {
          const x = e.childWorkflowExecutionStartedEventAttributes.workflowExecution;
          children.push({ id: x.workflowId as string, runId: x.runId as string });
          detail = x.workflowId ?? '';
        } else if (e.workflowExecutionContinuedAsNewEventAttributes) {
          children.push({ id, runId: e.workflowExecutionContinuedAsNewEventAttributes.newExecutionRunId as string });
        }
        lines.push({ at: tsToMs(e.eventTime), text: `${label} ${type}${detail ? ` (${detail})` : ''}` });
      }
      for (const c of children) await visit(c.id, c.runId, c.id === id ? label : c.id.split('/').slice(-2).join('/'));
    };
    await visit(workflowId, undefined, 'change');
    return lines.sort((a, b) => a.at - b.at).map((l) => `${((l.at - zero) / 1000).toFixed(2).padStart(8)} s  ${l.text}`);
  }

  // --- the kinds of change: the request, and the node's state read back ---

  /** The change request of a kind, unique per `salt` (so every round changes something). */
  request(kind: ChangeKind, node: string, salt: number, targets: string[] = [node]): { request: ChangeRequestInput; added: string[] } {
    const id = `chaos-${kind}-${node}-${salt}-${randomBytes(2).toString('hex')}`;
    const base = { id, author: 'chaos', reason: 'fault injection', targets };
    // Distinct keys for every salt below 30,000: a later change never rewrites an earlier one's.
    const hi = (salt >> 8) % 100;
    const lo = salt & 255;
    const octet = (salt % 250) + 1;
    switch (kind) {
      case 'network': {
        const destination = `10.${100 + hi}.${lo}.0/24`;
        const priority = 1000 + (salt % 30_000);
        return {
          request: { ...base, patch: { routes: { upsert: [{ destination, gateway: LAN_GATEWAY_V4 }] }, rules: { upsert: [{ priority, from: destination, table: RULE_TABLE }] } } } as ChangeRequestInput,
          added: [`route ${destination} table 254`, `rule ${priority} from ${destination} table ${RULE_TABLE}`],
        };
      }
      case 'blocklist-patch': {
        const cidr = `100.${64 + (hi % 64)}.${lo}.7/32`;
        return { request: { ...base, patch: { blocklist: { upsert: [{ cidr, reason: 'chaos' }] } } } as ChangeRequestInput, added: [`block ${cidr}`] };
      }
      case 'blocklist-ref': {
        // A whole list by reference replaces the blocklist: 200 hosts and 20 prefixes.
        const lines = [...Array.from({ length: 200 }, (_, i) => `198.51.${octet % 100}.${i + 1}`), ...Array.from({ length: 20 }, (_, i) => `10.${200 + (i % 50)}.${octet}.0/24`)];
        const file = join(this.feedDir, `list-${node}-${salt}.txt`);
        writeFileSync(file, `${lines.join('\n')}\n`);
        return { request: { ...base, patch: { blocklist: { replaceRef: { file } } } } as ChangeRequestInput, added: lines.map((l) => `block ${l.includes('/') ? l : `${l}/32`}`) };
      }
      case 'ratelimits': {
        const cidr = `198.19.${hi}.${lo}/32`;
        const pps = 100 + (salt % 10_000);
        return { request: { ...base, patch: { rateLimits: { upsert: [{ cidr, pps, burst: pps, reason: 'chaos' }] } } } as ChangeRequestInput, added: [`limit ${cidr} ${pps}/s burst ${pps}`] };
      }
    }
  }

  /** What a change of this kind touches on the node, read back from the kernel, sorted. */
  async readState(kind: ChangeKind, node: string): Promise<string[]> {
    const n = this.nodes.get(node) as ChaosNode;
    const out: string[] = [];
    if (kind === 'network') {
      const ip = createIpRunner({ netns: n.ns.name });
      for (const r of await new RouteTable(ip, DEFAULT_ROUTE_PROTOCOL).read()) out.push(`route ${r.destination} table ${r.table}`);
      for (const r of await new RuleTable(ip, DEFAULT_ROUTE_PROTOCOL).read()) out.push(`rule ${r.priority} from ${r.from ?? 'all'} table ${r.table}`);
    } else if (kind === 'ratelimits') {
      const maps = RateLimitMaps.open({ pinDir: n.pinDir, maxEntries: 16_384 });
      try {
        for (const l of maps.readAll()) out.push(`limit ${l.cidr} ${l.pps}/s burst ${l.burst}`);
      } finally {
        maps.close();
      }
    } else {
      const maps = BlocklistMaps.open({ pinDir: n.pinDir, maxEntriesV4: MAP_ENTRIES, maxEntriesV6: MAP_ENTRIES, hostMaps: { maxEntriesV4: MAP_ENTRIES, maxEntriesV6: MAP_ENTRIES } });
      try {
        for (const e of maps.readAll()) out.push(`block ${e.cidr}`);
      } finally {
        maps.close();
      }
    }
    return out.sort();
  }

  /** The state a change of this kind plans from `before` (replace for a blocklist by reference, add otherwise). */
  planned(kind: ChangeKind, before: string[], added: string[]): string[] {
    if (kind === 'blocklist-ref') return [...new Set(added)].sort();
    if (kind === 'ratelimits') {
      const cidrs = new Set(added.map((a) => a.split(' ')[1]));
      return [...before.filter((b) => !cidrs.has(b.split(' ')[1])), ...added].sort();
    }
    return [...new Set([...before, ...added])].sort();
  }

  /** Stops every worker process (SIGTERM, then SIGKILL if one hangs). */
  async stopGroups(): Promise<void> {
    await Promise.all(
      [...this.groups.values()].map(async (g) => {
        if (!g.child || g.child.exitCode !== null || g.child.signalCode !== null) return;
        g.child.kill('SIGTERM');
        const timer = setTimeout(() => g.child?.kill('SIGKILL'), 10_000);
        await g.exited;
        clearTimeout(timer);
      }),
    );
    this.groups.clear();
  }

  /** Removes everything: processes, server, namespaces, pinned maps, files. */
  async destroy(): Promise<void> {
    await this.stopGroups();
    await this.connection?.close();
    await this.env?.teardown();
    for (const n of this.nodes.values()) {
      removePinnedBlocklist(n.pinDir);
      rmSync(n.pinDir, { recursive: true, force: true });
      try {
        n.ns.destroy();
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The process id of a worker group (undefined when it is not running). */
  pidOf(groupName: string): number | undefined {
    const child = this.groups.get(groupName)?.child;
    return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
  }

  /** Names of the worker groups. */
  groupNames(): string[] {
    return [...this.groups.keys()];
  }

  /** The server's port (stable across restarts). */
  get temporalPort(): number {
    return this.port;
  }

  /** The Temporal dev server's process id, found by its port on its command line. */
  temporalPid(): number | undefined {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        const at = argv.indexOf('--port');
        if (argv.some((a) => a.endsWith('temporal')) && at >= 0 && argv[at + 1] === String(this.port)) return Number(entry);
      } catch {
        // the process ended while we looked
      }
    }
    return undefined;
  }

  /** Control files of the current round (for a failure message). */
  markers(): string[] {
    return this.controlDir && existsSync(this.controlDir) ? readdirSync(this.controlDir) : [];
  }
}

/** Checks a cell's end: applied and equal to the plan, or rolled back and equal to the snapshot. */
export function judge(phase: string, after: string[], before: string[], planned: string[]): { converged: boolean; detail: string } {
  const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (phase === 'applied') return same(after, planned) ? { converged: true, detail: 'state equals the plan' } : { converged: false, detail: `applied, but the state differs from the plan: ${diff(after, planned)}` };
  if (phase === 'rolled-back') return same(after, before) ? { converged: true, detail: 'state equals the snapshot' } : { converged: false, detail: `rolled back, but the state differs from the snapshot: ${diff(after, before)}` };
  return { converged: false, detail: `ended ${phase}` };
}

function diff(actual: string[], expected: string[]): string {
  const extra = actual.filter((a) => !expected.includes(a));
  const missing = expected.filter((e) => !actual.includes(e));
  return [...extra.slice(0, 3).map((e) => `+${e}`), ...missing.slice(0, 3).map((m) => `-${m}`)].join(', ') + (extra.length + missing.length > 6 ? ' …' : '');
}

/** A markdown table of cells (for RESULTS.md), by fault, change kind and step order. */
export function resultsTable(cells: CellResult[]): string {
  const secs = (ms: number | undefined) => (ms === undefined ? '–' : `${(ms / 1000).toFixed(1)} s`);
  const order = (c: CellResult) => {
    const steps = stepsOf(c.kind).map((s) => `${s.stop.step} (${s.stop.when})`);
    const i = steps.indexOf(c.step);
    return `${c.fault}|${CHANGE_KINDS.indexOf(c.kind)}|${String(i < 0 ? 99 : i).padStart(2, '0')}|${c.step}`;
  };
  const sorted = [...cells].sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  const rows = sorted.map((c) => `| ${c.fault} | ${c.step} | ${c.kind} | ${c.converged ? `${c.phase} ✓` : `**${c.phase}: ${c.detail}**`} | ${secs(c.recoveryMs)} | ${secs(c.faultToEndMs)} | ${secs(c.totalMs)} |`);
  return ['| Fault | Step (stopped there) | Change | Outcome (read back) | Back → end | Fault → end | Change total |', '|---|---|---|---|---:|---:|---:|', ...rows].join('\n');
}
