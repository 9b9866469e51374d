/**
 * How a controller starts a change: through the same `changeWorkflow` the API and the CLI
 * start (so it gets staged rollouts, approvals and audit), under a change id derived from the
 * object and its generation. Starting is idempotent: the workflow id is `change-<id>` with
 * REJECT_DUPLICATE, so a controller restarted mid-change (or a second reconcile of the same
 * generation) joins the running or finished change instead of starting another one.
 *
 * Identity: with the controllers' own key (FOS1_CONTROLLER_IDENTITY_KEY_FILE, read by
 * controllers/main.ts from the process's configuration, never from an object) each start
 * carries an identity assertion for the principal `fos1-controller` (no roles), so the cluster
 * worker records the change's actor as verified. The object and generation that caused the
 * change are in the request the assertion covers: its id (`<prefix>-<name>-<hash>-g<gen>`,
 * in every audit record) and its reason ({@link objectProvenance}). Without a key the change
 * runs self-asserted, as any change started outside the API.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { signControllerIdentity } from '../auth/identity-assertion';
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

/** One entry of `metadata.managedFields`, as far as it is read here. */
interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  time?: string;
  subresource?: string;
  fieldsV1?: Record<string, unknown>;
}

/**
 * Where one generation of an object came from, for a change's reason: its uid and
 * resourceVersion, and the field managers that last wrote its spec (newest first, at most 3).
 *
 * What Kubernetes knows and what it does not: `managedFields` name *field managers* — a name
 * each client chooses for itself (`kubectl-client-side-apply`, `kubectl`, `helm`, `argocd-…`)
 * — with the operation and time, never the authenticated user. The user is only in the
 * apiserver's audit log (to correlate by the object's uid, resourceVersion and time), so it is
 * not put here, and the manager is labelled as what it is.
 */
export function objectProvenance(obj: StoredObject): string {
  const writers = ((obj.metadata.managedFields ?? []) as ManagedFieldsEntry[])
    .filter((e) => e.subresource === undefined && e.fieldsV1 !== undefined && 'f:spec' in e.fieldsV1 && typeof e.manager === 'string')
    .sort((a, b) => (b.time ?? '').localeCompare(a.time ?? ''))
    .slice(0, 3)
    .map((e) => `"${(e.manager ?? '').slice(0, 64)}" (${e.operation ?? '?'}${e.time ? ` ${e.time}` : ''})`);
  const ids = `uid ${obj.metadata.uid ?? 'unknown'}, resourceVersion ${obj.metadata.resourceVersion ?? 'unknown'}`;
  return writers.length > 0 ? `${ids}; spec last written by field manager ${writers.join(', ')} (a client-chosen name, not the user)` : ids;
}

/** Options of {@link ChangeRunner}. */
export interface ChangeRunnerOptions {
  temporal: Client;
  taskQueue?: string;
  /** The controllers' identity key: each start then carries a `fos1-controller` assertion (verified by the cluster worker). */
  identityKey?: Buffer;
}

/** Starts (or joins) a change and waits for it. */
export class ChangeRunner {
  private readonly aborts = new Set<() => void>();

  constructor(private readonly options: ChangeRunnerOptions) {}

  /** Runs `request` (its `id` names the workflow); resolves with the outcome, never with a retryable error swallowed. */
  async run(request: ChangeRequestInput, started?: (changeId: string) => void): Promise<ChangeOutcome> {
    const { temporal } = this.options;
    const changeId = request.id;
    const workflowId = changeWorkflowId(changeId);
    const key = this.options.identityKey;
    let handle;
    try {
      handle = await temporal.workflow.start('changeWorkflow', {
        workflowId,
        taskQueue: this.options.taskQueue ?? CLUSTER_TASK_QUEUE,
        // Signed just before the start: the worker accepts an assertion issued near the workflow's start.
        args: key ? [request, signControllerIdentity(key, changeId, request)] : [request],
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      // This generation's change exists already (a restart, a replayed event): join it.
      handle = temporal.workflow.getHandle(workflowId);
    }
    started?.(changeId);
    try {
      const status = (await this.abortable(workflowId, () => handle.result())) as ChangeStatus;
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

  /**
   * Waits until another change (`change-…` workflow id) has closed, whatever its outcome;
   * stopped by {@link abortAll} like the runner's own waits.
   */
  async waitForClose(workflowId: string): Promise<void> {
    const handle = this.options.temporal.workflow.getHandle(workflowId);
    await this.abortable(workflowId, () => handle.result()).catch((err: unknown) => {
      if (err instanceof ChangeWaitAborted) throw err;
    });
  }

  /** Stops waiting for every change in flight (the changes themselves go on in Temporal). */
  abortAll(): void {
    for (const abort of this.aborts) abort();
  }

  /**
   * Runs `call` (a long poll for a workflow's result) until it settles or {@link abortAll}:
   * the abort cancels the gRPC call itself, so no poll outlives a stopped controller.
   */
  private abortable<T>(workflowId: string, call: () => Promise<T>): Promise<T> {
    const controller = new AbortController();
    return new Promise<T>((resolve, reject) => {
      const abort = () => {
        controller.abort();
        reject(new ChangeWaitAborted(workflowId));
      };
      this.aborts.add(abort);
      this.options.temporal
        .withAbortSignal(controller.signal, call)
        .then(resolve, reject)
        .finally(() => this.aborts.delete(abort));
    });
  }
}
