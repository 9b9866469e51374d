/**
 * The change workflow's rollout before staged rollouts (issue 12): every target one at a
 * time, the first as canary, no waves, bakes or gates. Kept, unchanged, so that histories of
 * change workflows started before the `staged-rollout` patch replay (workflows/change.ts
 * takes this path when `patched('staged-rollout')` is false, i.e. only on replay).
 *
 * Workflow code: deterministic.
 */
import { condition, ParentClosePolicy, setHandler, startChild, type ChildWorkflowHandle, workflowInfo } from '@temporalio/workflow';
import type { ChangeRequest } from '../model/change-request';
import { FailureType, type FailureTypeName } from '../model/failures';
import { nodeLockWorkflowId, nodeTaskQueue } from '../model/naming';
import { nodeChangeWorkflow, nodeDecisionSignal, nodeReadySignal, type NodeChangeResult } from './node-change';
import type { ChangePhase, ChangeStatus, OperatorAction } from './change';
import { crashed } from './rollout-wave';
import { AuditTrail, commitConfirmed, isAlreadyStarted } from './support';

/** What the change workflow hands the legacy rollout. */
export interface LegacyContext {
  request: ChangeRequest;
  targets: string[];
  /**
   * `patched('hold-every-node')`, asked by the change workflow before its identity local
   * activity (a patch first asked after a local activity that resolved in a later workflow
   * task does not replay).
   */
  holdEveryNode: boolean;
  status: ChangeStatus;
  operator: { confirmation?: OperatorAction; abort?: OperatorAction };
  trail: AuditTrail;
  setPhase(phase: ChangePhase, message: string): void;
  finish(phase: ChangePhase, message: string, failureType?: FailureTypeName): ChangeStatus;
  describeAction(verb: string, action: OperatorAction): string;
}

/** Runs the pre-rollout loop (see the module comment). */
export async function legacyChange(ctx: LegacyContext): Promise<ChangeStatus> {
  const { request, targets, holdEveryNode, status, operator, trail, setPhase, finish, describeAction } = ctx;
  // One change at a time per node: each node workflow runs under the node's lock id. Applied
  // nodes *hold* (keep running, keeping the lock) until this workflow decides, so no other
  // change can land on top of a provisional one and be wiped by its revert. Every non-dry-run
  // node holds (issue 11): an `abort` that arrives while the only node is applying must still
  // be able to restore it. Before the patch only multi-node or commit-confirmed changes held.
  // (rollout-engine: keep this rule when the node loop is rewritten.)
  const hold = !request.options.dryRun && (holdEveryNode || targets.length > 1 || request.options.confirmTimeout !== undefined);
  const ready = new Map<string, NodeChangeResult>();
  const finished = new Map<string, NodeChangeResult>();
  const children = new Map<string, ChildWorkflowHandle<typeof nodeChangeWorkflow>>();
  setHandler(nodeReadySignal, (result) => {
    ready.set(result.node, result);
  });
  /** Nodes applied and holding, in apply order: what a revert must restore, newest first. */
  const held: string[] = [];
  let appliedCount = 0;

  for (const node of targets) {
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
    for (const node of targets) {
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

  // Called, not awaited, by the commit-confirmed wait (workflows/support.ts): its commands keep their place.
  const commit = async (): Promise<ChangeStatus> => {
    await releaseHeld();
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
      await revertHeld(why);
      const clean = cleanRevert();
      return finish(clean ? 'reverted' : 'rollback-failed', `${why}; ${clean ? 'every node was restored and verified against its snapshot' : 'REVERT INCOMPLETE — see nodes'}`, clean ? undefined : FailureType.RollbackFailed);
    },
  });

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
}
