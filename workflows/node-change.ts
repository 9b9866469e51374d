/**
 * Per-node workflows. They run on the node's own task queue, so their activities execute
 * on the worker of that node and nowhere else.
 *
 *   nodeChangeWorkflow:  snapshot → plan → (dry-run stops) → links → vlans → addresses →
 *                        routes → rules → zones → nat → ratelimits → blocklist → verify
 *                        (steps without planned operations are skipped)
 *                        └─ on any failure after the first apply: restore every registered
 *                           subsystem from its snapshot, newest first, then read back and
 *                           compare with the snapshot (once more if something still differs)
 *                        └─ with `hold`: report `nodeReady` to the parent, keep the node's lock,
 *                           and on the parent's `nodeDecision` commit or restore the snapshot
 *
 * Every subsystem is driven through the same contract (model/subsystem.ts): the node
 * reads, plans and snapshots each one the change covers (`prepareSubsystems`), and the
 * workflow only sees counts, bounded diffs, snapshots (by value when small, a store
 * reference when large) and read-back checks. One loop applies them in SUBSYSTEM_ORDER;
 * before each step the compensations of its group are registered, so a failure restores
 * exactly what may have changed.
 */
import {
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { NodeActivities } from '../activities/node-activities';
import type { AuditRecord } from '../model/audit';
import type { BlocklistPlan, BlocklistSnapshot } from '../model/blocklist-change';
import { formatIssues } from '../model/issue-path';
import { validateNodeChangeInput, type NodePatch } from '../model/node-change-input';
import type { NodeState, ObservedNetworkState } from '../model/node-state';
import { failure, FailureType, summariseFailure, VerificationError, type FailureSummary } from '../model/failures';
import { SearchAttributes } from '../model/naming';
import { revisionDelta, type RevisionDelta } from '../model/revision';
import {
  changeCount,
  changeScope,
  compensationsBefore,
  describeCounts,
  type PreparedSubsystems,
  renderDiff,
  stepsOf,
  type Subsystem,
  type SubsystemChecks,
  subsystemIntents,
  type SubsystemIntents,
} from '../model/subsystem';
import { AuditTrail, Compensations } from './support';
import { RESTORE_RETRIES_PATCH, retryRestore, type NodeRestoreInput, type RestoreRetryStatus, type RestoreStep } from './node-recovery';

/**
 * Node activities heartbeat every second (activities/heartbeat.ts): a worker killed in the
 * middle of one is noticed after the heartbeat time-out and the attempt is retried as soon
 * as a worker polls again, instead of after the start-to-close time-out, which stays
 * generous for a million-entry list on a busy node.
 */
const remote = proxyActivities<NodeActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '5 seconds',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumAttempts: 4 },
});

/**
 * The steps of a blocklist-only change (automated blocks), as local activities: the node
 * workflow runs on the node's own worker, which holds the maps, so skipping the server's
 * activity dispatch saves round trips on the alert-to-drop path. The node lock (the
 * workflow id) still serialises them with every other change.
 */
const local = proxyLocalActivities<NodeActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumAttempts: 4 },
});

type Steps = Pick<NodeActivities, 'prepareSubsystems' | 'applySubsystem' | 'checkSubsystems' | 'restoreSubsystem'>;

/** Local activities for a blocklist-only patch, regular ones otherwise (a full list may take seconds). */
function stepsFor(scope: readonly Subsystem[], intents: SubsystemIntents): Steps {
  return scope.length === 1 && scope[0] === 'blocklist' && intents.blocklist?.mode === 'patch' ? local : remote;
}

const EMPTY_NETWORK: ObservedNetworkState = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] };

/** The subsystems whose snapshots a rollback restores, in the order they were registered (apply order). */
interface RestorePlan {
  prepared: PreparedSubsystems;
  registered: Subsystem[];
  steps: Steps;
}

/** The registered snapshots, newest-registered first (the order a rollback restores them). */
function snapshotsOf(plan: RestorePlan): RestoreStep[] {
  return [...plan.registered].reverse().flatMap((subsystem) => {
    const snapshot = plan.prepared[subsystem]?.snapshot as RestoreStep['snapshot'] | undefined;
    return snapshot ? [{ subsystem, snapshot }] : [];
  });
}

/** The read-back checks of a restore plan's snapshots. */
function checksOf(plan: RestorePlan): SubsystemChecks {
  const checks: SubsystemChecks = {};
  for (const { subsystem, snapshot } of snapshotsOf(plan)) (checks as Record<string, unknown>)[subsystem] = snapshot.check;
  return checks;
}

/** Restores, newest-registered first. */
function restoresFrom(plan: RestorePlan): { step: string; run: () => Promise<unknown> }[] {
  return snapshotsOf(plan).map(({ subsystem, snapshot }) => ({ step: `restore ${subsystem}`, run: () => plan.steps.restoreSubsystem({ subsystem, snapshot }) }));
}

/** Differences between the node and a restore plan's snapshots, read back. */
async function restoreDifferences(plan: RestorePlan): Promise<string[]> {
  const checks = checksOf(plan);
  return Object.keys(checks).length > 0 ? plan.steps.checkSubsystems({ checks }) : [];
}

/**
 * A node workflow whose steps are local activities sends their audit records in one batch
 * after them (AuditTrail.holdAppends) instead of one batch per record in flight; runs
 * recorded before it replay without the marker and send as they did.
 */
export const AUDIT_AFTER_LOCAL_STEPS_PATCH = 'audit-after-local-steps';

/**
 * Input of {@link nodeChangeWorkflow}; built by the parent from a validated change request.
 * The node workflow does not take the parent's word for it: it parses the input again
 * (model/change-request.ts `nodeChangeInputSchema`) before it reads or applies anything.
 */
export interface NodeChangeInput {
  changeId: string;
  author: string;
  node: string;
  desired?: NodeState;
  patch?: NodePatch;
  dryRun: boolean;
  /**
   * After applying and verifying, report `nodeReady` to the parent and keep running — and so
   * keep the node's lock (the workflow id) — until the parent sends `nodeDecision`: commit,
   * or revert to the snapshot. Used when a later node or a confirmation can still undo the change.
   */
  hold?: boolean;
}

/** The parent's verdict for a held node: keep the change, or restore the snapshot. */
export interface NodeDecision {
  decision: 'commit' | 'revert';
  reason: string;
}

/** Parent → held node workflow. */
export const nodeDecisionSignal = defineSignal<[NodeDecision]>('nodeDecision');
/** Held node workflow → parent: applied and verified, holding the node until the decision. */
export const nodeReadySignal = defineSignal<[NodeChangeResult]>('nodeReady');

/** What happened on one node. */
export interface NodeChangeResult {
  node: string;
  /**
   * `not-applied`: failed while taking the snapshot or planning (an unreadable blocklist
   * file, say), before anything changed. `restored` / `restore-failed`: applied, held,
   * then reverted on the parent's decision.
   */
  outcome: 'planned' | 'unchanged' | 'applied' | 'not-applied' | 'rolled-back' | 'rollback-failed' | 'restored' | 'restore-failed';
  /** The plan as diff lines (`+ route …`, `- block …`); a large blocklist diff is cut short with a line saying how much. */
  diff: string[];
  /** Network state before the change; what a rollback restores. */
  snapshot: ObservedNetworkState;
  /** The blocklist before the change (a store reference or the touched entries), when the change touches it and is not a dry run. */
  blocklistSnapshot?: BlocklistSnapshot;
  /** The blocklist part of the plan, with complete counts. */
  blocklistPlan?: BlocklistPlan;
  /** The subsystems the snapshot covers; a restore touches only these. */
  scope: Subsystem[];
  error?: FailureSummary;
  /** After a rollback that did not verify: what still differs from the snapshot. */
  rollbackDifferences?: string[];
  /** Applied: the node's state after the change, as its verify step checked it (the revision the change records when it commits). */
  revision?: RevisionDelta;
  audit: AuditRecord[];
}

/** Progress of a node workflow, for operators watching one node. */
export interface NodeProgress {
  node: string;
  step: string;
  stepsDone: number;
  stepsTotal: number;
  /** While a restore that did not verify is retrying (workflows/node-recovery.ts): attempt, last error, next try. */
  restore?: RestoreRetryStatus;
}

export const nodeProgressQuery = defineQuery<NodeProgress>('nodeProgress');

/**
 * Applies one change request to one node, rolling back to the snapshot on any failure.
 * `untrusted` is typed for the parent's sake, but anything that can reach the node's task
 * queue can start this workflow with any payload: an input that fails the shared model's
 * schemas fails the workflow with
 * `InvalidNodeChangeInput` (each field and rule in the message) before anything is read.
 */
export async function nodeChangeWorkflow(untrusted: NodeChangeInput): Promise<NodeChangeResult> {
  const input = validatedInput(untrusted);
  const auditTrail = new AuditTrail(input.changeId, input.author, { node: input.node });
  const progress: NodeProgress = { node: input.node, step: 'snapshot', stepsDone: 0, stepsTotal: 2 };
  setHandler(nodeProgressQuery, () => progress);
  let decision: NodeDecision | undefined;
  setHandler(nodeDecisionSignal, (d) => {
    decision ??= d;
  });
  // The workflow id names the node, not the change: these make it findable by change in the UI.
  upsertSearchAttributes([
    { key: SearchAttributes.changeId, value: input.changeId },
    { key: SearchAttributes.author, value: input.author },
    { key: SearchAttributes.targetNodes, value: [input.node] },
  ]);
  const advance = (next: string) => {
    progress.stepsDone++;
    progress.step = next;
  };

  const intents = subsystemIntents(input);
  const scope = changeScope(intents);
  const steps = stepsFor(scope, intents);
  // Local steps run in one workflow task: their records go to the audit store in one batch
  // when they are done (AuditTrail.holdAppends), one activity instead of two. Asked here, in
  // the first workflow task and before any local activity, as every patch of this workflow.
  const batchedAudit = steps === local && patched(AUDIT_AFTER_LOCAL_STEPS_PATCH);
  if (batchedAudit) auditTrail.holdAppends();
  const covered: SubsystemIntents = {};
  for (const s of scope) (covered as Record<string, unknown>)[s] = intents[s];
  let prepared: PreparedSubsystems;
  try {
    // Subsystems outside the scope are not read; every restore and comparison is limited to the same scope.
    prepared = await auditTrail.step(
      'snapshot',
      () => (scope.length > 0 ? steps.prepareSubsystems({ intents: covered, dryRun: input.dryRun, key: prepareKey() }) : Promise.resolve<PreparedSubsystems>({})),
      (p) => scope.map((s) => p[s]?.summary).filter((d) => d !== undefined).join(', ') || 'nothing to read',
    );
  } catch (err) {
    // Nothing has been changed yet: report the failure (a bad blocklist line, a missing
    // reference) as such instead of failing the workflow, which would leave the parent
    // thinking the node's state is unknown.
    progress.step = 'done';
    return { node: input.node, outcome: 'not-applied', diff: [], snapshot: EMPTY_NETWORK, scope, error: summariseFailure(err), audit: auditTrail.records };
  }
  advance('plan');
  const diff = renderDiff(prepared);
  const operations = scope.reduce((n, s) => n + (prepared[s] ? changeCount(prepared[s].plan) : 0), 0);
  auditTrail.record('plan', 'ok', Date.now(), diff.length === 0 ? 'no changes' : `${operations} operations`);
  const plannedSteps = stepsOf(prepared);
  if (!input.dryRun) progress.stepsTotal += plannedSteps.length + 1;
  advance(input.dryRun ? 'done' : (plannedSteps[0] ?? 'verify'));

  const restorePlan: RestorePlan = { prepared, registered: [], steps };
  const blocklist = prepared.blocklist;
  const result = (outcome: NodeChangeResult['outcome'], extra: Partial<NodeChangeResult> = {}): NodeChangeResult => ({
    node: input.node,
    outcome,
    diff,
    snapshot: networkSnapshot(prepared),
    ...(blocklist?.snapshot ? { blocklistSnapshot: blocklist.snapshot } : {}),
    ...(blocklist ? { blocklistPlan: blocklist.plan } : {}),
    scope,
    audit: auditTrail.records,
    ...extra,
  });
  if (input.dryRun) return result('planned');
  if (plannedSteps.length === 0) {
    progress.stepsDone = progress.stepsTotal;
    progress.step = 'done';
    return result('unchanged');
  }

  // An apply that fails half way has already changed the node, so before each step the
  // compensations of its group are registered: a failure at any later point restores them.
  try {
    for (const [i, subsystem] of plannedSteps.entries()) {
      restorePlan.registered.push(...compensationsBefore(subsystem, scope, restorePlan.registered));
      const plan = prepared[subsystem]?.plan;
      await auditTrail.step(
        subsystem,
        () => steps.applySubsystem({ subsystem, intent: intents[subsystem] }),
        (r) => `${r.operations.length} operations${plan && changeCount(plan) > plan.operations.length ? ` (${describeCounts(plan)})` : ''}`,
      );
      advance(plannedSteps[i + 1] ?? 'verify');
    }

    await auditTrail.step('verify', async () => {
      const checks: SubsystemChecks = {};
      for (const s of restorePlan.registered) {
        const expected = prepared[s]?.expected;
        if (expected) (checks as Record<string, unknown>)[s] = expected;
      }
      const differences = await steps.checkSubsystems({ checks });
      if (differences.length > 0) throw new VerificationError(differences);
    });
    advance('done');
  } catch (err) {
    const error = summariseFailure(err);
    log.warn('node change failed; rolling back', { node: input.node, error });
    progress.step = 'rollback';
    const rollback = await runRestore(restorePlan, auditTrail);
    if (rollback.length > 0 && patched(RESTORE_RETRIES_PATCH)) {
      // Before the retries' waits: what happened so far goes to the store now.
      if (batchedAudit) auditTrail.releaseAppends();
      return retryRestore(restoreState(input, restorePlan, result('rolled-back', { error }), 'rollback-failed', rollback, auditTrail, progress), auditTrail, progress);
    }
    progress.step = 'done';
    return result(rollback.length === 0 ? 'rolled-back' : 'rollback-failed', { error, rollbackDifferences: rollback });
  }

  // What the node's desired state became (model/revision.ts): the parent records it as a revision when the change commits.
  const applied = result('applied', { revision: revisionDelta(prepared, input) });
  if (!input.hold) return applied;

  progress.step = 'holding the node until the change commits or reverts';
  // Before the wait: the batch goes out with the nodeReady signal, in the same workflow task.
  if (batchedAudit) auditTrail.releaseAppends();
  const parent = workflowInfo().parent;
  if (parent) await getExternalWorkflowHandle(parent.workflowId, parent.runId).signal(nodeReadySignal, applied);
  try {
    await condition(() => decision !== undefined);
  } catch (err) {
    // The parent closed without deciding (terminated, timed out): a change nobody will
    // confirm must not stay on the node.
    if (!isCancellation(err)) throw err;
    decision = { decision: 'revert', reason: 'the change workflow closed before deciding' };
  }
  if (decision?.decision === 'commit') return applied;
  const reason = decision?.reason ?? 'revert';
  return CancellationScope.nonCancellable(async () => {
    auditTrail.record('restore requested', 'ok', Date.now(), reason);
    progress.step = 'restore';
    const differences = await runRestore(restorePlan, auditTrail);
    if (differences.length > 0 && patched(RESTORE_RETRIES_PATCH)) {
      return retryRestore(restoreState(input, restorePlan, result('restored'), 'restore-failed', differences, auditTrail, progress), auditTrail, progress);
    }
    progress.step = 'done';
    return result(differences.length === 0 ? 'restored' : 'restore-failed', { rollbackDifferences: differences });
  });
}

/** The parsed input, or the `InvalidNodeChangeInput` failure that names what is wrong. */
function validatedInput(untrusted: unknown): NodeChangeInput {
  const validation = validateNodeChangeInput(untrusted);
  if (!validation.ok) {
    const message = `invalid node change input:\n${formatIssues(validation.issues)}`;
    log.warn('node change input refused', { issues: validation.issues });
    throw failure(FailureType.InvalidNodeChangeInput, message, [{ issues: validation.issues }]);
  }
  // Not checked against workflowInfo().taskQueue: a replay worker runs the history on a
  // queue of its own, and a check that differs on replay would break determinism.
  return validation.input;
}

/**
 * The network tables of the snapshot, as NodeChangeResult reports them (by-value
 * snapshots; tables outside the scope read as empty). A rate-limit patch snapshots only
 * the sources it touches, and those are what `rateLimits` lists then.
 */
function networkSnapshot(prepared: PreparedSubsystems): ObservedNetworkState {
  const state = <T>(check: { kind: string; state?: unknown } | undefined, empty: T): T => (check?.kind === 'state' ? (check.state as T) : empty);
  const limits = prepared.ratelimits?.snapshot?.check;
  const rateLimits = limits === undefined ? [] : limits.kind === 'all' ? limits.entries : limits.present;
  return {
    interfaces: state(prepared.links?.snapshot?.check, EMPTY_NETWORK.interfaces),
    routes: state(prepared.routes?.snapshot?.check, EMPTY_NETWORK.routes),
    rules: state(prepared.rules?.snapshot?.check, EMPTY_NETWORK.rules),
    zones: state(prepared.zones?.snapshot?.check, EMPTY_NETWORK.zones),
    nat: state(prepared.nat?.snapshot?.check, EMPTY_NETWORK.nat),
    rateLimits: rateLimits.map((r) => ({ cidr: r.cidr, pps: r.pps, burst: r.burst, ...(r.expiresAt ? { expiresAt: new Date(r.expiresAt * 1000).toISOString() } : {}) })),
  };
}

/**
 * Restores every registered subsystem, newest first, through the shared LIFO compensations
 * (workflows/support.ts): a failing restore does not stop the others, then the node is read
 * back and compared with the snapshot. When something still differs it runs them once more:
 * a restore can depend on a later one (a snapshot route whose gateway is reachable only once
 * the address the change removed is back), and the second pass finds it in place. Returns
 * the differences that remain: empty means the rollback is verified.
 */
async function runRestore(plan: RestorePlan, auditTrail: AuditTrail): Promise<string[]> {
  const compensations = new Compensations(auditTrail);
  // restoresFrom lists newest first; Compensations runs the last added first.
  for (const restore of restoresFrom(plan).reverse()) compensations.add(restore.step, restore.run);
  return compensations.run({ step: 'verify rollback', differences: () => restoreDifferences(plan), ok: 'node equals snapshot' }, 2);
}

/**
 * The key of this run's prepare on the node (activities/prepared-store.ts): a replay or a
 * retried attempt of the same run gets the snapshot taken first, never one of state its
 * own apply already changed. The same on every replay of the run; new for every change.
 */
function prepareKey(): string {
  const info = workflowInfo();
  return `${info.workflowId}/${info.runId}`;
}

/** What a retrying restore carries (workflows/node-recovery.ts). */
function restoreState(input: NodeChangeInput, plan: RestorePlan, verified: NodeChangeResult, failedOutcome: NodeChangeResult['outcome'], differences: string[], trail: AuditTrail, progress: NodeProgress): NodeRestoreInput {
  const { audit: _audit, ...result } = verified;
  // What the rollback's restores reported, as well as what still differs: the cause is more telling than the symptom.
  const restoreErrors = trail.records.filter((r) => r.step.startsWith('restore ') && r.result === 'failed').map((r) => `${r.step}: ${r.detail ?? 'failed'}`);
  return {
    changeId: input.changeId,
    author: input.author,
    node: input.node,
    restores: snapshotsOf(plan),
    checks: checksOf(plan),
    result,
    failedOutcome,
    audit: trail.records,
    retry: { attempt: 0, lastError: [...new Set([...restoreErrors, ...differences])].join('; '), since: Date.now() },
    progress,
  };
}
