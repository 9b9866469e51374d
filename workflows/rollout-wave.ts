/**
 * One wave of a staged rollout, as a child of the change workflow (which stays small: a few
 * events per wave, whatever the fleet size). The wave owns its nodes' workflows and gates:
 *
 *   [datapath baseline per node] → node workflows, up to `concurrency` at once, each under
 *   its node's lock, holding → bake (gates measured at their interval; pause, resume,
 *   promote, extend-bake from the parent) → report `ready` → hold every node until the
 *   parent's decision: commit (nodes release their locks) or revert (newest first, each
 *   restores its snapshot and reads it back)
 *
 * The wave tells the parent where it stands with `waveReport` signals (applying done, gate
 * verdicts at most every few seconds, gate failed / inconclusive, ready, failed); the parent
 * answers with `waveControl` (operator controls) and `waveDecision`. Node workflows are this
 * workflow's children with REQUEST_CANCEL, and this workflow is the change workflow's with
 * the same policy: if anything above closes without deciding, held nodes restore themselves.
 *
 * `rolloutCheckWorkflow` re-measures gates over nodes after a rollback, to show the fleet
 * is healthy again.
 */
import {
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  patched,
  proxyActivities,
  proxySinks,
  setHandler,
  sleep,
  startChild,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { nodeDiffDigest } from '../model/approval-policy';
import type { AuditRecord } from '../model/audit';
import type { MetricsSinks } from '../model/metrics';
import type { NodePatch } from '../model/change-request';
import { FailureType, summariseFailure, type FailureSummary } from '../model/failures';
import { gateQueue, gateVerdict, type ClusterGateActivities, type DatapathBaseline, type GatePhase, type GateSpec, type GateVerdict, type Measurement, type NodeGateActivities } from '../model/gates';
import { nodeLockWorkflowId, nodeTaskQueue } from '../model/naming';
import type { NodeState } from '../model/node-state';
import type { PlannedWave } from '../model/rollout-strategy';
import { commitRevisions } from './revisions';
import { AuditTrail, isAlreadyStarted, LOCK_WAIT_PATCH, lockWaitDelayMs } from './support';
import { nodeChangeWorkflow, nodeDecisionSignal, nodeReadySignal, type NodeChangeResult } from './node-change';
import { nodeRestoreRetryingSignal, type RestoreRetryStatus } from './node-recovery';

/**
 * Diff lines per node a wave reports upwards, at least (the node's own result keeps its full,
 * already bounded, diff). A wave shares {@link MAX_DIFF_LINES_PER_WAVE} among its nodes, so a
 * small change shows each node's whole diff (up to the node's own 1,001 lines) and a wave of
 * 200 nodes still reports a bounded amount.
 */
export const MAX_DIFF_LINES_PER_NODE = 20;
/** Diff lines a wave reports upwards in all, shared among its nodes. */
export const MAX_DIFF_LINES_PER_WAVE = 2000;
/** Audit records per wave the summaries carry to the change workflow (the audit sink has every record). */
export const MAX_AUDIT_RECORDS_PER_WAVE = 200;
/** Least time between two gate-progress reports to the parent: bounds the parent's history. */
export const GATE_REPORT_INTERVAL_MS = 5000;

/** Waves, gate verdicts and lock waits for the worker's metrics (a sink: no command, nothing on replay). */
const { metrics } = proxySinks<MetricsSinks>();

/** Input of {@link rolloutWaveWorkflow}, built by the change workflow from the validated request and its plan. */
export interface WaveInput {
  changeId: string;
  author: string;
  /** The change's reason, for the revisions recorded at commit (absent in inputs from before revisions). */
  reason?: string;
  /** Who approved the change, for the revisions (absent when no approval was asked). */
  approvers?: string[];
  wave: PlannedWave;
  /** The specs of `wave.gates`, by name. */
  gates: Record<string, GateSpec>;
  desired?: NodeState;
  patch?: NodePatch;
  dryRun: boolean;
  /** Hold every node after it applied until the parent decides (see NodeChangeInput.hold). */
  hold: boolean;
  lockTimeoutMs: number;
  /** The rollout is paused as this wave starts: launch nothing until resumed. */
  paused?: boolean;
  /** A full promotion: no bake and no gates for this wave. */
  skipBake?: boolean;
}

/** Where one node of a wave stands. */
export type WaveNodePhase = 'pending' | 'waiting-for-lock' | 'applying' | 'holding' | 'reverting' | 'done';

/** One node as the wave reports it upwards (small: diffs capped, audit bounded per wave). */
export interface WaveNodeSummary {
  node: string;
  phase: WaveNodePhase;
  outcome: 'pending' | NodeChangeResult['outcome'];
  /** At most {@link MAX_DIFF_LINES_PER_NODE} lines; `diffLines` says how many there were. */
  diff: string[];
  diffLines: number;
  /** Hex SHA-256 of the whole diff's canonical JSON: the approval gate compares it with the approved plan (workflows/approval.ts). */
  diffDigest?: string;
  error?: FailureSummary;
  differences?: string[];
  /** This node's audit records (within the wave's budget). */
  audit: AuditRecord[];
  /** Records left out for the budget; the audit sink has them. */
  auditOmitted?: number;
  /** While the node's restore is retrying (workflows/node-recovery.ts): attempt, last error, next try. */
  restore?: RestoreRetryStatus;
}

/** What a wave is doing. */
export type WaveState =
  | 'pending'
  | 'skipped'
  | 'applying'
  | 'waiting-for-node'
  | 'baking'
  | 'paused'
  | 'gate-failed'
  | 'gate-inconclusive'
  | 'ready'
  | 'failed'
  | 'committing'
  | 'committed'
  | 'reverting'
  | 'restored'
  | 'restore-failed'
  | 'planned'
  | 'aborted';

/** Wave → parent. */
export interface WaveReport {
  index: number;
  state: WaveState;
  message: string;
  nodes?: WaveNodeSummary[];
  gates?: Record<string, GateVerdict>;
  /** While baking: when the bake ends (ISO 8601), paused time not counted. */
  bakeEndsAt?: string;
}

/** The wave's result: the final word on each of its nodes. */
export interface WaveResult {
  index: number;
  state: WaveState;
  message: string;
  nodes: WaveNodeSummary[];
  gates: Record<string, GateVerdict>;
}

/** Parent → wave: an operator control, forwarded. */
export interface WaveControl {
  action: 'pause' | 'resume' | 'promote' | 'extendBake';
  /** extendBake: seconds added to the bake. */
  seconds?: number;
  /** promote: skip this wave's bake and gates (a full promotion skips every later one too: the parent says so in their input). */
  full?: boolean;
}

/** Parent → wave: keep the change on every node, or restore them. */
export interface WaveDecision {
  decision: 'commit' | 'revert';
  reason: string;
}

export const waveReportSignal = defineSignal<[WaveReport]>('waveReport');
export const waveControlSignal = defineSignal<[WaveControl]>('waveControl');
export const waveDecisionSignal = defineSignal<[WaveDecision]>('waveDecision');
/** The wave's live view (the change workflow's `status` is updated at the wave's reports). */
export const waveStatusQuery = defineQuery<WaveResult>('waveStatus');

const cluster = proxyActivities<ClusterGateActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 2 } });

/** Node gate activities on `node`'s own task queue; a dead node answers with a time-out (inconclusive), not a hang. */
function nodeGates(node: string, spec?: GateSpec): NodeGateActivities {
  const seconds = Math.max(30, Math.ceil((spec?.intervalSeconds ?? 10) * 2 + 30));
  return proxyActivities<NodeGateActivities>({
    taskQueue: nodeTaskQueue(node),
    startToCloseTimeout: `${seconds}s`,
    scheduleToCloseTimeout: `${seconds * 2}s`,
    retry: { maximumAttempts: 2, initialInterval: '500ms' },
  });
}

/** Runs one wave. See the module comment. */
export async function rolloutWaveWorkflow(input: WaveInput): Promise<WaveResult> {
  const { wave } = input;
  // The wave's own records (the revisions it recorded); its nodes append theirs themselves.
  const trail = new AuditTrail(input.changeId, input.author);
  const parent = workflowInfo().parent;
  const parentHandle = parent ? getExternalWorkflowHandle(parent.workflowId, parent.runId) : undefined;
  const nodes = new Map<string, WaveNodeSummary>(wave.nodes.map((node) => [node, { node, phase: 'pending', outcome: 'pending', diff: [], diffLines: 0, audit: [] }]));
  const diffLinesPerNode = Math.max(MAX_DIFF_LINES_PER_NODE, Math.floor(MAX_DIFF_LINES_PER_WAVE / Math.max(1, wave.nodes.length)));
  const result: WaveResult = { index: wave.index, state: 'applying', message: 'applying', nodes: [...nodes.values()], gates: {} };
  const control = { paused: input.paused ?? false, promoted: input.skipBake ?? false, resumed: 0, extendMs: 0, version: 0 };
  /** The parent's decision (a holder: TypeScript would narrow a plain `let` across awaits). */
  const decided: { value?: WaveDecision } = {};
  const ready = new Map<string, NodeChangeResult>();
  const finished = new Map<string, NodeChangeResult>();
  const children = new Map<string, ChildWorkflowHandle<typeof nodeChangeWorkflow>>();
  /** Nodes in launch order: a revert restores them newest first. */
  const launched: string[] = [];
  let auditBudget = MAX_AUDIT_RECORDS_PER_WAVE;
  let bakeEndsAt: number | undefined;

  setHandler(waveStatusQuery, () => ({ ...result, nodes: [...nodes.values()] }));
  setHandler(nodeReadySignal, (r) => void ready.set(r.node, r));
  // A node's restore is retrying: kept in the node's summary and passed on at once, so the
  // change's status shows it whatever the change is waiting for.
  setHandler(nodeRestoreRetryingSignal, (r) => {
    const summary = nodes.get(r.node);
    if (!summary) return;
    summary.restore = r.restore;
    void parentHandle?.signal(nodeRestoreRetryingSignal, r).catch(() => undefined);
  });
  setHandler(waveDecisionSignal, (d) => {
    decided.value ??= d;
  });
  setHandler(waveControlSignal, (c) => {
    control.version++;
    if (c.action === 'pause') control.paused = true;
    else if (c.action === 'resume') {
      control.paused = false;
      control.resumed++;
    } else if (c.action === 'promote') {
      control.paused = false;
      control.promoted = true;
    } else control.extendMs += Math.max(0, c.seconds ?? 0) * 1000;
  });

  // ── baseline, before anything changes on the wave's nodes ──
  const baselines = new Map<string, DatapathBaseline>();
  const gateNames = Object.keys(input.gates);
  if (!input.dryRun && !control.promoted && gateNames.some((g) => input.gates[g]?.kind === 'datapath')) {
    await Promise.all(
      wave.nodes.map(async (node) => {
        try {
          baselines.set(node, await nodeGates(node).datapathBaseline());
        } catch {
          // No baseline: the datapath gate measures inconclusive on this node (never a pass).
        }
      }),
    );
  }

  // ── apply, up to `concurrency` nodes at once ──
  const queue = [...wave.nodes];
  const running = new Set<string>();
  /** Nodes waiting for their lock. */
  const waiting = new Set<string>();
  const failedNodes: string[] = [];
  const settle = (node: string) => {
    // The final result wins over the earlier `nodeReady` one.
    const r = finished.get(node) ?? ready.get(node);
    if (!r) return false;
    summarise(r, finished.has(node) ? 'done' : 'holding');
    return true;
  };
  while ((queue.length > 0 || running.size > 0) && !(failedNodes.length > 0 && running.size === 0)) {
    // Launch while there is room, nothing failed, no abort and no pause.
    while (queue.length > 0 && running.size < wave.concurrency && failedNodes.length === 0 && !decided.value && !control.paused) {
      const node = queue.shift() as string;
      running.add(node);
      void launch(node);
    }
    if (decided.value && running.size === 0) break;
    await condition(() => [...running].some((n) => nodeSettled(n)) || (running.size === 0 && (!!decided.value || failedNodes.length > 0)) || (!control.paused && running.size < wave.concurrency && queue.length > 0 && failedNodes.length === 0 && !decided.value));
    for (const node of [...running]) {
      if (!nodeSettled(node)) continue;
      running.delete(node);
      settle(node);
      const outcome = (finished.get(node) ?? ready.get(node))?.outcome;
      // A node whose lock wait the parent's decision ended is not a failure: it was told to stop.
      const stopped = outcome === 'not-applied' && decided.value !== undefined && !launched.includes(node);
      if ((outcome === 'rolled-back' || outcome === 'rollback-failed' || outcome === 'not-applied') && !stopped) failedNodes.push(node);
    }
  }

  // A dry run that could not plan on a node (an unreadable blocklist file, say) fails like
  // an apply that did: the operator must see it, not a "planned" with a node missing.
  if (input.dryRun && failedNodes.length === 0) return finish('planned', `dry run: planned on ${wave.nodes.length} node(s)`);

  if (failedNodes.length > 0 || decided.value) {
    const first = failedNodes[0];
    const why = first ? describeNodeFailure(nodes.get(first) as WaveNodeSummary) : `stopped: ${decided.value?.reason ?? 'revert'}`;
    if (first) {
      result.state = 'failed';
      result.message = why;
      await report({ state: 'failed', message: why, nodes: withoutAudit() });
    }
    await condition(() => decided.value !== undefined);
    return revertAll(decided.value?.reason ?? why, first ? 'failed' : 'aborted');
  }

  // ── bake, gates measuring ──
  if (!control.promoted && (wave.bakeSeconds > 0 || gateNames.length > 0)) {
    const outcome = await bake();
    if (outcome !== 'passed') return outcome;
  }
  setState('ready', `applied on ${wave.nodes.length} node(s)${gateNames.length > 0 && !control.promoted ? ', gates passed' : ''}`);
  // Nodes that do not hold have already released their locks: the result is the report.
  if (!input.hold) return finish('committed', result.message);
  await report({ state: 'ready', message: result.message, nodes: withoutAudit(), gates: result.gates });
  await condition(() => decided.value !== undefined);
  const verdict = decided.value as WaveDecision | undefined;
  if (verdict?.decision === 'commit') return commitAll(verdict.reason);
  return revertAll(verdict?.reason ?? 'revert', 'restored');

  function nodeSettled(node: string): boolean {
    return ready.has(node) || finished.has(node);
  }

  /** Starts a node's workflow under its lock id, waiting (with back-off, up to lockTimeout, or until a revert decision) while another change holds it. */
  async function launch(node: string): Promise<void> {
    const summary = nodes.get(node) as WaveNodeSummary;
    const waitStarted = Date.now();
    const deadline = waitStarted + input.lockTimeoutMs;
    let delay = 250;
    // Set at the first refusal: a start that never waited is not a lock wait.
    let waitingSince: number | undefined;
    for (;;) {
      try {
        summary.phase = 'applying';
        const child = await startChild(nodeChangeWorkflow, {
          taskQueue: nodeTaskQueue(node),
          // A dry run's node workflow is named after the change (`<change>/dry-run/<node>`), as before waves.
          workflowId: input.dryRun ? `${parent?.workflowId ?? workflowInfo().workflowId}/dry-run/${node}` : nodeLockWorkflowId(node),
          parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
          args: [{ changeId: input.changeId, author: input.author, node, ...(input.desired ? { desired: input.desired } : {}), ...(input.patch ? { patch: input.patch } : {}), dryRun: input.dryRun, hold: input.hold }],
        });
        children.set(node, child);
        launched.push(node);
        if (waitingSince !== undefined) metrics.lockWait('acquired', Date.now() - waitingSince);
        if (waiting.delete(node) && waiting.size === 0) await report({ state: 'applying', message: 'applying' });
        void child.result().then(
          (r) => void finished.set(node, r),
          (err: unknown) => void finished.set(node, crashed(node, err)),
        );
        return;
      } catch (err) {
        if (!isAlreadyStarted(err)) throw err;
        // An abort while waiting for the lock ends the wait: nothing was applied here.
        waitingSince ??= Date.now();
        if (decided.value || Date.now() >= deadline) {
          metrics.lockWait(decided.value ? 'aborted' : 'timed-out', Date.now() - waitingSince);
          waiting.delete(node);
          finished.set(node, busy(node, decided.value ? `stopped waiting for node ${node}: ${decided.value.reason}` : `node ${node} stayed busy with another change for ${input.lockTimeoutMs / 1000}s`));
          return;
        }
        summary.phase = 'waiting-for-lock';
        if (!waiting.has(node)) {
          waiting.add(node);
          // One report when the wave starts waiting (not one per node or retry: the parent's history stays small).
          if (waiting.size === 1) await report({ state: 'waiting-for-node', message: `waiting for node ${node}: another change holds it (workflow ${nodeLockWorkflowId(node)})` });
        }
        if (patched(LOCK_WAIT_PATCH)) {
          // Bounded history for waits of days: the pause grows with the time already waited (support.ts).
          await condition(() => decided.value !== undefined, Math.max(1, Math.min(delay, deadline - Date.now())));
          delay = lockWaitDelayMs(delay, Date.now() - waitStarted);
        } else {
          await condition(() => decided.value !== undefined, delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
    }
  }

  /** Bakes the wave; `passed`, or the wave's result when it ended otherwise (reverted on the parent's decision). */
  async function bake(): Promise<'passed' | WaveResult> {
    const measurements = new Map<string, Measurement[]>(); // `${gate}\u0000${node}` → measurements
    const nextDue = new Map<string, number>();
    /** Gates whose verdict of this round of measurements is counted (metrics), so each counts once. */
    const counted = new Set<string>();
    const resetGates = () => {
      measurements.clear();
      counted.clear();
      for (const gate of gateNames) nextDue.set(gate, Date.now());
    };
    resetGates();
    let remainingMs = wave.bakeSeconds * 1000;
    let lastReport = 0;
    /** Tell the parent at once: the bake started, resumed or was extended (its end moved). */
    let mustReport = true;
    let seenResumes = control.resumed;
    setState('baking', `baking for ${wave.bakeSeconds}s${gateNames.length > 0 ? ` with gates ${gateNames.join(', ')}` : ''}`);
    for (;;) {
      if (decided.value) return revertAll(decided.value.reason, 'aborted');
      if (control.promoted) {
        // Promote: the operator takes the wave as good now (gates measured so far are in the status).
        return 'passed';
      }
      if (control.paused) {
        remainingMs = bakeEndsAt !== undefined ? Math.max(0, bakeEndsAt - Date.now()) : remainingMs;
        bakeEndsAt = undefined;
        setState('paused', 'paused by an operator');
        await condition(() => !control.paused || decided.value !== undefined || control.promoted);
        if (control.resumed !== seenResumes) seenResumes = control.resumed;
        if (!decided.value && !control.promoted) setState('baking', 'resumed');
        mustReport = true;
        continue;
      }
      if (control.extendMs > 0) {
        remainingMs = (bakeEndsAt !== undefined ? Math.max(0, bakeEndsAt - Date.now()) : remainingMs) + control.extendMs;
        bakeEndsAt = undefined;
        control.extendMs = 0;
        mustReport = true;
      }
      bakeEndsAt ??= Date.now() + remainingMs;

      const verdicts = verdictsOf(measurements);
      result.gates = verdicts;
      for (const v of Object.values(verdicts)) {
        if (v.phase === 'running' || counted.has(v.gate)) continue;
        counted.add(v.gate);
        metrics.gateResult(wave.index, v.gate, v.kind, v.phase);
      }
      const phases = Object.values(verdicts).map((v) => v.phase);
      const bad = phases.includes('failure') ? 'failure' : phases.includes('inconclusive') ? 'inconclusive' : undefined;
      if (bad) {
        const failing = Object.values(verdicts).filter((v) => v.phase === bad);
        const state: WaveState = bad === 'failure' ? 'gate-failed' : 'gate-inconclusive';
        const message = `gate ${failing.map((v) => `${v.gate} ${bad === 'failure' ? 'failed' : 'was inconclusive'}${describeLast(v)}`).join('; ')}`;
        remainingMs = Math.max(0, bakeEndsAt - Date.now());
        bakeEndsAt = undefined;
        setState(state, message);
        await report({ state, message, nodes: withoutAudit(), gates: verdicts });
        // Wait for the parent: revert (rollback or abort), resume (measure again), promote (go on).
        await condition(() => decided.value !== undefined || control.resumed !== seenResumes || control.promoted);
        seenResumes = control.resumed;
        if (decided.value || control.promoted) continue;
        resetGates();
        setState('baking', 'resumed: measuring the gates again');
        mustReport = true;
        continue;
      }
      const gatesDone = phases.every((p) => p === 'success');
      if (Date.now() >= bakeEndsAt && gatesDone) return 'passed';

      if (mustReport || (Date.now() - lastReport >= GATE_REPORT_INTERVAL_MS && gateNames.length > 0)) {
        lastReport = Date.now();
        // The first report of a bake carries the nodes too: the parent last heard of them while
        // they were applying, and an operator watching the bake must see them holding, applied.
        const withNodes = mustReport;
        mustReport = false;
        await report({ state: 'baking', message: result.message, gates: verdicts, bakeEndsAt: new Date(bakeEndsAt).toISOString(), ...(withNodes ? { nodes: withoutAudit() } : {}) });
      }
      const due = gateNames.filter((g) => (nextDue.get(g) ?? 0) <= Date.now() && verdicts[g]?.phase === 'running');
      if (due.length > 0) {
        await Promise.all(due.map((gate) => measure(gate, measurements)));
        for (const gate of due) nextDue.set(gate, Date.now() + (input.gates[gate]?.intervalSeconds ?? 10) * 1000);
        continue;
      }
      const wakeAt = Math.min(bakeEndsAt, ...gateNames.filter((g) => verdicts[g]?.phase === 'running').map((g) => nextDue.get(g) ?? Infinity));
      const seen = control.version;
      await condition(() => control.version !== seen || decided.value !== undefined, Math.max(1, wakeAt - Date.now()));
    }
  }

  /** One measurement of `gate`: on every node (node kinds) or once on the cluster queue (Prometheus). */
  async function measure(gate: string, into: Map<string, Measurement[]>): Promise<void> {
    const spec = input.gates[gate] as GateSpec;
    const add = (node: string, m: Measurement) => {
      const key = `${gate}\u0000${node}`;
      into.set(key, [...(into.get(key) ?? []), m]);
    };
    const cannot = (err: unknown): Measurement => ({ at: new Date(Date.now()).toISOString(), result: 'inconclusive', detail: `could not measure: ${summariseFailure(err).message}` });
    if (gateQueue(spec) === 'cluster') {
      const m = await cluster.measurePrometheusGate({ name: gate, spec: spec as Extract<GateSpec, { kind: 'prometheus' }> }).catch(cannot);
      add('', m);
      return;
    }
    await Promise.all(
      wave.nodes.map(async (node) => {
        const baseline = baselines.get(node);
        const m = await nodeGates(node, spec)
          .measureGate({ name: gate, spec, ...(baseline ? { baseline } : {}) })
          .catch(cannot);
        add(node, { ...m, detail: `${node}: ${m.detail}` });
      }),
    );
  }

  /** Per gate: the worst node's verdict (failure, inconclusive, running, success), with its last measurements. */
  function verdictsOf(measurements: Map<string, Measurement[]>): Record<string, GateVerdict> {
    const out: Record<string, GateVerdict> = {};
    for (const gate of gateNames) {
      const spec = input.gates[gate] as GateSpec;
      const targets = gateQueue(spec) === 'cluster' ? [''] : wave.nodes;
      let worst: GateVerdict | undefined;
      for (const node of targets) {
        const v = gateVerdict(gate, spec, measurements.get(`${gate}\u0000${node}`) ?? []);
        if (!worst || RANK[v.phase] > RANK[worst.phase]) worst = v;
      }
      if (worst) out[gate] = worst;
    }
    return out;
  }

  function summarise(r: NodeChangeResult, phase: WaveNodePhase): void {
    const summary = nodes.get(r.node) as WaveNodeSummary;
    const fresh = r.audit.slice(summary.audit.length + (summary.auditOmitted ?? 0));
    const kept = fresh.slice(0, Math.max(0, auditBudget));
    auditBudget -= kept.length;
    Object.assign(summary, {
      phase,
      outcome: r.outcome,
      diff: r.diff.slice(0, diffLinesPerNode),
      diffLines: r.diff.length,
      // Pure computation (no command): replays of waves recorded before it are unaffected.
      diffDigest: nodeDiffDigest(r.diff),
      audit: [...summary.audit, ...kept],
      ...(fresh.length > kept.length ? { auditOmitted: (summary.auditOmitted ?? 0) + fresh.length - kept.length } : {}),
      ...(r.error ? { error: r.error } : {}),
      ...(r.rollbackDifferences ? { differences: r.rollbackDifferences.slice(0, MAX_DIFF_LINES_PER_NODE) } : {}),
    });
    // The node's final result: its restore is no longer retrying.
    if (phase === 'done') delete summary.restore;
  }

  /** Tells every held node to keep the change and waits until each has let go of its lock. */
  async function commitAll(reason: string): Promise<WaveResult> {
    setState('committing', reason);
    const held = launched.filter((n) => ready.has(n) && !finished.has(n));
    // Each node's revision, recorded while the nodes still hold their locks (workflows/revisions.ts).
    await commitRevisions(trail, { id: input.changeId, author: input.author, reason: input.reason ?? '', approvers: input.approvers ?? [] }, held.map((n) => ready.get(n)));
    await Promise.all(held.map((n) => children.get(n)?.signal(nodeDecisionSignal, { decision: 'commit', reason })));
    await condition(() => held.every((n) => finished.has(n)));
    for (const n of launched) settle(n);
    return finish('committed', `committed on ${launched.length} node(s)`);
  }

  /**
   * Restores every node that applied (waiting for those still applying), newest first, up to
   * `concurrency` at once; each restores its snapshot and reads it back.
   */
  async function revertAll(reason: string, endState: 'restored' | 'failed' | 'aborted'): Promise<WaveResult> {
    // A node still applying when the revert comes: wait for it to be ready (or to fail and roll itself back).
    await condition(() => launched.every((n) => nodeSettled(n)));
    setState('reverting', reason);
    const toRestore = [...launched].reverse().filter((n) => ready.has(n) && !finished.has(n));
    await CancellationScope.nonCancellable(async () => {
      for (let i = 0; i < toRestore.length; i += wave.concurrency) {
        const batch = toRestore.slice(i, i + wave.concurrency);
        for (const n of batch) (nodes.get(n) as WaveNodeSummary).phase = 'reverting';
        await Promise.all(batch.map((n) => children.get(n)?.signal(nodeDecisionSignal, { decision: 'revert', reason })));
        await condition(() => batch.every((n) => finished.has(n)));
      }
    });
    for (const n of launched) settle(n);
    const clean = [...nodes.values()].every((s) => s.outcome !== 'restore-failed' && s.outcome !== 'rollback-failed');
    const restored = toRestore.length;
    if (!clean) return finish('restore-failed', `${reason}; RESTORE INCOMPLETE on ${[...nodes.values()].filter((s) => s.outcome === 'restore-failed' || s.outcome === 'rollback-failed').map((s) => s.node).join(', ')}`);
    const state: WaveState = endState === 'failed' ? 'failed' : restored > 0 ? 'restored' : endState === 'aborted' ? 'aborted' : 'restored';
    return finish(state, `${reason}; ${restored} node(s) restored and verified against their snapshots`);
  }

  /** Node summaries for a report: the audit records travel once, in the wave's result. */
  function withoutAudit(): WaveNodeSummary[] {
    return [...nodes.values()].map((n) => ({ ...n, audit: [] }));
  }

  function setState(state: WaveState, message: string): void {
    result.state = state;
    result.message = message;
  }

  function finish(state: WaveState, message: string): WaveResult {
    setState(state, message);
    metrics.waveFinished(wave.index, state);
    return { ...result, nodes: [...nodes.values()] };
  }

  async function report(r: Omit<WaveReport, 'index'>): Promise<void> {
    await parentHandle?.signal(waveReportSignal, { index: wave.index, ...r });
  }
}

const RANK: Record<GatePhase, number> = { success: 0, running: 1, inconclusive: 2, failure: 3 };

function describeLast(v: GateVerdict): string {
  const last = [...v.measurements].reverse().find((m) => m.result !== 'success');
  return last ? ` (${last.detail})` : '';
}

function describeNodeFailure(s: WaveNodeSummary): string {
  if (s.error?.type === FailureType.NodeBusy) return s.error.message;
  return `change failed on node ${s.node} (${s.error?.type}: ${s.error?.message})`;
}

const EMPTY_NETWORK = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] };

/** A node workflow that failed outright (not a reported rollback): its node's state is unknown. */
export function crashed(node: string, err: unknown): NodeChangeResult {
  const error = summariseFailure(err);
  // The node workflow refuses an input it cannot validate before it reads anything (issue 11):
  // nothing was applied there, whatever the parent sent.
  if (error.type === FailureType.InvalidNodeChangeInput) return { node, outcome: 'not-applied', diff: [], snapshot: EMPTY_NETWORK, scope: [], error, audit: [] };
  return {
    node,
    outcome: 'rollback-failed',
    diff: [],
    snapshot: EMPTY_NETWORK,
    scope: [],
    error,
    rollbackDifferences: [`the node workflow failed (${error.type}: ${error.message}); the node's state is unknown`],
    audit: [],
  };
}

/** A node whose lock never came free (or whose wait an abort ended): nothing was applied to it. */
function busy(node: string, message: string): NodeChangeResult {
  return { node, outcome: 'not-applied', diff: [], snapshot: EMPTY_NETWORK, scope: [], error: { type: FailureType.NodeBusy, message }, audit: [] };
}

/** Input of {@link rolloutCheckWorkflow}. */
export interface GateCheckInput {
  nodes: string[];
  gates: Record<string, GateSpec>;
}

/**
 * Measures `gates` over `nodes` once through (each gate's full run: `count` measurements at
 * its interval), after a rollback: the verdicts show whether the fleet is healthy again.
 * A datapath gate compares with a baseline taken at the start of the check.
 */
export async function rolloutCheckWorkflow(input: GateCheckInput): Promise<Record<string, GateVerdict>> {
  const baselines = new Map<string, DatapathBaseline>();
  if (Object.values(input.gates).some((g) => g.kind === 'datapath')) {
    await Promise.all(input.nodes.map(async (n) => void (await nodeGates(n).datapathBaseline().then((b) => baselines.set(n, b), () => undefined))));
  }
  const out: Record<string, GateVerdict> = {};
  await Promise.all(
    Object.entries(input.gates).map(async ([gate, spec]) => {
      const targets = gateQueue(spec) === 'cluster' ? [''] : input.nodes;
      const verdicts = await Promise.all(
        targets.map(async (node) => {
          const ms: Measurement[] = [];
          for (let i = 0; i < spec.count; i++) {
            if (i > 0) await sleep(spec.intervalSeconds * 1000);
            const baseline = baselines.get(node);
            const m = await (node === ''
              ? cluster.measurePrometheusGate({ name: gate, spec: spec as Extract<GateSpec, { kind: 'prometheus' }> })
              : nodeGates(node, spec).measureGate({ name: gate, spec, ...(baseline ? { baseline } : {}) })
            ).catch((err: unknown): Measurement => ({ at: new Date(Date.now()).toISOString(), result: 'inconclusive', detail: `could not measure: ${summariseFailure(err).message}` }));
            ms.push(node === '' ? m : { ...m, detail: `${node}: ${m.detail}` });
            if (gateVerdict(gate, spec, ms).phase !== 'running') break;
          }
          return gateVerdict(gate, spec, ms);
        }),
      );
      const worst = verdicts.reduce((w, v) => (RANK[v.phase] > RANK[w.phase] ? v : w));
      out[gate] = worst;
      metrics.gateResult(-1, gate, spec.kind, worst.phase);
    }),
  );
  return out;
}
