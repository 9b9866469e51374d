/**
 * A node's restore that keeps trying: when a rollback (or a revert) does not verify, the
 * node workflow does not end `rollback-failed` at once. It keeps the node's lock and tries
 * again with back-off — 5 s, doubling, at most 10 minutes apart — until the node reads
 * back equal to its snapshot, or an operator gives up (`giveUpRestore` signal, audited).
 *
 *   first rollback (per-subsystem restores, 2 passes, read-back) did not verify
 *   └─ loop: wait the back-off (or a give-up) → one round: `restoreAndCheck` (every snapshot,
 *            newest first, read back; one activity, one attempt) → verified: done
 *            └─ history past RESTORE_HISTORY_LIMIT events: continue as `nodeRestoreWorkflow`
 *               (same workflow id, so the same node lock, and the same parent)
 *
 * Bounded history: a failed round costs about a dozen events (a timer, one activity, their
 * workflow tasks), whatever the number of subsystems; past {@link RESTORE_HISTORY_LIMIT}
 * the run continues as new carrying only the restore (snapshots, checks, the result to
 * report, the audit list with one record per retried step). A node worker that is away
 * does not burn rounds: the round's activity waits in the node's task queue and runs as
 * soon as the worker polls again; a worker killed during a round is noticed by the
 * heartbeat time-out within seconds, and the next round follows the back-off.
 *
 * The retrying restore is visible in `nodeProgress` (step `restore retrying`, `restore`:
 * attempt, last error, next try), in the change's `status` (`nodes[node].restore`: each
 * round's wait is reported to the parent with {@link nodeRestoreRetryingSignal}, which a
 * wave passes on to its change; patch `restore-retry-report`) and in the audit: every round
 * is sent to the audit sink.
 */
import {
  CancellationScope,
  condition,
  defineSignal,
  getExternalWorkflowHandle,
  makeContinueAsNewFunc,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { NodeActivities } from '../activities/node-activities';
import type { AuditRecord } from '../model/audit';
import { failure, FailureType, summariseFailure } from '../model/failures';
import type { CheckOf, Subsystem, SubsystemChecks, SubsystemSnapshot } from '../model/subsystem';
import { nodeProgressQuery, type NodeChangeResult, type NodeProgress } from './node-change';
import { AuditTrail } from './support';

/** Patch name: a rollback or revert that does not verify retries instead of ending failed. */
export const RESTORE_RETRIES_PATCH = 'restore-retries';

/** Patch name: each round's wait is reported to the parent (the change's status shows the retrying restore). */
export const RESTORE_RETRY_REPORT_PATCH = 'restore-retry-report';

/** First wait between restore rounds; it doubles each round up to {@link RESTORE_BACKOFF_MAX_MS}. */
export const RESTORE_BACKOFF_INITIAL_MS = 5_000;
/** Longest wait between restore rounds. */
export const RESTORE_BACKOFF_MAX_MS = 10 * 60_000;
/** A retrying restore continues as new once its run's history is this long. */
export const RESTORE_HISTORY_LIMIT = 1_000;

/** The wait before restore round `attempt` (1-based). */
export function restoreBackoffMs(attempt: number): number {
  return Math.min(RESTORE_BACKOFF_MAX_MS, RESTORE_BACKOFF_INITIAL_MS * 2 ** Math.max(0, Math.min(attempt - 1, 20)));
}

/** An operator's decision to stop retrying a restore; the node ends `rollback-failed` / `restore-failed`. */
export interface GiveUpRestore {
  reason: string;
  /** Who gave up, for the audit (not verified: whoever can signal the node's workflow). */
  actor?: string;
}

/** Operator → node workflow whose restore is retrying: stop, and end with the failed outcome. */
export const giveUpRestoreSignal = defineSignal<[GiveUpRestore]>('giveUpRestore');

/** A retrying restore as `nodeProgress` shows it. */
export interface RestoreRetryStatus {
  /** Rounds tried after the first rollback (0: none yet). */
  attempt: number;
  /** Why the last try did not verify. */
  lastError: string;
  /** When the retrying began (ISO 8601). */
  since: string;
  /** When the next round starts (ISO 8601); absent while a round runs (or waits for the node's worker). */
  nextTryAt?: string;
}

/** Node workflow → parent (a wave passes it on to its change): the node's restore is retrying. */
export interface NodeRestoreRetrying {
  node: string;
  restore: RestoreRetryStatus;
}

/** Sent at the start of every wait between restore rounds (one per round: bounded by the back-off). */
export const nodeRestoreRetryingSignal = defineSignal<[NodeRestoreRetrying]>('nodeRestoreRetrying');

/** One snapshot to put back. */
export interface RestoreStep {
  subsystem: Subsystem;
  snapshot: SubsystemSnapshot<CheckOf<Subsystem>>;
}

/** Everything a retrying restore needs; what {@link nodeRestoreWorkflow} continues with. */
export interface NodeRestoreInput {
  changeId: string;
  author: string;
  node: string;
  /** Newest-registered first, as the rollback runs them. */
  restores: RestoreStep[];
  /** The snapshots' read-back checks. */
  checks: SubsystemChecks;
  /** The node's result once the restore verifies (`rolled-back` or `restored`), without the audit. */
  result: Omit<NodeChangeResult, 'audit'>;
  /** The outcome when an operator gives up (`rollback-failed` or `restore-failed`). */
  failedOutcome: NodeChangeResult['outcome'];
  audit: AuditRecord[];
  retry: { attempt: number; lastError: string; since: number };
  progress: NodeProgress;
}

/** One restore round on the node's own queue: one attempt (the loop's back-off does the retrying), heartbeats every second. */
const { restoreAndCheck } = proxyActivities<NodeActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '5 seconds',
  retry: { maximumAttempts: 1 },
});

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Retries the restore until it verifies or an operator gives up; returns the node's
 * result (or continues as {@link nodeRestoreWorkflow} when the history grows long). Not
 * cancellable: a change that is cancelled must not leave its node half restored.
 */
export function retryRestore(state: NodeRestoreInput, trail: AuditTrail, progress: NodeProgress): Promise<NodeChangeResult> {
  return CancellationScope.nonCancellable(async () => {
    let giveUp: GiveUpRestore | undefined;
    setHandler(giveUpRestoreSignal, (g) => {
      giveUp ??= g;
    });
    const retry = state.retry;
    progress.step = 'restore retrying';
    for (;;) {
      const delay = restoreBackoffMs(retry.attempt + 1);
      const waitStarted = Date.now();
      progress.restore = { attempt: retry.attempt, lastError: retry.lastError, since: iso(retry.since), nextTryAt: iso(waitStarted + delay) };
      await reportRetrying(state.node, progress.restore);
      trail.recordReplacing('restore retry', 'failed', waitStarted, `${retry.attempt === 0 ? 'rollback' : `attempt ${retry.attempt}`} did not verify: ${retry.lastError}; next try at ${iso(waitStarted + delay)}`);
      if (await condition(() => giveUp !== undefined, delay)) break;
      retry.attempt++;
      progress.restore = { attempt: retry.attempt, lastError: retry.lastError, since: iso(retry.since) };
      const started = Date.now();
      try {
        await restoreAndCheck({ restores: state.restores, checks: state.checks });
        trail.record('restore retried', 'ok', started, `attempt ${retry.attempt}: node equals snapshot (retrying since ${iso(retry.since)})`);
        progress.step = 'done';
        return { ...state.result, audit: trail.records };
      } catch (err) {
        retry.lastError = summariseFailure(err).message;
      }
      if (workflowInfo().historyLength > RESTORE_HISTORY_LIMIT || workflowInfo().continueAsNewSuggested) {
        await makeContinueAsNewFunc<typeof nodeRestoreWorkflow>({ workflowType: 'nodeRestoreWorkflow' })({ ...state, audit: trail.records, retry, progress });
      }
    }
    const g = giveUp as GiveUpRestore;
    trail.record('restore given up', 'failed', Date.now(), `${g.reason} (after ${retry.attempt} retries; last error: ${retry.lastError})`, g.actor);
    progress.step = 'done';
    return { ...state.result, outcome: state.failedOutcome, rollbackDifferences: [retry.lastError], audit: trail.records };
  });
}

/**
 * Tells the parent (a wave, or a change without waves) that the restore is retrying, so the
 * change's `status` shows the attempt, last error and next try. A parent that has closed
 * cannot be told; the node's own `nodeProgress` still shows it.
 */
async function reportRetrying(node: string, restore: RestoreRetryStatus): Promise<void> {
  const parent = workflowInfo().parent;
  if (!parent || !patched(RESTORE_RETRY_REPORT_PATCH)) return;
  try {
    await getExternalWorkflowHandle(parent.workflowId, parent.runId).signal(nodeRestoreRetryingSignal, { node, restore: { ...restore } });
  } catch {
    // The parent is gone (closed, terminated): nobody to tell.
  }
}

/**
 * The continuation of a node workflow whose restore is retrying (see the module comment).
 * Same workflow id (the node's lock) and parent; answers `nodeProgress` and `giveUpRestore`
 * like the node workflow. Only runs as a continuation: started directly it fails
 * `InvalidNodeChangeInput` before anything is restored.
 */
export async function nodeRestoreWorkflow(input: NodeRestoreInput): Promise<NodeChangeResult> {
  if (workflowInfo().continuedFromExecutionRunId === undefined) {
    throw failure(FailureType.InvalidNodeChangeInput, 'nodeRestoreWorkflow runs only as the continuation of a node workflow whose restore is retrying; it cannot be started');
  }
  const trail = new AuditTrail(input.changeId, input.author, { node: input.node, records: input.audit });
  const progress = input.progress;
  setHandler(nodeProgressQuery, () => progress);
  return retryRestore(input, trail, progress);
}
