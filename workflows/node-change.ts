/**
 * Per-node workflows. They run on the node's own task queue, so their activities execute
 * on the worker of that node and nowhere else.
 *
 *   nodeChangeWorkflow:  snapshot → plan → (dry-run stops) → links → vlans → addresses →
 *                        routes → rules → zones → nat → blocklist → verify (steps without planned
 *                        operations are skipped)
 *                        └─ on any failure after the first apply: restore every subsystem
 *                           from the snapshot in reverse order, then read back and compare
 *                           with the snapshot
 *                        └─ with `hold`: report `nodeReady` to the parent, keep the node's lock,
 *                           and on the parent's `nodeDecision` commit or restore the snapshot
 */
import {
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  proxyActivities,
  proxyLocalActivities,
  proxySinks,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { NodeActivities } from '../activities/node-activities';
import type { AuditRecord, AuditSinks } from '../model/audit';
import type { NodePatch } from '../model/change-request';
import type { NodeState, ObservedNodeState } from '../model/node-state';
import { SearchAttributes } from '../model/naming';
import { changeScope, planNodeChange, planSize, renderPlan, resolveDesired, restorableInterfaces, stateDifferences, SUBSYSTEM_ORDER, type Subsystem } from '../model/plan';

const { readNodeState, syncLinks, syncVlans, syncAddresses, syncRoutes, syncRules, syncZones, syncNat, syncBlocklist } = proxyActivities<NodeActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumAttempts: 4 },
});

/**
 * The blocklist reads and writes of a blocklist-only change (automated blocks), as local
 * activities: the node workflow runs on the node's own worker, which holds the maps, so
 * skipping the server's activity dispatch saves round trips on the alert-to-drop path.
 * The node lock (the workflow id) still serialises them with every other change.
 */
const local = proxyLocalActivities<NodeActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumAttempts: 4 },
});

/** True for a change that only touches the blocklist (see {@link changeScope}). */
function blocklistOnly(scope: readonly Subsystem[]): boolean {
  return scope.length === 1 && scope[0] === 'blocklist';
}

/** The converge activity for `subsystem` in a change of `scope`. */
function syncFor(subsystem: Subsystem, scope: readonly Subsystem[]): (typeof SYNC)[Subsystem] {
  if (subsystem === 'blocklist' && blocklistOnly(scope)) return (s) => local.syncBlocklist({ desired: s.blocklist });
  return SYNC[subsystem];
}

/**
 * The converge activity of each subsystem; given the snapshot (and `restore`) it is that
 * subsystem's restore.
 */
const SYNC: Record<Subsystem, (state: NodeState | ObservedNodeState, restore?: boolean) => Promise<{ operations: string[] }>> = {
  links: (s, restore) => syncLinks({ desired: s.interfaces, restore }),
  vlans: (s) => syncVlans({ desired: s.interfaces }),
  addresses: (s, restore) => syncAddresses({ desired: s.interfaces, restore }),
  routes: (s) => syncRoutes({ desired: s.routes }),
  rules: (s) => syncRules({ desired: s.rules }),
  zones: (s) => syncZones({ desired: s.zones }),
  nat: (s) => syncNat({ desired: s.nat }),
  blocklist: (s) => syncBlocklist({ desired: s.blocklist }),
};

/**
 * Restores of every subsystem, newest-applied first. A rollback restores all of them, not
 * only the steps that ran: the kernel couples subsystems (removing an interface's last
 * address flushes the routes through it), so a step can change what a later one owns.
 */
function restoresFrom(snapshot: ObservedNodeState, scope: readonly Subsystem[]): { step: string; run: () => Promise<unknown> }[] {
  return [...SUBSYSTEM_ORDER]
    .reverse()
    .filter((subsystem) => scope.includes(subsystem))
    .map((subsystem) => ({ step: `restore ${subsystem}`, run: () => syncFor(subsystem, scope)(snapshot, true) }));
}

/**
 * Reads the subsystems in `scope`. Those outside it come back empty and are never
 * restored or compared (see {@link changeScope}): an empty list there means "not read",
 * which is why every restore and comparison is limited to the same scope.
 */
async function readScoped(scope: readonly Subsystem[]): Promise<ObservedNodeState> {
  if (SUBSYSTEM_ORDER.every((s) => scope.includes(s))) return readNodeState();
  return { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, blocklist: await local.readBlocklist() };
}
const { audit } = proxySinks<AuditSinks>();

/** Input of {@link nodeChangeWorkflow}; built by the parent from a validated change request. */
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

/** A failure as workflows report it: the ApplicationFailure type and its message. */
export interface FailureSummary {
  type: string;
  message: string;
}

/** What happened on one node. */
export interface NodeChangeResult {
  node: string;
  /** `restored` / `restore-failed`: applied, held, then reverted on the parent's decision. */
  outcome: 'planned' | 'unchanged' | 'applied' | 'rolled-back' | 'rollback-failed' | 'restored' | 'restore-failed';
  /** The plan as diff lines (`+ route …`, `- block …`). */
  diff: string[];
  /** State before the change; what a rollback restores. */
  snapshot: ObservedNodeState;
  /** The subsystems the snapshot covers; a restore touches only these. */
  scope: Subsystem[];
  error?: FailureSummary;
  /** After a rollback that did not verify: what still differs from the snapshot. */
  rollbackDifferences?: string[];
  audit: AuditRecord[];
}

/** Progress of a node workflow, for operators watching one node. */
export interface NodeProgress {
  node: string;
  step: string;
  stepsDone: number;
  stepsTotal: number;
}

export const nodeProgressQuery = defineQuery<NodeProgress>('nodeProgress');

/** Applies one change request to one node, rolling back to the snapshot on any failure. */
export async function nodeChangeWorkflow(input: NodeChangeInput): Promise<NodeChangeResult> {
  const auditTrail = new AuditTrail(input.changeId, input.author, input.node);
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

  const scope = changeScope(input);
  const snapshot = await auditTrail.step(
    'snapshot',
    () => readScoped(scope),
    (s) =>
      `${s.interfaces.length} interfaces, ${s.routes.length} routes, ${s.rules.length} rules, ${s.zones.length} zones, ${s.nat.sourceNat.length + s.nat.portForwards.length} NAT rules, ${s.blocklist.length} blocklist entries`,
  );
  advance('plan');
  const desired = resolveDesired(snapshot, input);
  const plan = planNodeChange(snapshot, desired);
  const diff = renderPlan(plan);
  auditTrail.record('plan', 'ok', Date.now(), diff.length === 0 ? 'no changes' : `${diff.length} operations`);
  const steps = SUBSYSTEM_ORDER.filter((subsystem) => plan[subsystem].length > 0);
  if (!input.dryRun) progress.stepsTotal += steps.length + 1;
  advance(input.dryRun ? 'done' : (steps[0] ?? 'verify'));

  const result = (outcome: NodeChangeResult['outcome'], extra: Partial<NodeChangeResult> = {}): NodeChangeResult => ({
    node: input.node,
    outcome,
    diff,
    snapshot,
    scope,
    audit: auditTrail.records,
    ...extra,
  });
  if (input.dryRun) return result('planned');
  if (planSize(plan) === 0) {
    progress.stepsDone = progress.stepsTotal;
    progress.step = 'done';
    return result('unchanged');
  }

  // An apply that fails half way has already changed the node, so a failure at any step
  // restores every subsystem from the snapshot (converging, so untouched ones are no-ops).
  try {
    for (const [i, subsystem] of steps.entries()) {
      await auditTrail.step(subsystem, () => syncFor(subsystem, scope)(desired), (r) => `${r.operations.length} operations`);
      advance(steps[i + 1] ?? 'verify');
    }

    await auditTrail.step('verify', async () => {
      const differences = stateDifferences(await readScoped(scope), desired);
      if (differences.length > 0) throw new VerificationError(differences);
    });
    advance('done');
  } catch (err) {
    const error = summariseFailure(err);
    log.warn('node change failed; rolling back', { node: input.node, error });
    progress.step = 'rollback';
    const rollback = await runRestore(restoresFrom(snapshot, scope), snapshot, scope, auditTrail);
    progress.step = 'done';
    return result(rollback.length === 0 ? 'rolled-back' : 'rollback-failed', { error, rollbackDifferences: rollback });
  }

  const applied = result('applied');
  if (!input.hold) return applied;

  progress.step = 'holding the node until the change commits or reverts';
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
    const differences = await runRestore(restoresFrom(snapshot, scope), snapshot, scope, auditTrail);
    progress.step = 'done';
    return result(differences.length === 0 ? 'restored' : 'restore-failed', { rollbackDifferences: differences });
  });
}

/**
 * Runs compensations in order (reverse of apply), keeps going when one fails so every
 * subsystem gets its chance, then reads the node back and compares it with the snapshot.
 * When something still differs it runs them once more: a restore can depend on a later
 * one (a snapshot route whose gateway is reachable only once the address the change removed
 * is back), and the second pass finds it in place. Returns the differences that remain:
 * empty means the rollback is verified.
 */
async function runRestore(
  compensations: { step: string; run: () => Promise<unknown> }[],
  snapshot: ObservedNodeState,
  scope: readonly Subsystem[],
  auditTrail: AuditTrail,
): Promise<string[]> {
  const pass = async () => {
    for (const compensation of compensations) {
      try {
        await auditTrail.step(compensation.step, compensation.run);
      } catch {
        // Recorded in the audit trail; the read-back below reports what is left.
      }
    }
  };
  await pass();
  // Foreign interfaces that vanished since the snapshot are not fos1's to bring back.
  const compare = (actual: ObservedNodeState) =>
    stateDifferences(actual, { ...snapshot, interfaces: restorableInterfaces(snapshot.interfaces, actual.interfaces) });
  try {
    let differences = compare(await readScoped(scope));
    if (differences.length > 0) {
      auditTrail.record('verify rollback', 'failed', Date.now(), `${differences.join('; ')}; restoring once more`);
      await pass();
      differences = compare(await readScoped(scope));
    }
    auditTrail.record('verify rollback', differences.length === 0 ? 'ok' : 'failed', Date.now(), differences.join('; ') || 'node equals snapshot');
    return differences;
  } catch (err) {
    const message = `could not read the node back: ${summariseFailure(err).message}`;
    auditTrail.record('verify rollback', 'failed', Date.now(), message);
    return [message];
  }
}

/** Verification found the node different from what the change asked for. */
class VerificationError extends Error {
  readonly type = 'VerificationFailed';
  constructor(readonly differences: string[]) {
    super(`read-back differs from the desired state: ${differences.join('; ')}`);
  }
}

/**
 * Extracts the failure type and message. Activity failures wrap an ApplicationFailure
 * whose `type` was set by the activity; we walk the cause chain by shape (not
 * `instanceof`, which is unreliable across the workflow sandbox).
 */
export function summariseFailure(err: unknown): FailureSummary {
  let current: unknown = err;
  while (current && typeof current === 'object') {
    const candidate = current as { type?: unknown; message?: unknown; cause?: unknown };
    if (typeof candidate.type === 'string' && candidate.type !== '') {
      return { type: candidate.type, message: String(candidate.message ?? '') };
    }
    current = candidate.cause;
  }
  const message = err instanceof Error ? err.message : String(err);
  return { type: 'UnknownFailure', message };
}

/** Collects audit records for one workflow and mirrors each to the worker's audit sink. */
export class AuditTrail {
  readonly records: AuditRecord[] = [];
  constructor(
    private readonly changeId: string,
    private readonly actor: string,
    private readonly node?: string,
  ) {}

  /** Runs `fn` as a named step and records its result and duration. */
  async step<T>(step: string, fn: () => Promise<T>, describe?: (r: T) => string): Promise<T> {
    const startedAt = Date.now();
    try {
      const value = await fn();
      this.record(step, 'ok', startedAt, describe?.(value));
      return value;
    } catch (err) {
      this.record(step, 'failed', startedAt, summariseFailure(err).message);
      throw err;
    }
  }

  /** Records a step that already happened. */
  record(step: string, result: AuditRecord['result'], startedAt: number, detail?: string): void {
    const record: AuditRecord = {
      changeId: this.changeId,
      actor: this.actor,
      ...(this.node ? { node: this.node } : {}),
      step,
      result,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: Date.now() - startedAt,
      ...(detail !== undefined ? { detail } : {}),
    };
    this.records.push(record);
    audit.record(record);
  }
}
