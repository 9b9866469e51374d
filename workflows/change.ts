/**
 * The change workflow: one change request, every target node, all or nothing, as a staged
 * rollout (model/rollout-strategy.ts):
 *
 *   validate → [inventory, when targets or waves are picked by label] → plan the waves →
 *   every target's node worker polling? (else fail up front, nothing applied) →
 *   approval gate (workflows/approval.ts: policy, plan digest, approvals, override) →
 *   for each wave: [wait for the maintenance window] → child rolloutWaveWorkflow (its
 *   nodes' workflows, bake, gates; each node's plan checked against the approved one) →
 *   [commit-confirmed wait] → commit every wave (nodes release their locks) → done
 *
 * A node that fails rolls itself back, a failed gate (onGateFailure `rollback`), an abort or
 * a missed confirmation restore every node changed so far: waves newest first, each wave's
 * nodes newest first, every node verified by read-back against its snapshot; then the gates
 * of the touched waves are measured again to show the fleet is healthy (`postRollbackGates`).
 * Nodes of finished waves keep their node lock (hold) until the rollout commits.
 *
 * Operators steer it with Updates whose validators refuse the wrong phase with a reason:
 * `pause`, `resume`, `promote` ({ full }), `abort`, `extendBake` ({ seconds }), and `confirm`.
 * The parent's history grows by a few events per wave and per report, not per node: each
 * wave is a child workflow returning a small summary (diffs capped, audit bounded).
 *
 * The single argument is `unknown` on purpose: it arrives as raw JSON from the Web UI,
 * the CLI or the API, and is validated here before anything runs. Its failure types
 * (`InvalidChangeRequest`, `NodeBusy`, `NodeNotPolling`, `ChangeRolledBack`, `RolloutGateFailed`,
 * `RollbackFailed`, and the approval gate's `ApprovalRejected`, `ApprovalExpired`, `PlanChanged`,
 * `OverrideRefused`, `InvalidApprovalPolicy`) are in model/failures.ts.
 */
import {
  condition,
  defineQuery,
  defineSignal,
  defineUpdate,
  ParentClosePolicy,
  patched,
  proxyActivities,
  proxyLocalActivities,
  proxySinks,
  setHandler,
  sleep,
  startChild,
  type ChildWorkflowHandle,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { IdentityActivities } from '../activities/identity';
import type { AuditRecord } from '../model/audit';
import type { MetricsSinks } from '../model/metrics';
import { formatIssues, isClusterOnly, nodePartIssues, validateChangeRequest, type ValidationIssue, type ValidationResult } from '../model/change-request';
import type { ClusterGateActivities, GateSpec, GateVerdict } from '../model/gates';
import { selectNodes, type InventoryActivities, type InventoryNode } from '../model/inventory';
import { nodeTaskQueue, SearchAttributes } from '../model/naming';
import { failure, FailureType, summariseFailure, type FailureSummary, type FailureTypeName } from '../model/failures';
import { defaultStrategy, planWaves, usesSelectors, waveGateSpecs, type PlannedWave, type RolloutStrategy } from '../model/rollout-strategy';
import type { NodeChangeResult } from './node-change';
import { nodeRestoreRetryingSignal, type RestoreRetryStatus } from './node-recovery';
import { legacyChange } from './change-legacy';
import {
  rolloutCheckWorkflow,
  rolloutWaveWorkflow,
  waveControlSignal,
  waveDecisionSignal,
  waveReportSignal,
  type WaveControl,
  type WaveDecision,
  type WaveNodePhase,
  type WaveNodeSummary,
  type WaveReport,
  type WaveResult,
  type WaveState,
} from './rollout-wave';
import { ApprovalGate, type ApprovalStatus, type GatePhase, type WindowStatus } from './approval';
import { AuditTrail, commitConfirmed } from './support';
import { ClusterPolicyStep, type ClusterPolicyStatus } from './cluster-policy-step';
import { clusterOnlyChange } from './cluster-only-change';

/** Where a change stands. */
export type ChangePhase =
  | 'validating'
  | 'rejected'
  | 'rolling-out'
  | 'waiting-for-node'
  | 'baking'
  | 'paused'
  | 'awaiting-confirmation'
  | 'reverting'
  | 'checking-gates'
  | 'planned'
  /** Aborted before anything was applied (while waiting for a node's lock, say): nothing changed. */
  | 'aborted'
  | 'applied'
  | 'unchanged'
  | 'reverted'
  | 'rolled-back'
  | 'rollback-failed'
  // The approval gate (workflows/approval.ts): planning for the policy, a pending approval,
  // a closed window or a freeze, and an approval that lapsed.
  | GatePhase
  | 'expired';

/** Phases after which nothing happens any more. */
const FINAL_PHASES: readonly ChangePhase[] = ['rejected', 'planned', 'aborted', 'applied', 'unchanged', 'reverted', 'rolled-back', 'rollback-failed', 'expired'];

/** Per-node view in the status. */
export interface NodeReport {
  outcome: 'pending' | NodeChangeResult['outcome'];
  diff: string[];
  /** The wave the node is in. */
  wave?: string;
  /** Where the node stands in its wave (as of the wave's last report). */
  phase?: WaveNodePhase;
  /** Lines of the whole diff, when `diff` is cut short. */
  diffLines?: number;
  /** How many of the node's audit records are already in the change's trail. */
  auditCount?: number;
  error?: FailureSummary;
  differences?: string[];
  /** While the node's restore is retrying (workflows/node-recovery.ts): attempt, last error, next try. */
  restore?: RestoreRetryStatus;
}

/** One wave in the status. */
export interface WaveStatus {
  index: number;
  name: string;
  nodes: string[];
  concurrency: number;
  bakeSeconds: number;
  gates: string[];
  state: WaveState;
  message?: string;
  /** While baking: when the bake ends (ISO 8601). */
  bakeEndsAt?: string;
  /** Each gate's verdict and last measurements. */
  gateVerdicts: Record<string, GateVerdict>;
}

/** Answer of the `status` query, of every update, and the workflow's result. */
export interface ChangeStatus {
  changeId?: string;
  phase: ChangePhase;
  message: string;
  progress: { nodesDone: number; nodesTotal: number };
  /** When an unconfirmed change reverts by itself (commit-confirmed), ISO 8601. */
  confirmDeadline?: string;
  nodes: Record<string, NodeReport>;
  /** The rollout's waves, in order (absent on a request rejected before planning). */
  waves?: WaveStatus[];
  /** Name of the wave running (or last run). */
  currentWave?: string;
  /** Who paused the rollout and why (a gate that failed or was inconclusive pauses it too). */
  paused?: { by: string; reason: string };
  /** After a rollback: the touched waves' gates measured again over the restored nodes. */
  postRollbackGates?: Record<string, GateVerdict>;
  onGateFailure?: RolloutStrategy['onGateFailure'];
  issues?: ValidationIssue[];
  /** The approval the policy asks for, when it asks for one: who may give it, what was received, until when. */
  approval?: ApprovalStatus;
  /** The change's cluster policy (workflows/cluster-policy-step.ts): its plan and where it stands. */
  clusterPolicy?: ClusterPolicyStatus;
  /** While the change waits for a maintenance window, the end of a freeze or its notBefore. */
  window?: WindowStatus;
  audit: AuditRecord[];
}

/** Who confirms, aborts, pauses, resumes or promotes, for the audit trail. */
export interface OperatorAction {
  by?: string;
  reason?: string;
}

/** `promote`: next wave now; with `full`, skip every remaining bake (and its gates) too. */
export interface PromoteAction extends OperatorAction {
  full?: boolean;
}

/** `extendBake`: add `seconds` to the current wave's bake. */
export interface ExtendBakeAction extends OperatorAction {
  seconds: number;
}

export const statusQuery = defineQuery<ChangeStatus>('status');
export const confirmUpdate = defineUpdate<ChangeStatus, [OperatorAction]>('confirm');
/** Abort as an update: refused (with the reason) once the change has ended or is already reverting. */
export const abortUpdate = defineUpdate<ChangeStatus, [OperatorAction]>('abort');
/** Abort as a signal (fire and forget; kept for clients from before the update). */
export const abortSignal = defineSignal<[OperatorAction]>('abort');
export const pauseUpdate = defineUpdate<ChangeStatus, [OperatorAction]>('pause');
export const resumeUpdate = defineUpdate<ChangeStatus, [OperatorAction]>('resume');
export const promoteUpdate = defineUpdate<ChangeStatus, [PromoteAction]>('promote');
export const extendBakeUpdate = defineUpdate<ChangeStatus, [ExtendBakeAction]>('extendBake');

/** Longest bake extension in one update: a week, like a wave's bake. */
const MAX_EXTEND_SECONDS = 7 * 24 * 3600;
/** How long a target may show no poller before the change fails up front (a worker that just started may not have polled yet). */
const POLLER_GRACE_MS = 5000;

/** Counts for the worker's metrics (a sink: nothing is emitted from workflow code, nor on replay). */
const { metrics } = proxySinks<MetricsSinks>();

const { verifyIdentity } = proxyLocalActivities<IdentityActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 3 } });
const cluster = proxyActivities<ClusterGateActivities & InventoryActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 3 } });

/**
 * Runs one change request. See the module comment for the shape. `identityAssertion` is
 * what the HTTP API signs (model/identity.ts); without it the author is self-asserted.
 */
export async function changeWorkflow(input: unknown, identityAssertion?: unknown): Promise<ChangeStatus> {
  const status: ChangeStatus = { phase: 'validating', message: 'validating the request', progress: { nodesDone: 0, nodesTotal: 0 }, nodes: {}, audit: [] };
  // Set by the updates and the abort signal; read after every await.
  const operator: { confirmation?: OperatorAction; abort?: OperatorAction; pause?: OperatorAction; promoteFull?: boolean } = {};
  /** The wave child running now, to forward controls to. */
  let current: { index: number; handle?: ChildWorkflowHandle<typeof rolloutWaveWorkflow>; state: WaveState } | undefined;
  /** Phase to go back to on resume. */
  let beforePause: ChangePhase = 'rolling-out';

  setHandler(statusQuery, () => status);
  // A node whose restore is retrying says so each round (directly, or through its wave): shown at once.
  setHandler(nodeRestoreRetryingSignal, (r) => {
    const report = status.nodes[r.node];
    if (report) report.restore = r.restore;
  });
  setHandler(
    confirmUpdate,
    (action) => {
      operator.confirmation = action ?? {};
      return status;
    },
    {
      validator: (_action: OperatorAction) => {
        if (status.phase !== 'awaiting-confirmation') {
          throw new Error(`nothing to confirm: the change is ${status.phase} (confirm is accepted only while awaiting confirmation)`);
        }
      },
    },
  );
  setHandler(abortSignal, (action) => {
    operator.abort ??= action ?? {};
  });
  setHandler(
    abortUpdate,
    (action) => {
      operator.abort ??= action ?? {};
      return status;
    },
    {
      validator: (_action: OperatorAction) => {
        if (FINAL_PHASES.includes(status.phase)) throw new Error(`nothing to abort: the change is ${status.phase}`);
        if (status.phase === 'reverting' || status.phase === 'checking-gates' || operator.abort) throw new Error(`already reverting: the change is ${status.phase}`);
      },
    },
  );
  setHandler(
    pauseUpdate,
    (action) => {
      operator.pause = action ?? {};
      status.paused = { by: action?.by ?? 'an operator', reason: action?.reason ?? 'paused' };
      trail.record('pause', 'ok', Date.now(), describeAction('paused', action ?? {}));
      beforePause = status.phase;
      forward({ action: 'pause' });
      setPhase('paused', `${describeAction('paused', action ?? {})}; resume, promote or abort`);
      return status;
    },
    {
      validator: (_action: OperatorAction) => {
        if (!['rolling-out', 'waiting-for-node', 'baking'].includes(status.phase)) {
          throw new Error(`cannot pause: the change is ${status.phase} (pause is accepted while rolling out or baking)`);
        }
      },
    },
  );
  setHandler(
    resumeUpdate,
    (action) => {
      operator.pause = undefined;
      status.paused = undefined;
      trail.record('resume', 'ok', Date.now(), describeAction('resumed', action ?? {}));
      forward({ action: 'resume' });
      setPhase(beforePause === 'paused' ? 'rolling-out' : beforePause, describeAction('resumed', action ?? {}));
      return status;
    },
    {
      validator: (_action: OperatorAction) => {
        if (status.phase !== 'paused') throw new Error(`nothing to resume: the change is ${status.phase} (resume is accepted only while paused)`);
      },
    },
  );
  setHandler(
    promoteUpdate,
    (action) => {
      operator.pause = undefined;
      status.paused = undefined;
      if (action?.full) operator.promoteFull = true;
      trail.record('promote', 'ok', Date.now(), describeAction(action?.full ? 'fully promoted (every remaining bake and gate skipped)' : 'promoted', action ?? {}));
      forward({ action: 'promote', ...(action?.full ? { full: true } : {}) });
      setPhase('rolling-out', describeAction('promoted', action ?? {}));
      return status;
    },
    {
      validator: (_action: PromoteAction) => {
        if (status.phase !== 'baking' && status.phase !== 'paused') {
          throw new Error(`nothing to promote: the change is ${status.phase} (promote is accepted while a wave bakes or the rollout is paused)`);
        }
      },
    },
  );
  setHandler(
    extendBakeUpdate,
    (action) => {
      trail.record('extend bake', 'ok', Date.now(), describeAction(`extended the bake by ${action.seconds}s`, action));
      forward({ action: 'extendBake', seconds: action.seconds });
      return status;
    },
    {
      validator: (action: ExtendBakeAction) => {
        const seconds = (action as Partial<ExtendBakeAction> | undefined)?.seconds;
        if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 1 || seconds > MAX_EXTEND_SECONDS) {
          throw new Error(`seconds: must be a whole number of seconds from 1 to ${MAX_EXTEND_SECONDS}`);
        }
        const baking = status.phase === 'baking' || (status.phase === 'paused' && (current?.state === 'baking' || current?.state === 'paused'));
        if (!baking) throw new Error(`no bake to extend: the change is ${status.phase} (extend-bake is accepted while a wave bakes)`);
      },
    },
  );

  const validatedAt = Date.now();
  const parsedRequest = validateChangeRequest(input, validatedAt);
  // Cluster-only requests (clusterPolicy, no node part) were refused before they could run:
  // a replayed refusal refuses again (asked here, before the identity check's local activity).
  const validation: ValidationResult =
    parsedRequest.ok && isClusterOnly(parsedRequest.request) && !patched('cluster-only-change') ? { ok: false, issues: nodePartIssues({}) } : parsedRequest;
  const rawId = typeof input === 'object' && input !== null ? (input as { id?: unknown }).id : undefined;
  // Asked before the identity check's local activity: a patch first asked after a local
  // activity whose result arrived in a later workflow task does not replay (its marker is in
  // that later task; replay resolves the activity from its marker one task earlier).
  const stagedRollout = validation.ok && patched('staged-rollout');
  // The legacy path's patch, for the same reason (asked only when replaying a change from
  // before staged rollouts: a new change never takes that path, so it records no marker).
  const holdEveryNode = validation.ok && !stagedRollout && patched('hold-every-node');
  const identity = validation.ok ? await checkIdentity(input, identityAssertion) : undefined;
  const trail = new AuditTrail(validation.ok ? validation.request.id : String(rawId ?? workflowInfo().workflowId), validation.ok ? validation.request.author : 'unknown', identity ? { actorVerified: identity.verified } : {});
  if (!validation.ok) {
    trail.record('validate', 'failed', validatedAt, formatIssues(validation.issues));
    Object.assign(status, { phase: 'rejected', message: `invalid change request:\n${formatIssues(validation.issues)}`, issues: validation.issues, audit: trail.records });
    setSearchStatus('rejected');
    metrics.changeFinished('rejected', FailureType.InvalidChangeRequest);
    throw failure(FailureType.InvalidChangeRequest, status.message, [status]);
  }
  if (identity?.refused !== undefined) {
    trail.record('verify identity', 'failed', validatedAt, identity.refused);
    Object.assign(status, { phase: 'rejected', message: `identity assertion refused: ${identity.refused}`, audit: trail.records });
    setSearchStatus('rejected');
    metrics.changeFinished('rejected', FailureType.InvalidIdentityAssertion);
    throw failure(FailureType.InvalidIdentityAssertion, status.message, [status]);
  }
  const request = validation.request;
  status.changeId = request.id;

  // The same first command as before staged rollouts (named targets are known; a selector's
  // are set once resolved).
  upsertSearchAttributes([
    { key: SearchAttributes.changeId, value: request.id },
    { key: SearchAttributes.author, value: request.author },
    { key: SearchAttributes.targetNodes, value: request.targets ?? [] },
  ]);
  // ── cluster-only change (workflows/cluster-only-change.ts): clusterPolicy and no node part, 0 nodes ──
  if (isClusterOnly(request)) return clusterOnlyChange({ request, validatedAt, identity, trail, status, operator, setPhase, finish, finishError, describeAction });
  if (!stagedRollout) {
    // Replaying a change started before staged rollouts: its named targets, one at a time.
    const targets = request.targets ?? [];
    trail.record('validate', 'ok', validatedAt, `${targets.length} node(s), ${request.desired ? 'full state' : 'patch'}${request.options.dryRun ? ', dry run' : ''}`);
    status.progress.nodesTotal = targets.length;
    for (const node of targets) status.nodes[node] = { outcome: 'pending', diff: [] };
    setPhase('rolling-out', request.options.dryRun ? 'planning on every node' : 'applying node by node');
    return legacyChange({ request, targets, holdEveryNode, status, operator, trail, setPhase, finish, describeAction });
  }

  // ── targets and waves ──
  let inventory: InventoryNode[] | undefined;
  if (request.targetSelector || (request.strategy && usesSelectors(request.strategy))) {
    const startedAt = Date.now();
    inventory = await trail.step('inventory', () => cluster.listInventory(), (nodes) => `${nodes.length} node(s)`).catch((err: unknown) => {
      throw reject([{ field: request.targetSelector ? 'targetSelector' : 'strategy.waves', message: `needs the inventory, which could not be read: ${summariseFailure(err).message}` }], startedAt);
    });
  }
  const targets: InventoryNode[] = request.targets
    ? request.targets.map((name) => inventory?.find((n) => n.name === name) ?? { name, labels: {} })
    : selectNodes(inventory ?? [], request.targetSelector ?? {});
  if (targets.length === 0) throw reject([{ field: 'targetSelector', message: `matches no node of the inventory (${inventory?.length ?? 0} node(s))` }], Date.now());
  const strategy = request.strategy ?? defaultStrategy(targets.length, request.options.defaultBakeSeconds);
  const plan = planWaves(strategy, targets);
  if (!plan.ok) throw reject(plan.issues.map(({ field, message }) => ({ field, message })), Date.now());
  const waves = plan.waves;
  trail.record(
    'validate',
    'ok',
    validatedAt,
    `${targets.length} node(s) in ${waves.filter((w) => w.nodes.length > 0).length} wave(s), ${request.desired ? 'full state' : 'patch'}${request.options.dryRun ? ', dry run' : ''}`,
  );
  status.progress.nodesTotal = targets.length;
  status.onGateFailure = strategy.onGateFailure;
  status.waves = waves.map((w) => ({ index: w.index, name: w.name, nodes: w.nodes, concurrency: w.concurrency, bakeSeconds: w.bakeSeconds, gates: w.gates, state: w.nodes.length === 0 ? 'skipped' : 'pending', gateVerdicts: {} }));
  for (const w of waves) for (const node of w.nodes) status.nodes[node] = { outcome: 'pending', diff: [], wave: w.name, phase: 'pending' };
  if (!request.targets) upsertSearchAttributes([{ key: SearchAttributes.targetNodes, value: targets.map((t) => t.name) }]);

  // ── every target's worker must be polling before anything changes ──
  await checkPollers(targets.map((t) => t.name));

  // ── cluster policy (workflows/cluster-policy-step.ts): dry-run against the cluster's CRDs and snapshot, before any node ──
  // Awaited only when there is cluster policy (like `gate.beforeNode()` below): an await that
  // does nothing still takes microtasks, which would move the durable audit's next append
  // ahead of later commands in changes without cluster policy.
  const clusterPolicy = request.clusterPolicy ? await ClusterPolicyStep.prepare({ request, trail, status, fail: finishError }) : undefined;

  // ── approval gate (workflows/approval.ts) ──
  // After the waves are planned, before anything is applied: the approval policy, the plan
  // digest an approval names (every node's diff and the planned waves), the emergency
  // override. Changes started before the gate (and dry runs, which change nothing) skip it;
  // its other hooks are `gate.beforeNode()` before each wave (windows, freezes, notBefore)
  // and `gate.planDrift()` where the waves report their nodes (a node's plan vs the approved one).
  let gate: ApprovalGate | undefined;
  if (!request.options.dryRun && patched('approval-gate')) {
    const opened = await ApprovalGate.open({
      request,
      targets: targets.map((t) => t.name),
      // The cluster plan is part of what approvers approve (the digest covers the strategy field).
      strategy: clusterPolicy ? { waves, clusterPolicy: clusterPolicy.plan } : waves,
      identity: { verified: identity?.verified ?? false, roles: identity?.roles ?? [] },
      trail,
      status,
      setPhase,
      aborted: () => operator.abort !== undefined,
    });
    status.audit = trail.records;
    if (!(opened instanceof ApprovalGate)) return finish(opened.phase, opened.message, opened.failureType);
    gate = opened;
  }

  // One change at a time per node: each node workflow runs under the node's lock id. When a
  // later wave, a gate or a confirmation can still undo the change, applied nodes *hold* (keep
  // running, keeping the lock) until this workflow decides, so no other change can land on
  // top of a provisional one and be wiped by its revert.
  // Every non-dry-run node holds (issue 11): an abort that arrives while the only node is
  // applying must still be able to restore it, and a gate or bake after the last node needs it too.
  const hold = !request.options.dryRun;
  const reports: WaveReport[] = [];
  const results = new Map<number, WaveResult>();
  const handles = new Map<number, ChildWorkflowHandle<typeof rolloutWaveWorkflow>>();
  /** Waves started, in order: a revert restores them newest first. */
  const touched: PlannedWave[] = [];
  setHandler(waveReportSignal, (r) => void reports.push(r));
  setPhase('rolling-out', request.options.dryRun ? 'planning on every node' : 'rolling out wave by wave');

  for (const wave of waves) {
    if (wave.nodes.length === 0) continue;
    // Approval gate: wait here (durably) while a maintenance window is closed or a freeze holds.
    // Not `await gate?.beforeNode()`: even an await of undefined takes a microtask, and the
    // durable audit's next append (issued when the one before resolves) would then come
    // before this wave's commands in runs without the gate, which their histories do not show.
    if (gate) await gate.beforeNode();
    if (operator.pause) {
      setPhase('paused', status.message);
      await condition(() => !operator.pause || operator.abort !== undefined);
    }
    if (operator.abort) break;
    // Cluster policy once, before the first wave: allow before routes (workflows/cluster-policy-step.ts).
    const policyFailed = clusterPolicy ? await clusterPolicy.applyOnce() : undefined;
    if (policyFailed) return finish(clusterPolicy?.clean ? 'rolled-back' : 'rollback-failed', `${policyFailed.why}; ${clusterPolicy?.clean ? 'the cluster policy was restored and verified against its snapshot' : 'ROLLBACK INCOMPLETE — see clusterPolicy.differences'}; no node was touched`, policyFailed.type);
    const outcome = await runWave(wave);
    if (outcome.kind === 'continue') continue;
    if (outcome.kind !== 'failed') break;
    // A node failed, or a gate failed with onGateFailure: rollback.
    await revertTouched(outcome.why);
    const clean = cleanRevert();
    await recheckGates();
    return finish(clean ? 'rolled-back' : 'rollback-failed', `${outcome.why}; ${clean ? `${outcome.onNode}every node changed was restored and verified against its snapshot` : 'ROLLBACK INCOMPLETE — see nodes for the differences left'}`, clean ? outcome.type : FailureType.RollbackFailed);
  }

  if (request.options.dryRun) return finish('planned', "dry run: nothing was changed; see the waves and each node's diff");
  if (operator.abort) {
    // Report what a read-back shows, not what was intended: no node changed, every applied
    // node restored and verified, or a revert that did not verify.
    const why = describeAction('aborted', operator.abort);
    await revertTouched(why);
    for (const report of Object.values(status.nodes)) if (report.outcome === 'pending') report.outcome = 'not-applied';
    const touchedAny = (clusterPolicy?.applied ?? false) || Object.values(status.nodes).some((n) => ['restored', 'restore-failed', 'rollback-failed', 'rolled-back'].includes(n.outcome));
    if (!touchedAny) return finish('aborted', `${why} before anything was applied; no node was changed`);
    const clean = cleanRevert();
    await recheckGates();
    return finish(clean ? 'reverted' : 'rollback-failed', `${why} during rollout; ${clean ? 'every applied node was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see nodes'}`, clean ? undefined : FailureType.RollbackFailed);
  }
  const appliedCount = Object.values(status.nodes).filter((n) => n.outcome === 'applied').length;
  if (appliedCount === 0 && !clusterPolicy?.applied) {
    await commitTouched('nothing to change');
    return finish('unchanged', 'every node already matched the desired state');
  }

  // Called, not awaited, by the commit-confirmed wait (workflows/support.ts): its commands keep their place.
  const commit = async (): Promise<ChangeStatus> => {
    await commitTouched('change committed');
    return finish('applied', `applied and verified on ${appliedCount} node(s)`);
  };
  const confirmTimeout = request.options.confirmTimeout;
  if (confirmTimeout === undefined) return commit();
  return commitConfirmed({
    timeoutMs: confirmTimeout,
    status,
    operator,
    trail,
    setPhase,
    describeAction,
    commit,
    revert: async (why) => {
      await revertTouched(why);
      const clean = cleanRevert();
      await recheckGates();
      return finish(clean ? 'reverted' : 'rollback-failed', `${why}; ${clean ? 'every node was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see nodes'}`, clean ? undefined : FailureType.RollbackFailed);
    },
  });

  /**
   * Runs one wave until it is ready (continue), failed (revert everything), or stopped by an
   * abort. Gate failures pause (onGateFailure `pause`, or inconclusive) until an operator
   * resumes (measure again), promotes (go on) or aborts.
   */
  async function runWave(wave: PlannedWave): Promise<{ kind: 'continue' | 'aborted' } | { kind: 'failed'; why: string; onNode: string; type: FailureTypeName }> {
    const ws = status.waves?.[wave.index] as WaveStatus;
    current = { index: wave.index, state: 'applying' };
    status.currentWave = wave.name;
    ws.state = 'applying';
    upsertSearchAttributes([{ key: SearchAttributes.wave, value: wave.name }]);
    for (const node of wave.nodes) (status.nodes[node] as NodeReport).phase = 'applying';
    if (status.phase !== 'paused') setPhase('rolling-out', `wave ${wave.name}: applying on ${wave.nodes.length} node(s)`);
    const startedAt = Date.now();
    const paused = operator.pause !== undefined;
    const handle = await startChild(rolloutWaveWorkflow, {
      taskQueue: workflowInfo().taskQueue,
      workflowId: `${workflowInfo().workflowId}/wave-${wave.index + 1}-${wave.name}`,
      // If this workflow ends without deciding, the wave (and with it every held node) reverts.
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      args: [
        {
          changeId: request.id,
          author: request.author,
          // For the revisions the wave records when it commits (workflows/revisions.ts).
          reason: request.reason,
          ...(approvedBy().length > 0 ? { approvers: approvedBy() } : {}),
          wave,
          gates: waveGateSpecs(strategy, wave),
          ...(request.desired ? { desired: request.desired } : {}),
          ...(request.patch ? { patch: request.patch } : {}),
          dryRun: request.options.dryRun,
          hold,
          lockTimeoutMs: request.options.lockTimeout,
          paused,
          skipBake: operator.promoteFull ?? false,
        },
      ],
    });
    handles.set(wave.index, handle);
    current.handle = handle;
    touched.push(wave);
    void handle.result().then(
      (r) => void results.set(wave.index, r),
      (err: unknown) => void results.set(wave.index, crashedWave(wave, err)),
    );
    // Controls that arrived while the child was starting.
    if ((operator.pause !== undefined) !== paused) await handle.signal(waveControlSignal, { action: operator.pause ? 'pause' : 'resume' });
    if (operator.promoteFull && !(paused || false)) await handle.signal(waveControlSignal, { action: 'promote', full: true });

    let abortForwarded = false;
    let seen = 0;
    for (;;) {
      const mine = () => reports.filter((r) => r.index === wave.index);
      await condition(() => mine().length > seen || results.has(wave.index) || (operator.abort !== undefined && !abortForwarded));
      if (operator.abort && !abortForwarded) {
        // Abort mid-wave: the wave stops launching nodes, waits for those applying, restores its own.
        abortForwarded = true;
        await decide(wave, { decision: 'revert', reason: describeAction('aborted', operator.abort) });
        continue;
      }
      const fresh = mine().slice(seen);
      seen += fresh.length;
      for (const r of fresh) applyReport(r);
      const result = results.get(wave.index);
      if (result) applyResult(result);
      // Approval gate: the plan each node applied must be the approved one, or approvals are void.
      const drift = abortForwarded ? undefined : planDrift([...fresh.flatMap((r) => r.nodes ?? []), ...(result?.nodes ?? [])]);
      if (drift !== undefined) return { kind: 'failed', why: drift, onNode: '', type: FailureType.PlanChanged };
      if (result) {
        if (abortForwarded) return { kind: 'aborted' };
        if (result.state === 'failed' || result.state === 'restore-failed') return failedWave(wave, result.message);
        trail.record(`wave ${wave.name}`, 'ok', startedAt, result.message);
        return { kind: 'continue' };
      }
      const last = fresh[fresh.length - 1];
      if (!last || abortForwarded) continue;
      if (last.state === 'ready') {
        trail.record(`wave ${wave.name}`, 'ok', startedAt, last.message);
        return { kind: 'continue' };
      }
      if (last.state === 'failed') return failedWave(wave, last.message);
      if (last.state === 'gate-failed' || last.state === 'gate-inconclusive') {
        trail.record(`wave ${wave.name} gates`, 'failed', startedAt, last.message);
        if (last.state === 'gate-failed' && strategy.onGateFailure === 'rollback') {
          return { kind: 'failed', why: `wave ${wave.name}: ${last.message}`, onNode: '', type: FailureType.RolloutGateFailed };
        }
        // onGateFailure pause, or an inconclusive gate (never a pass): wait for an operator.
        operator.pause = { by: 'fos1', reason: last.message };
        status.paused = { by: 'fos1', reason: `wave ${wave.name}: ${last.message}` };
        beforePause = 'baking';
        setPhase('paused', `wave ${wave.name}: ${last.message}; resume (measure again), promote (go on) or abort (restore every node)`);
      }
    }
  }

  /** Who approved the change (the approval policy's counted approvals; none when none was asked). */
  function approvedBy(): string[] {
    const approval = status.approval;
    return approval?.state === 'approved' ? approval.received.filter((v) => v.counts && v.decision === 'approve').map((v) => v.by) : [];
  }

  /** The first node whose applied plan differs from the approved one (the gate says why), if any. */
  function planDrift(summaries: WaveNodeSummary[]): string | undefined {
    if (!gate) return undefined;
    for (const n of summaries) {
      const drift = gate.planDrift(n);
      if (drift !== undefined) return drift;
    }
    return undefined;
  }

  function failedWave(wave: PlannedWave, message: string): { kind: 'failed'; why: string; onNode: string; type: FailureTypeName } {
    const failedNode = wave.nodes.map((n) => status.nodes[n] as NodeReport).find((n) => n.outcome === 'rolled-back' || n.outcome === 'rollback-failed' || n.outcome === 'not-applied');
    const type = failedNode?.error?.type === FailureType.NodeBusy ? FailureType.NodeBusy : FailureType.ChangeRolledBack;
    const onNode = failedNode?.outcome === 'not-applied' ? 'nothing was applied to it, and ' : failedNode ? 'it was rolled back, and ' : '';
    return { kind: 'failed', why: message, onNode, type };
  }

  function applyReport(r: WaveReport): void {
    const ws = status.waves?.[r.index];
    if (!ws) return;
    ws.state = r.state;
    ws.message = r.message;
    if (r.gates) ws.gateVerdicts = r.gates;
    if (r.bakeEndsAt) ws.bakeEndsAt = r.bakeEndsAt;
    else delete ws.bakeEndsAt;
    if (current?.index === r.index) current.state = r.state;
    for (const n of r.nodes ?? []) report(n);
    if (r.state === 'waiting-for-node') setPhase('waiting-for-node', r.message);
    else if (r.state === 'applying' && status.phase === 'waiting-for-node') setPhase('rolling-out', `wave ${ws.name}: applying`);
    else if (r.state === 'baking' && status.phase !== 'paused') setPhase('baking', `wave ${ws.name}: baking until ${r.bakeEndsAt ?? 'its gates complete'}`);
  }

  function applyResult(r: WaveResult): void {
    const ws = status.waves?.[r.index];
    if (ws) {
      ws.state = r.state;
      ws.message = r.message;
      ws.gateVerdicts = r.gates;
      delete ws.bakeEndsAt;
    }
    for (const n of r.nodes) report(n);
  }

  /** Records what a wave reported for a node; audit records already taken are not repeated. */
  function report(n: WaveNodeSummary): void {
    const previous = status.nodes[n.node];
    const known = previous?.auditCount ?? 0;
    trail.records.push(...n.audit.slice(known));
    const wasDone = previous !== undefined && previous.outcome !== 'pending';
    status.nodes[n.node] = {
      outcome: n.outcome,
      diff: n.diff,
      ...(previous?.wave ? { wave: previous.wave } : {}),
      phase: n.phase,
      ...(n.diffLines > n.diff.length ? { diffLines: n.diffLines } : {}),
      auditCount: n.audit.length,
      ...(n.error ? { error: n.error } : {}),
      ...(n.differences ? { differences: n.differences } : {}),
      // A report queued before the node said it was retrying must not hide that; its final result does.
      ...(n.restore ? { restore: n.restore } : previous?.restore && n.phase !== 'done' ? { restore: previous.restore } : {}),
    };
    if (!wasDone && n.outcome !== 'pending') status.progress.nodesDone++;
    status.audit = trail.records;
  }

  /** Tells every wave to keep the change, and waits until each has released its nodes. */
  async function commitTouched(reason: string): Promise<void> {
    const open = touched.filter((w) => !results.has(w.index));
    await Promise.all(open.map((w) => decide(w, { decision: 'commit', reason })));
    await condition(() => touched.every((w) => results.has(w.index)));
    for (const w of touched) applyResult(results.get(w.index) as WaveResult);
  }

  /** Reverts every touched wave, newest first; each restores its nodes newest first and reads them back. */
  async function revertTouched(reason: string): Promise<void> {
    await revertNodes(reason);
    // Cluster policy after every node: the reverse of its place on apply.
    if (clusterPolicy) await clusterPolicy.restore(reason);
  }

  async function revertNodes(reason: string): Promise<void> {
    if (touched.length === 0) return;
    setPhase('reverting', reason);
    const startedAt = Date.now();
    for (const w of [...touched].reverse()) {
      if (!results.has(w.index)) {
        await decide(w, { decision: 'revert', reason });
        await condition(() => results.has(w.index));
      }
      applyResult(results.get(w.index) as WaveResult);
    }
    trail.record('restore every touched node', cleanRevert() ? 'ok' : 'failed', startedAt, `${touched.flatMap((w) => w.nodes).filter((n) => status.nodes[n]?.outcome === 'restored').length} node(s) restored, waves ${[...touched].reverse().map((w) => w.name).join(', ')}`);
  }

  /** Sends a wave its decision; a wave that has just ended (its result not yet seen here) needs none. */
  async function decide(w: PlannedWave, decision: WaveDecision): Promise<void> {
    try {
      await handles.get(w.index)?.signal(waveDecisionSignal, decision);
    } catch (err) {
      await condition(() => results.has(w.index), 10_000);
      if (!results.has(w.index)) throw err;
    }
  }

  function cleanRevert(): boolean {
    return (clusterPolicy?.clean ?? true) && touched.every((w) => w.nodes.every((n) => !['applied', 'restore-failed', 'rollback-failed'].includes(status.nodes[n]?.outcome ?? 'pending')));
  }

  /** After a rollback: the touched waves' gates, measured again over their nodes. */
  async function recheckGates(): Promise<void> {
    const gates: Record<string, GateSpec> = {};
    for (const w of touched) Object.assign(gates, waveGateSpecs(strategy, w));
    if (Object.keys(gates).length === 0) return;
    setPhase('checking-gates', 'measuring the gates again over the restored nodes');
    const startedAt = Date.now();
    try {
      status.postRollbackGates = await (
        await startChild(rolloutCheckWorkflow, {
          taskQueue: workflowInfo().taskQueue,
          workflowId: `${workflowInfo().workflowId}/post-rollback-gates`,
          args: [{ nodes: touched.flatMap((w) => w.nodes), gates }],
        })
      ).result();
      const verdicts = Object.values(status.postRollbackGates);
      const healthy = verdicts.every((v) => v.phase === 'success');
      trail.record('post-rollback gates', healthy ? 'ok' : 'failed', startedAt, verdicts.map((v) => `${v.gate}: ${v.phase}`).join(', '));
    } catch (err) {
      trail.record('post-rollback gates', 'failed', startedAt, summariseFailure(err).message);
    }
  }

  /** Fails the change before anything was applied when a target's worker is not polling its task queue. */
  async function checkPollers(nodes: string[]): Promise<void> {
    const startedAt = Date.now();
    const deadline = startedAt + POLLER_GRACE_MS;
    for (;;) {
      let pollers: Awaited<ReturnType<ClusterGateActivities['describePollers']>>;
      try {
        pollers = await cluster.describePollers({ taskQueues: nodes.map(nodeTaskQueue) });
      } catch (err) {
        trail.record('check pollers', 'failed', startedAt, summariseFailure(err).message);
        throw finishError('rejected', `could not check that the nodes' workers are polling: ${summariseFailure(err).message}; nothing was applied`, FailureType.NodeNotPolling);
      }
      const missing = nodes.filter((n) => (pollers[nodeTaskQueue(n)]?.pollers ?? 0) === 0);
      if (missing.length === 0) {
        trail.record('check pollers', 'ok', startedAt, `${nodes.length} node worker(s) polling`);
        return;
      }
      if (Date.now() >= deadline) {
        const shown = missing.slice(0, 10);
        const why = `no worker is polling the task queue of node${missing.length > 1 ? 's' : ''} ${shown.join(', ')}${missing.length > shown.length ? ` and ${missing.length - shown.length} more` : ''} (${nodeTaskQueue(missing[0] as string)}${missing.length > 1 ? ', …' : ''}); nothing was applied`;
        trail.record('check pollers', 'failed', startedAt, why);
        throw finishError('rejected', why, FailureType.NodeNotPolling);
      }
      await sleep(1000);
    }
  }

  function reject(issues: ValidationIssue[], startedAt: number): Error {
    trail.record('validate', 'failed', startedAt, formatIssues(issues));
    status.issues = issues;
    return finishError('rejected', `invalid change request:\n${formatIssues(issues)}`, FailureType.InvalidChangeRequest);
  }

  function finishError(phase: ChangePhase, message: string, failureType: FailureTypeName): Error {
    setPhase(phase, message);
    status.audit = trail.records;
    metrics.changeFinished(phase, failureType);
    return failure(failureType, message, [status]);
  }

  function forward(control: WaveControl): void {
    if (current?.handle && !results.has(current.index)) void current.handle.signal(waveControlSignal, control);
  }

  function setPhase(phase: ChangePhase, message: string): void {
    status.phase = phase;
    status.message = message;
    setSearchStatus(phase);
  }

  function finish(phase: ChangePhase, message: string, failureType?: FailureTypeName): ChangeStatus {
    setPhase(phase, message);
    status.audit = trail.records;
    metrics.changeFinished(phase, failureType);
    if (failureType) throw failure(failureType, message, [status]);
    return status;
  }
}

/** A wave workflow that failed outright: its nodes' state is unknown. */
function crashedWave(wave: PlannedWave, err: unknown): WaveResult {
  const error = summariseFailure(err);
  return {
    index: wave.index,
    state: 'restore-failed',
    message: `the wave workflow failed (${error.type}: ${error.message}); its nodes' state is unknown`,
    nodes: wave.nodes.map((node) => ({ node, phase: 'done', outcome: 'rollback-failed', diff: [], diffLines: 0, error, audit: [] })),
    gates: {},
  };
}

/**
 * Verifies the API's identity assertion in a local activity on the cluster worker (which
 * holds the key): `verified` goes into the audit records (AuditRecord.actorVerified);
 * `refused` says why a given assertion does not hold. Histories from before identity
 * verification replay without the activity (self-asserted).
 */
async function checkIdentity(input: unknown, assertion: unknown): Promise<{ verified: boolean; roles?: string[]; refused?: string }> {
  if (!patched('verify-identity')) return { verified: false };
  try {
    const identity = await verifyIdentity({ request: input, assertion, workflowStartedAt: workflowInfo().startTime.getTime() });
    return identity.verified ? { verified: true, roles: identity.roles } : { verified: false };
  } catch (err) {
    // The refusal arrives as the activity's ApplicationFailure, wrapped in an ActivityFailure.
    const refusal = summariseFailure(err);
    if (refusal.type !== FailureType.InvalidIdentityAssertion) throw err;
    return { verified: false, refused: refusal.message || 'invalid' };
  }
}

function describeAction(verb: string, action: OperatorAction): string {
  return `${verb} by ${action.by ?? 'an operator'}${action.reason ? `: ${action.reason}` : ''}`;
}

function setSearchStatus(phase: ChangePhase): void {
  upsertSearchAttributes([{ key: SearchAttributes.status, value: phase }]);
}
