/**
 * The change workflow: one change request, every target node, all or nothing.
 *
 *   validate → for each node (canary first, one at a time): child nodeChangeWorkflow on
 *   that node's task queue → [commit-confirmed wait] → done
 *
 * A node that fails rolls itself back; the parent then restores every node that had
 * already applied, newest first. With `confirmTimeout`, the change stays provisional
 * until someone sends the `confirm` update; if none arrives in time every node is
 * restored to its snapshot (Junos-style "commit confirmed").
 *
 * The single argument is `unknown` on purpose: it arrives as raw JSON from the Web UI,
 * the CLI or the API, and is validated here before anything runs.
 */
import {
  ApplicationFailure,
  condition,
  defineQuery,
  defineSignal,
  defineUpdate,
  executeChild,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { AuditRecord } from '../model/audit';
import { formatIssues, validateChangeRequest, type ChangeRequest, type ValidationIssue } from '../model/change-request';
import { nodeTaskQueue, SearchAttributes } from '../model/naming';
import {
  AuditTrail,
  nodeChangeWorkflow,
  nodeRestoreWorkflow,
  type FailureSummary,
  type NodeChangeResult,
} from './node-change';

/** Where a change stands. */
export type ChangePhase =
  | 'validating'
  | 'rejected'
  | 'rolling-out'
  | 'awaiting-confirmation'
  | 'reverting'
  | 'planned'
  | 'applied'
  | 'unchanged'
  | 'reverted'
  | 'rolled-back'
  | 'rollback-failed';

/** Per-node view in the status. */
export interface NodeReport {
  outcome: 'pending' | NodeChangeResult['outcome'] | 'restored' | 'restore-failed';
  diff: string[];
  error?: FailureSummary;
  differences?: string[];
}

/** Answer of the `status` query, the `confirm` update, and the workflow's result. */
export interface ChangeStatus {
  changeId?: string;
  phase: ChangePhase;
  message: string;
  progress: { nodesDone: number; nodesTotal: number };
  /** When an unconfirmed change reverts by itself (commit-confirmed), ISO 8601. */
  confirmDeadline?: string;
  nodes: Record<string, NodeReport>;
  issues?: ValidationIssue[];
  audit: AuditRecord[];
}

/** Who confirms or aborts, for the audit trail. */
export interface OperatorAction {
  by?: string;
  reason?: string;
}

export const statusQuery = defineQuery<ChangeStatus>('status');
export const confirmUpdate = defineUpdate<ChangeStatus, [OperatorAction]>('confirm');
export const abortSignal = defineSignal<[OperatorAction]>('abort');

/** Failure types of the change workflow, for clients to branch on. */
export const ChangeFailureType = {
  InvalidChangeRequest: 'InvalidChangeRequest',
  ChangeRolledBack: 'ChangeRolledBack',
  RollbackFailed: 'RollbackFailed',
} as const;

/** Runs one change request. See the module comment for the shape. */
export async function changeWorkflow(input: unknown): Promise<ChangeStatus> {
  const status: ChangeStatus = { phase: 'validating', message: 'validating the request', progress: { nodesDone: 0, nodesTotal: 0 }, nodes: {}, audit: [] };
  // Set by the confirm update and the abort signal; read after every await.
  const operator: { confirmation?: OperatorAction; abort?: OperatorAction } = {};

  setHandler(statusQuery, () => status);
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

  const validatedAt = Date.now();
  const validation = validateChangeRequest(input, validatedAt);
  const rawId = typeof input === 'object' && input !== null ? (input as { id?: unknown }).id : undefined;
  const trail = new AuditTrail(validation.ok ? validation.request.id : String(rawId ?? workflowInfo().workflowId), validation.ok ? validation.request.author : 'unknown');
  if (!validation.ok) {
    trail.record('validate', 'failed', validatedAt, formatIssues(validation.issues));
    Object.assign(status, { phase: 'rejected', message: `invalid change request:\n${formatIssues(validation.issues)}`, issues: validation.issues, audit: trail.records });
    setSearchStatus('rejected');
    throw ApplicationFailure.create({
      type: ChangeFailureType.InvalidChangeRequest,
      message: status.message,
      nonRetryable: true,
      details: [status],
    });
  }
  const request = validation.request;
  trail.record('validate', 'ok', validatedAt, `${request.targets.length} node(s), ${request.desired ? 'full state' : 'patch'}${request.options.dryRun ? ', dry run' : ''}`);
  status.changeId = request.id;
  status.progress.nodesTotal = request.targets.length;
  for (const node of request.targets) status.nodes[node] = { outcome: 'pending', diff: [] };
  upsertSearchAttributes([
    { key: SearchAttributes.changeId, value: request.id },
    { key: SearchAttributes.author, value: request.author },
    { key: SearchAttributes.targetNodes, value: request.targets },
  ]);
  setPhase('rolling-out', request.options.dryRun ? 'planning on every node' : 'applying node by node');

  // Nodes that applied, newest last, with their snapshots: what a revert must restore.
  const applied: NodeChangeResult[] = [];
  for (const node of request.targets) {
    if (operator.abort) break;
    const result = await executeChild(nodeChangeWorkflow, {
      taskQueue: nodeTaskQueue(node),
      workflowId: `${workflowInfo().workflowId}/node/${node}`,
      args: [{ changeId: request.id, author: request.author, node, desired: request.desired, patch: request.patch, dryRun: request.options.dryRun }],
    });
    trail.records.push(...result.audit);
    status.nodes[node] = { outcome: result.outcome, diff: result.diff, ...(result.error ? { error: result.error } : {}), ...(result.rollbackDifferences ? { differences: result.rollbackDifferences } : {}) };
    status.progress.nodesDone++;
    status.audit = trail.records;

    if (result.outcome === 'rolled-back' || result.outcome === 'rollback-failed') {
      await revert(request, applied, trail, `node ${node} failed: ${result.error?.message ?? 'unknown error'}`);
      const clean = result.outcome === 'rolled-back' && applied.every((a) => status.nodes[a.node]?.outcome === 'restored');
      return finish(clean ? 'rolled-back' : 'rollback-failed', `change failed on node ${node} (${result.error?.type}: ${result.error?.message}); ${clean ? 'every node was rolled back and verified against its snapshot' : 'ROLLBACK INCOMPLETE — see nodes for the differences left'}`, true);
    }
    if (result.outcome === 'applied') applied.push(result);
  }

  if (request.options.dryRun) return finish('planned', 'dry run: nothing was changed; see each node\'s diff');
  if (operator.abort) {
    const why = describeAction('aborted', operator.abort);
    await revert(request, applied, trail, why);
    return finish('reverted', `${why} during rollout; applied nodes were restored`);
  }
  if (applied.length === 0) return finish('unchanged', 'every node already matched the desired state');

  const confirmTimeout = request.options.confirmTimeout;
  if (confirmTimeout !== undefined) {
    status.confirmDeadline = new Date(Date.now() + confirmTimeout).toISOString();
    setPhase('awaiting-confirmation', `applied; send "confirm" before ${status.confirmDeadline} or every node reverts`);
    const waitStarted = Date.now();
    await condition(() => operator.confirmation !== undefined || operator.abort !== undefined, confirmTimeout);
    if (operator.confirmation && !operator.abort) {
      trail.record('confirm', 'ok', waitStarted, describeAction('confirmed', operator.confirmation));
    } else {
      const why = operator.abort ? describeAction('aborted', operator.abort) : `not confirmed within ${confirmTimeout / 1000}s`;
      trail.record('confirm', 'failed', waitStarted, why);
      await revert(request, applied, trail, why);
      const clean = applied.every((a) => status.nodes[a.node]?.outcome === 'restored');
      return finish(clean ? 'reverted' : 'rollback-failed', `${why}; ${clean ? 'every node was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see nodes'}`, !clean);
    }
  }
  return finish('applied', `applied and verified on ${applied.length} node(s)`);

  function setPhase(phase: ChangePhase, message: string): void {
    status.phase = phase;
    status.message = message;
    setSearchStatus(phase);
  }

  function finish(phase: ChangePhase, message: string, failed = false): ChangeStatus {
    setPhase(phase, message);
    status.audit = trail.records;
    if (failed) {
      throw ApplicationFailure.create({
        type: phase === 'rollback-failed' ? ChangeFailureType.RollbackFailed : ChangeFailureType.ChangeRolledBack,
        message,
        nonRetryable: true,
        details: [status],
      });
    }
    return status;
  }

  /** Restores applied nodes newest first, each through a restore workflow on its own queue. */
  async function revert(req: ChangeRequest, nodes: NodeChangeResult[], auditTrail: AuditTrail, reason: string): Promise<void> {
    setPhase('reverting', reason);
    for (const done of [...nodes].reverse()) {
      const restored = await executeChild(nodeRestoreWorkflow, {
        taskQueue: nodeTaskQueue(done.node),
        workflowId: `${workflowInfo().workflowId}/restore/${done.node}`,
        args: [{ changeId: req.id, actor: req.author, node: done.node, snapshot: done.snapshot, scope: done.scope, reason }],
      });
      auditTrail.records.push(...restored.audit);
      const report = status.nodes[done.node];
      if (report) Object.assign(report, { outcome: restored.outcome, differences: restored.differences });
    }
  }
}

function describeAction(verb: string, action: OperatorAction): string {
  return `${verb} by ${action.by ?? 'an operator'}${action.reason ? `: ${action.reason}` : ''}`;
}

function setSearchStatus(phase: ChangePhase): void {
  upsertSearchAttributes([{ key: SearchAttributes.status, value: phase }]);
}
