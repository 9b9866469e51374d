/**
 * How a controller starts a change: through the same `changeWorkflow` the API and the CLI
 * start (so it gets staged rollouts, approvals and audit), under a change id derived from the
 * object and its generation. Starting is idempotent: the workflow id is `change-<id>` with
 * REJECT_DUPLICATE, so a controller restarted mid-change (or a second reconcile of the same
 * generation) joins the running or finished change instead of starting another one.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { ChangeRequestInput } from '../model/change-request';
import { summariseFailure, FailureType, UNKNOWN_FAILURE } from '../model/failures';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../model/naming';
import { shortHash } from '../model/short-hash';
import type { StoredObject } from '../k8s/client';
import type { ChangeStatus } from '../workflows/change';

/** What became of one change. */
export type ChangeOutcome =
  | { kind: 'applied'; changeId: string; workflowId: string; message: string; unchanged?: boolean }
  | { kind: 'rolled-back' | 'rollback-failed' | 'failed'; changeId: string; workflowId: string; type: string; message: string };

/** Raised when the runner was stopped while it waited: the change goes on, nobody reports it here. */
export class ChangeWaitAborted extends Error {
  constructor(readonly workflowId: string) {
    super(`stopped while waiting for ${workflowId}`);
    this.name = 'ChangeWaitAborted';
  }
}

/**
 * The change id of one object's generation: `<prefix>-<name>-<hash>-g<generation>` (or
 * `-del` for the cleanup), a DNS label of at most 63 characters. The hash covers namespace,
 * name and uid, so an object deleted and re-created under the same name gets new ids.
 * `forced` (a reconcile asked for by something the object depends on, see
 * `ObjectController.force`) is appended: `-g<generation>-<forced>`.
 */
export function objectChangeId(prefix: string, obj: StoredObject, what: { generation: number; forced?: string } | 'delete'): string {
  const tag = shortHash(`${obj.metadata.namespace ?? ''}/${obj.metadata.name}/${obj.metadata.uid ?? ''}`);
  const suffix = what === 'delete' ? 'del' : `g${what.generation}${what.forced ? `-${what.forced.toLowerCase().replace(/[^a-z0-9]+/g, '').slice(0, 16)}` : ''}`;
  const room = 63 - prefix.length - tag.length - suffix.length - 3;
  const name = obj.metadata.name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, Math.max(room, 0)).replace(/-+$/, '');
  return [prefix, name, tag, suffix].filter((p) => p !== '').join('-');
}

/** Starts (or joins) a change and waits for it. */
export class ChangeRunner {
  private readonly aborts = new Set<() => void>();

  constructor(private readonly options: { temporal: Client; taskQueue?: string }) {}

  /** Runs `request` (its `id` names the workflow); resolves with the outcome, never with a retryable error swallowed. */
  async run(request: ChangeRequestInput, started?: (changeId: string) => void): Promise<ChangeOutcome> {
    const { temporal } = this.options;
    const changeId = request.id;
    const workflowId = changeWorkflowId(changeId);
    let handle;
    try {
      handle = await temporal.workflow.start('changeWorkflow', {
        workflowId,
        taskQueue: this.options.taskQueue ?? CLUSTER_TASK_QUEUE,
        args: [request],
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      // This generation's change exists already (a restart, a replayed event): join it.
      handle = temporal.workflow.getHandle(workflowId);
    }
    started?.(changeId);
    try {
      const status = (await this.abortable(workflowId, handle.result())) as ChangeStatus;
      return { kind: 'applied', changeId, workflowId, message: status.message, unchanged: status.phase === 'unchanged' };
    } catch (err) {
      if (err instanceof WorkflowFailedError) {
        const cause = summariseFailure(err.cause ?? err);
        const type = cause.type === UNKNOWN_FAILURE ? 'Failed' : cause.type;
        // A cluster-only change that rolled back ends PolicyRolledBack (workflows/cluster-policy-step.ts).
        const kind = type === FailureType.ChangeRolledBack || type === FailureType.PolicyRolledBack ? 'rolled-back' : type === FailureType.RollbackFailed ? 'rollback-failed' : 'failed';
        return { kind, changeId, workflowId, type, message: cause.type === UNKNOWN_FAILURE ? err.message : cause.message };
      }
      throw err;
    }
  }

  /** Stops waiting for every change in flight (the changes themselves go on in Temporal). */
  abortAll(): void {
    for (const abort of this.aborts) abort();
  }

  private abortable<T>(workflowId: string, promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const abort = () => reject(new ChangeWaitAborted(workflowId));
      this.aborts.add(abort);
      promise.then(resolve, reject).finally(() => this.aborts.delete(abort));
    });
  }
}
