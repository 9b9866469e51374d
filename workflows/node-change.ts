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
 *
 * The network subsystems travel through the workflow (snapshot and plan are small). The
 * blocklist does not: it may hold a million entries, more than a payload may carry, so
 * the node plans, snapshots and verifies it by intent (model/blocklist-change.ts) and the
 * workflow only sees counts, a bounded diff, a snapshot reference and a read-back check.
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
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { NodeActivities } from '../activities/node-activities';
import type { AuditRecord } from '../model/audit';
import { type BlocklistIntent, type BlocklistPlan, type BlocklistSnapshot, type PreparedBlocklist, blocklistChangeCount, blocklistIntent } from '../model/blocklist-change';
import type { NodePatch } from '../model/change-request';
import type { NodeState, ObservedNetworkState } from '../model/node-state';
import { summariseFailure, VerificationError, type FailureSummary } from '../model/failures';
import { SearchAttributes } from '../model/naming';
import {
  changeScope,
  planNodeChange,
  planSize,
  renderPlan,
  resolveDesired,
  restorableInterfaces,
  stateDifferences,
  SUBSYSTEM_ORDER,
  withoutBlocklist,
  type Subsystem,
} from '../model/plan';
import { AuditTrail } from './support';

const remote = proxyActivities<NodeActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumAttempts: 4 },
});
const { readNetworkState, syncLinks, syncVlans, syncAddresses, syncRoutes, syncRules, syncZones, syncNat, syncRateLimits } = remote;

/**
 * The blocklist steps of a blocklist-only change (automated blocks), as local activities:
 * the node workflow runs on the node's own worker, which holds the maps, so skipping the
 * server's activity dispatch saves round trips on the alert-to-drop path. The node lock
 * (the workflow id) still serialises them with every other change.
 */
const local = proxyLocalActivities<NodeActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumAttempts: 4 },
});

type BlocklistSteps = Pick<NodeActivities, 'prepareBlocklist' | 'applyBlocklist' | 'checkBlocklist' | 'restoreBlocklist'>;

/** Local activities for a blocklist-only patch, regular ones otherwise (a full list may take seconds). */
function blocklistSteps(scope: readonly Subsystem[], intent: BlocklistIntent): BlocklistSteps {
  return scope.length === 1 && scope[0] === 'blocklist' && intent.mode === 'patch' ? local : remote;
}

type NetworkSubsystem = Exclude<Subsystem, 'blocklist'>;

/** The converge activity of each network subsystem; given the snapshot (and `restore`) it is that subsystem's restore. */
const SYNC: Record<NetworkSubsystem, (state: Omit<NodeState, 'blocklist'> | ObservedNetworkState, restore?: boolean) => Promise<{ operations: string[] }>> = {
  links: (s, restore) => syncLinks({ desired: s.interfaces, restore }),
  vlans: (s) => syncVlans({ desired: s.interfaces }),
  addresses: (s, restore) => syncAddresses({ desired: s.interfaces, restore }),
  routes: (s) => syncRoutes({ desired: s.routes }),
  rules: (s) => syncRules({ desired: s.rules }),
  zones: (s) => syncZones({ desired: s.zones }),
  nat: (s) => syncNat({ desired: s.nat }),
  ratelimits: (s) => syncRateLimits({ desired: s.rateLimits }),
};

const EMPTY_NETWORK: ObservedNetworkState = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] };

/**
 * What a rollback restores and how it checks the result. Network subsystems are restored
 * all (the kernel couples them: removing an interface's last address flushes the routes
 * through it, so a step can change what a later one owns); the blocklist maps depend on
 * nothing else, so they are restored only once the blocklist step has started.
 */
interface RestorePlan {
  network: ObservedNetworkState;
  networkScope: readonly NetworkSubsystem[];
  blocklist?: { snapshot: BlocklistSnapshot; steps: BlocklistSteps };
}

/** Restores, newest-applied first (the blocklist is applied last, so it is restored first). */
function restoresFrom(plan: RestorePlan): { step: string; run: () => Promise<unknown> }[] {
  const network = [...plan.networkScope].reverse().map((subsystem) => ({ step: `restore ${subsystem}`, run: () => SYNC[subsystem](plan.network, true) }));
  const blocklist = plan.blocklist;
  return blocklist ? [{ step: 'restore blocklist', run: () => blocklist.steps.restoreBlocklist({ snapshot: blocklist.snapshot }) }, ...network] : network;
}

/** Differences between the node and a restore plan's snapshot, read back. */
async function restoreDifferences(plan: RestorePlan): Promise<string[]> {
  const differences: string[] = [];
  if (plan.networkScope.length > 0) {
    const actual = await readNetworkState();
    // Foreign interfaces that vanished since the snapshot are not fos1's to bring back.
    differences.push(...stateDifferences(actual, { ...plan.network, interfaces: restorableInterfaces(plan.network.interfaces, actual.interfaces) }));
  }
  if (plan.blocklist) differences.push(...(await plan.blocklist.steps.checkBlocklist({ check: plan.blocklist.snapshot.check })));
  return differences;
}

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
  const networkScope = SUBSYSTEM_ORDER.filter((s): s is NetworkSubsystem => s !== 'blocklist' && scope.includes(s));
  const intent: BlocklistIntent = blocklistIntent(input);
  const blocklist = blocklistSteps(scope, intent);
  let taken: { network: ObservedNetworkState; prepared: PreparedBlocklist | undefined };
  try {
    taken = await auditTrail.step(
      'snapshot',
      async () => ({
        // Subsystems outside the scope are not read: their empty lists mean "not read",
        // which is why every restore and comparison is limited to the same scope.
        network: networkScope.length > 0 ? await readNetworkState() : EMPTY_NETWORK,
        prepared: intent.mode === 'keep' ? undefined : await blocklist.prepareBlocklist({ intent, dryRun: input.dryRun }),
      }),
      ({ network: s, prepared: p }) =>
        `${s.interfaces.length} interfaces, ${s.routes.length} routes, ${s.rules.length} rules, ${s.zones.length} zones, ${s.nat.sourceNat.length + s.nat.portForwards.length} NAT rules, ${describeBlocklistSnapshot(p)}`,
    );
  } catch (err) {
    // Nothing has been changed yet: report the failure (a bad blocklist line, a missing
    // reference) as such instead of failing the workflow, which would leave the parent
    // thinking the node's state is unknown.
    progress.step = 'done';
    return { node: input.node, outcome: 'not-applied', diff: [], snapshot: EMPTY_NETWORK, scope, error: summariseFailure(err), audit: auditTrail.records };
  }
  const { network: snapshot, prepared } = taken;
  advance('plan');
  const desired = withoutBlocklist(resolveDesired(snapshot, input));
  const plan = planNodeChange(snapshot, desired);
  const blocklistPlan = prepared?.plan;
  const blocklistChanges = blocklistPlan ? blocklistChangeCount(blocklistPlan) : 0;
  const diff = [...renderPlan(plan), ...(blocklistPlan?.operations ?? [])];
  if (blocklistPlan && blocklistChanges > blocklistPlan.operations.length) {
    diff.push(`… and ${blocklistChanges - blocklistPlan.operations.length} more blocklist operations (${describeCounts(blocklistPlan)})`);
  }
  auditTrail.record('plan', 'ok', Date.now(), diff.length === 0 ? 'no changes' : `${planSize(plan) + blocklistChanges} operations`);
  const steps = SUBSYSTEM_ORDER.filter((subsystem) => (subsystem === 'blocklist' ? blocklistChanges > 0 : plan[subsystem].length > 0));
  if (!input.dryRun) progress.stepsTotal += steps.length + 1;
  advance(input.dryRun ? 'done' : (steps[0] ?? 'verify'));

  const restorePlan: RestorePlan = { network: snapshot, networkScope };
  const result = (outcome: NodeChangeResult['outcome'], extra: Partial<NodeChangeResult> = {}): NodeChangeResult => ({
    node: input.node,
    outcome,
    diff,
    snapshot,
    ...(prepared?.snapshot ? { blocklistSnapshot: prepared.snapshot } : {}),
    ...(blocklistPlan ? { blocklistPlan } : {}),
    scope,
    audit: auditTrail.records,
    ...extra,
  });
  if (input.dryRun) return result('planned');
  if (steps.length === 0) {
    progress.stepsDone = progress.stepsTotal;
    progress.step = 'done';
    return result('unchanged');
  }

  // An apply that fails half way has already changed the node, so a failure at any step
  // restores every subsystem from the snapshot (converging, so untouched ones are no-ops).
  try {
    for (const [i, subsystem] of steps.entries()) {
      if (subsystem === 'blocklist') {
        // From here on the maps may have changed, so a rollback restores them too.
        if (prepared?.snapshot) restorePlan.blocklist = { snapshot: prepared.snapshot, steps: blocklist };
        await auditTrail.step('blocklist', () => blocklist.applyBlocklist({ intent }), (r) => `${r.operations.length} operations${blocklistPlan ? ` (${describeCounts(blocklistPlan)})` : ''}`);
      } else {
        await auditTrail.step(subsystem, () => SYNC[subsystem](desired), (r) => `${r.operations.length} operations`);
      }
      advance(steps[i + 1] ?? 'verify');
    }

    await auditTrail.step('verify', async () => {
      const differences = networkScope.length > 0 ? stateDifferences(await readNetworkState(), desired) : [];
      if (prepared && steps.includes('blocklist')) differences.push(...(await blocklist.checkBlocklist({ check: prepared.expected })));
      if (differences.length > 0) throw new VerificationError(differences);
    });
    advance('done');
  } catch (err) {
    const error = summariseFailure(err);
    log.warn('node change failed; rolling back', { node: input.node, error });
    progress.step = 'rollback';
    const rollback = await runRestore(restorePlan, auditTrail);
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
    const differences = await runRestore(restorePlan, auditTrail);
    progress.step = 'done';
    return result(differences.length === 0 ? 'restored' : 'restore-failed', { rollbackDifferences: differences });
  });
}

function describeCounts(plan: BlocklistPlan): string {
  return `${plan.counts.added} added, ${plan.counts.changed} changed, ${plan.counts.removed} removed`;
}

function describeBlocklistSnapshot(prepared: PreparedBlocklist | undefined): string {
  const check = prepared?.snapshot?.check;
  if (!prepared) return 'blocklist untouched';
  if (!check) return 'blocklist planned (dry run: no snapshot)';
  if (check.kind === 'digest') return `${check.count} blocklist entries (snapshot ${prepared.snapshot?.ref?.sha256.slice(0, 12) ?? '?'}…)`;
  return `${check.present.length + check.absent.length} touched blocklist prefixes (${check.present.length} present)`;
}

/**
 * Runs the restores in order (reverse of apply), keeps going when one fails so every
 * subsystem gets its chance, then reads the node back and compares it with the snapshot.
 * When something still differs it runs them once more: a restore can depend on a later
 * one (a snapshot route whose gateway is reachable only once the address the change removed
 * is back), and the second pass finds it in place. Returns the differences that remain:
 * empty means the rollback is verified.
 */
async function runRestore(plan: RestorePlan, auditTrail: AuditTrail): Promise<string[]> {
  const compensations = restoresFrom(plan);
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
  try {
    let differences = await restoreDifferences(plan);
    if (differences.length > 0) {
      auditTrail.record('verify rollback', 'failed', Date.now(), `${differences.join('; ')}; restoring once more`);
      await pass();
      differences = await restoreDifferences(plan);
    }
    auditTrail.record('verify rollback', differences.length === 0 ? 'ok' : 'failed', Date.now(), differences.join('; ') || 'node equals snapshot');
    return differences;
  } catch (err) {
    const message = `could not read the node back: ${summariseFailure(err).message}`;
    auditTrail.record('verify rollback', 'failed', Date.now(), message);
    return [message];
  }
}
