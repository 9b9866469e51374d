/**
 * The change workflow's cluster-only path: a request that carries `clusterPolicy` and no node
 * part (no targets or selector, no desired state or patch; model/change-request.ts
 * `isClusterOnly`). It is a change like any other, with 0 nodes:
 *
 *   validate → identity check (both done by changeWorkflow) → **prepare** the cluster policy
 *   (policy-map estimate, server-side dry-run against the cluster's CRDs, snapshot; a dry run
 *   stops here) → approval gate (the approval policy decides; the digest covers the cluster
 *   plan) → [maintenance window] → **apply** once with fos1's field manager, read back →
 *   [commit-confirmed wait] → done
 *
 *   rollback (the apply or its read-back failed, an abort, no confirmation): **restore** every
 *   snapshotted object exactly, read back against the snapshot (workflows/cluster-policy-step.ts).
 *
 * Every step goes to the change's audit trail (durable, like every change). This is how the
 * FirewallRule and FirewallZone controllers change Cilium policy (controllers/firewall-rule-controller.ts).
 *
 * Replay: requests of this shape were refused by validation before this path existed; the
 * change workflow asks `patched('cluster-only-change')` before it takes it, so a replayed
 * refusal refuses again and no existing request shape issues a new command.
 */
import { condition } from '@temporalio/workflow';
import type { ChangeRequest } from '../model/change-request';
import { FailureType, type FailureTypeName } from '../model/failures';
import { ApprovalGate, type GatePhase } from './approval';
import type { ChangePhase, ChangeStatus, OperatorAction } from './change';
import { ClusterPolicyStep } from './cluster-policy-step';
import type { AuditTrail } from './support';

/** What the cluster-only path needs from the change workflow (its state and its ways to end). */
export interface ClusterOnlyHost {
  request: ChangeRequest;
  /** When the request was validated (the `validate` record's start). */
  validatedAt: number;
  /** The author's identity as verified at submit (undefined: not checked). */
  identity: { verified: boolean; roles?: string[] } | undefined;
  trail: AuditTrail;
  status: ChangeStatus;
  /** Set by the change workflow's updates and signals; read after every await. */
  operator: { confirmation?: OperatorAction; abort?: OperatorAction };
  setPhase(phase: ChangePhase | GatePhase, message: string): void;
  finish(phase: ChangePhase, message: string, failureType?: FailureTypeName): ChangeStatus;
  finishError(phase: 'rejected', message: string, failureType: FailureTypeName): Error;
  describeAction(verb: string, action: OperatorAction): string;
}

/** What every message of this path says, so a status is never read as "no node was reached". */
const SCOPE = 'cluster policy only (0 nodes)';

/** Runs a cluster-only change to its end; see the module comment for the order. */
export async function clusterOnlyChange(host: ClusterOnlyHost): Promise<ChangeStatus> {
  const { request, trail, status, operator, finish, describeAction } = host;
  const dryRun = request.options.dryRun;
  trail.record('validate', 'ok', host.validatedAt, `${SCOPE}${dryRun ? ', dry run' : ''}`);
  status.progress.nodesTotal = 0;
  status.waves = [];

  const step = await ClusterPolicyStep.prepare({ request, trail, status, fail: host.finishError });
  // Undefined only on a worker whose code predates the Cilium step: nothing to run.
  if (!step) throw host.finishError('rejected', `invalid change request:\nclusterPolicy: this worker cannot apply cluster policy; nothing was applied`, FailureType.InvalidChangeRequest);
  if (dryRun) return finish('planned', `dry run, ${SCOPE}: nothing was changed; see clusterPolicy.plan`);

  // The approval policy judges it like any change: no targets, no node subsystems, 0 node
  // operations; the cluster plan is part of the approved digest.
  const gate = await ApprovalGate.open({
    request,
    targets: [],
    strategy: { waves: [], clusterPolicy: step.plan },
    identity: { verified: host.identity?.verified ?? false, roles: host.identity?.roles ?? [] },
    trail,
    status,
    setPhase: host.setPhase,
    aborted: () => operator.abort !== undefined,
  });
  status.audit = trail.records;
  if (!(gate instanceof ApprovalGate)) return finish(gate.phase, gate.message, gate.failureType);
  await gate.beforeNode();
  if (operator.abort) return finish('aborted', `${describeAction('aborted', operator.abort)} before anything was applied; the cluster policy was not changed`);
  if (!step.changes) return finish('unchanged', `${SCOPE}: every object already matched the desired policy`);

  host.setPhase('rolling-out', `${SCOPE}: applying with server-side apply`);
  const failed = await step.applyOnce();
  if (failed) {
    return finish(step.clean ? 'rolled-back' : 'rollback-failed', `${failed.why}; ${step.clean ? 'the cluster policy was restored and verified against its snapshot' : 'ROLLBACK INCOMPLETE — see clusterPolicy.differences'}; ${SCOPE}`, failed.type);
  }
  // An abort that arrived while the apply ran takes it back.
  if (operator.abort) return revert(describeAction('aborted', operator.abort));

  const confirmTimeout = request.options.confirmTimeout;
  if (confirmTimeout !== undefined) {
    status.confirmDeadline = new Date(Date.now() + confirmTimeout).toISOString();
    host.setPhase('awaiting-confirmation', `applied (${SCOPE}); send "confirm" before ${status.confirmDeadline} or the cluster policy reverts`);
    const waitStarted = Date.now();
    await condition(() => operator.confirmation !== undefined || operator.abort !== undefined, confirmTimeout);
    if (!operator.confirmation || operator.abort) {
      const why = operator.abort ? describeAction('aborted', operator.abort) : `not confirmed within ${confirmTimeout / 1000}s`;
      trail.record('confirm', 'failed', waitStarted, why);
      return revert(why);
    }
    trail.record('confirm', 'ok', waitStarted, describeAction('confirmed', operator.confirmation));
  }
  return finish('applied', `cluster policy applied and verified by read-back (${planSummary(step.plan)}); ${SCOPE}`);

  async function revert(why: string): Promise<ChangeStatus> {
    host.setPhase('reverting', why);
    await step?.restore(why);
    const clean = step?.clean ?? true;
    return finish(clean ? 'reverted' : 'rollback-failed', `${why}; ${clean ? 'the cluster policy was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see clusterPolicy.differences'}; ${SCOPE}`, clean ? undefined : FailureType.RollbackFailed);
  }
}

/** The plan's changed lines for a status message: the first few, and how many more. */
function planSummary(plan: string[]): string {
  const changed = plan.filter((l) => !l.startsWith('='));
  const shown = changed.slice(0, 5).join(', ');
  return changed.length > 5 ? `${shown} and ${changed.length - 5} more` : shown;
}
