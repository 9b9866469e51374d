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
 * the CLI or the API, and is validated here before anything runs. Its failure types
 * (`InvalidChangeRequest`, `NodeBusy`, `ChangeRolledBack`, `RollbackFailed`) are in model/failures.ts.
 */
import {
  condition,
  defineQuery,
  defineSignal,
  defineUpdate,
  ParentClosePolicy,
  patched,
  proxyLocalActivities,
  setHandler,
  startChild,
  type ChildWorkflowHandle,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { IdentityActivities } from '../activities/identity';
import type { AuditRecord } from '../model/audit';
import { formatIssues, validateChangeRequest, type ValidationIssue } from '../model/change-request';
import { nodeLockWorkflowId, nodeTaskQueue, SearchAttributes } from '../model/naming';
import { failure, FailureType, summariseFailure, type FailureSummary, type FailureTypeName } from '../model/failures';
import { nodeChangeWorkflow, nodeDecisionSignal, nodeReadySignal, type NodeChangeResult } from './node-change';
import { commitRevisions } from './revisions';
import { AuditTrail, isAlreadyStarted } from './support';

/** Where a change stands. */
export type ChangePhase =
  | 'validating'
  | 'rejected'
  | 'rolling-out'
  | 'waiting-for-node'
  | 'awaiting-confirmation'
  | 'reverting'
  | 'planned'
  /** Aborted before anything was applied (while waiting for a node's lock, say): nothing changed. */
  | 'aborted'
  | 'applied'
  | 'unchanged'
  | 'reverted'
  | 'rolled-back'
  | 'rollback-failed';

/** Per-node view in the status. */
export interface NodeReport {
  outcome: 'pending' | NodeChangeResult['outcome'];
  diff: string[];
  /** How many of the node's audit records are already in the change's trail. */
  auditCount?: number;
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

const { verifyIdentity } = proxyLocalActivities<IdentityActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 3 } });

/**
 * Runs one change request. See the module comment for the shape. `identityAssertion` is
 * what the HTTP API signs (model/identity.ts); without it the author is self-asserted.
 */
export async function changeWorkflow(input: unknown, identityAssertion?: unknown): Promise<ChangeStatus> {
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
  const identity = validation.ok ? await checkIdentity(input, identityAssertion) : undefined;
  const trail = new AuditTrail(validation.ok ? validation.request.id : String(rawId ?? workflowInfo().workflowId), validation.ok ? validation.request.author : 'unknown', identity ? { actorVerified: identity.verified } : {});
  if (!validation.ok) {
    trail.record('validate', 'failed', validatedAt, formatIssues(validation.issues));
    Object.assign(status, { phase: 'rejected', message: `invalid change request:\n${formatIssues(validation.issues)}`, issues: validation.issues, audit: trail.records });
    setSearchStatus('rejected');
    throw failure(FailureType.InvalidChangeRequest, status.message, [status]);
  }
  if (identity?.refused !== undefined) {
    trail.record('verify identity', 'failed', validatedAt, identity.refused);
    Object.assign(status, { phase: 'rejected', message: `identity assertion refused: ${identity.refused}`, audit: trail.records });
    setSearchStatus('rejected');
    throw failure(FailureType.InvalidIdentityAssertion, status.message, [status]);
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

  // One change at a time per node: each node workflow runs under the node's lock id. Applied
  // nodes *hold* (keep running, keeping the lock) until this workflow decides, so no other
  // change can land on top of a provisional one and be wiped by its revert. Every non-dry-run
  // node holds (issue 11): an `abort` that arrives while the only node is applying must still
  // be able to restore it. Before the patch only multi-node or commit-confirmed changes held.
  // (rollout-engine: keep this rule when the node loop is rewritten.)
  const hold = !request.options.dryRun && (patched('hold-every-node') || request.targets.length > 1 || request.options.confirmTimeout !== undefined);
  const ready = new Map<string, NodeChangeResult>();
  const finished = new Map<string, NodeChangeResult>();
  const children = new Map<string, ChildWorkflowHandle<typeof nodeChangeWorkflow>>();
  setHandler(nodeReadySignal, (result) => {
    ready.set(result.node, result);
  });
  /** Nodes applied and holding, in apply order: what a revert must restore, newest first. */
  const held: string[] = [];
  let appliedCount = 0;

  for (const node of request.targets) {
    if (operator.abort) break;
    const child = await startNodeWorkflow(node);
    if (child === 'aborted') break; // the abort ended the wait for the lock: nothing ran on this node
    if (!child) {
      const why = `node ${node} stayed busy with another change for ${request.options.lockTimeout / 1000}s`;
      await revertHeld(why);
      return finish(cleanRevert() ? 'rolled-back' : 'rollback-failed', `${why}; nothing was applied to it${held.length > 0 ? ', and the nodes already changed were restored' : ''}`, FailureType.NodeBusy);
    }
    await condition(() => ready.has(node) || finished.has(node));
    const result = ready.get(node) ?? (finished.get(node) as NodeChangeResult);
    report(result);
    status.progress.nodesDone++;

    if (result.outcome === 'rolled-back' || result.outcome === 'rollback-failed' || result.outcome === 'not-applied') {
      await revertHeld(`node ${node} failed: ${result.error?.message ?? 'unknown error'}`);
      const clean = result.outcome !== 'rollback-failed' && cleanRevert();
      const onNode = result.outcome === 'not-applied' ? 'nothing was applied to it' : 'it was rolled back';
      return finish(clean ? 'rolled-back' : 'rollback-failed', `change failed on node ${node} (${result.error?.type}: ${result.error?.message}); ${clean ? `${onNode}, and every node was verified against its snapshot` : 'ROLLBACK INCOMPLETE — see nodes for the differences left'}`, clean ? FailureType.ChangeRolledBack : FailureType.RollbackFailed);
    }
    if (result.outcome === 'applied') appliedCount++;
    if (ready.has(node)) held.push(node);
  }

  if (request.options.dryRun) return finish('planned', 'dry run: nothing was changed; see each node\'s diff');
  if (operator.abort) {
    // Report what a read-back shows, not what was intended: no node changed, every applied
    // node restored and verified, or a revert that did not verify.
    const why = describeAction('aborted', operator.abort);
    for (const node of request.targets) {
      const report = status.nodes[node];
      if (report?.outcome === 'pending') status.nodes[node] = { ...report, outcome: 'not-applied' };
    }
    if (held.length === 0) return finish('aborted', `${why} before anything was applied; no node was changed`);
    await revertHeld(why);
    return cleanRevert()
      ? finish('reverted', `${why} during rollout; every applied node was restored and verified against its snapshot`)
      : finish('rollback-failed', `${why} during rollout; REVERT INCOMPLETE — see nodes`, FailureType.RollbackFailed);
  }
  if (appliedCount === 0) return finish('unchanged', 'every node already matched the desired state');

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
      await revertHeld(why);
      const clean = cleanRevert();
      return finish(clean ? 'reverted' : 'rollback-failed', `${why}; ${clean ? 'every node was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see nodes'}`, clean ? undefined : FailureType.RollbackFailed);
    }
  }
  // Committed: each changed node's revision, recorded while the nodes are still held (workflows/revisions.ts).
  await commitRevisions(trail, request, request.targets.map((node) => ready.get(node) ?? finished.get(node)));
  await releaseHeld();
  return finish('applied', `applied and verified on ${appliedCount} node(s)`);

  /**
   * Starts the node workflow under the node's lock id, waiting (with back-off, up to
   * `lockTimeout`) while another change holds the node. Undefined when it never freed up;
   * `aborted` when an abort ended the wait (nothing was started).
   */
  async function startNodeWorkflow(node: string): Promise<ChildWorkflowHandle<typeof nodeChangeWorkflow> | undefined | 'aborted'> {
    const deadline = Date.now() + request.options.lockTimeout;
    let delay = 250;
    for (;;) {
      try {
        const child = await startChild(nodeChangeWorkflow, {
          taskQueue: nodeTaskQueue(node),
          // A dry run changes nothing, so it needs no lock.
          workflowId: request.options.dryRun ? `${workflowInfo().workflowId}/dry-run/${node}` : nodeLockWorkflowId(node),
          // If this workflow ends without deciding, a held node reverts itself.
          parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
          args: [{ changeId: request.id, author: request.author, node, desired: request.desired, patch: request.patch, dryRun: request.options.dryRun, hold }],
        });
        children.set(node, child);
        void child.result().then(
          (result) => void finished.set(node, result),
          (err: unknown) => void finished.set(node, crashed(node, err)),
        );
        if (status.phase === 'waiting-for-node') setPhase('rolling-out', 'applying node by node');
        return child;
      } catch (err) {
        if (!isAlreadyStarted(err)) throw err;
        if (Date.now() >= deadline) return undefined;
        setPhase('waiting-for-node', `waiting for node ${node}: another change holds it (workflow ${nodeLockWorkflowId(node)})`);
        // The back-off ends early on an abort: waiting on would only delay an answer that is already known.
        if (await condition(() => operator.abort !== undefined, delay)) return 'aborted';
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /** Records what a node reported; audit records already taken from `ready` are not repeated. */
  function report(result: NodeChangeResult): void {
    const previous = status.nodes[result.node];
    const known = previous?.auditCount ?? 0;
    trail.records.push(...result.audit.slice(known));
    status.nodes[result.node] = {
      outcome: result.outcome,
      diff: result.diff,
      auditCount: result.audit.length,
      ...(result.error ? { error: result.error } : {}),
      ...(result.rollbackDifferences ? { differences: result.rollbackDifferences } : {}),
    };
    status.audit = trail.records;
  }

  /** Tells every held node to keep the change, and waits until each has let go of its lock. */
  async function releaseHeld(): Promise<void> {
    for (const node of held) await children.get(node)?.signal(nodeDecisionSignal, { decision: 'commit', reason: 'change committed' });
    for (const node of held) {
      await condition(() => finished.has(node));
      report(finished.get(node) as NodeChangeResult);
    }
  }

  /** Reverts held nodes newest first; each restores its own snapshot and reads it back. */
  async function revertHeld(reason: string): Promise<void> {
    if (held.length === 0) return;
    setPhase('reverting', reason);
    for (const node of [...held].reverse()) {
      await children.get(node)?.signal(nodeDecisionSignal, { decision: 'revert', reason });
      await condition(() => finished.has(node));
      report(finished.get(node) as NodeChangeResult);
    }
  }

  function cleanRevert(): boolean {
    return held.every((node) => status.nodes[node]?.outcome === 'restored');
  }

  function setPhase(phase: ChangePhase, message: string): void {
    status.phase = phase;
    status.message = message;
    setSearchStatus(phase);
  }

  function finish(phase: ChangePhase, message: string, failureType?: FailureTypeName): ChangeStatus {
    setPhase(phase, message);
    status.audit = trail.records;
    if (failureType) throw failure(failureType, message, [status]);
    return status;
  }
}

/** A node workflow that failed outright (not a reported rollback): its node's state is unknown. */
function crashed(node: string, err: unknown): NodeChangeResult {
  const error = summariseFailure(err);
  const empty = { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] };
  // The node workflow refuses an input it cannot validate before it reads anything (issue 11):
  // nothing was applied there, whatever the parent sent.
  if (error.type === FailureType.InvalidNodeChangeInput) return { node, outcome: 'not-applied', diff: [], snapshot: empty, scope: [], error, audit: [] };
  return {
    node,
    outcome: 'rollback-failed',
    diff: [],
    snapshot: { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] },
    scope: [],
    error,
    rollbackDifferences: [`the node workflow failed (${error.type}: ${error.message}); the node's state is unknown`],
    audit: [],
  };
}

/**
 * Verifies the API's identity assertion in a local activity on the cluster worker (which
 * holds the key): `verified` goes into the audit records (AuditRecord.actorVerified);
 * `refused` says why a given assertion does not hold. Histories from before identity
 * verification replay without the activity (self-asserted).
 */
async function checkIdentity(input: unknown, assertion: unknown): Promise<{ verified: boolean; refused?: string }> {
  if (!patched('verify-identity')) return { verified: false };
  try {
    return { verified: (await verifyIdentity({ request: input, assertion, workflowStartedAt: workflowInfo().startTime.getTime() })).verified };
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
