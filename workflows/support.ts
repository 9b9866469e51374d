/**
 * What every fos1 workflow does the same way: keep an audit trail, undo what it applied
 * (newest first, then read back), retry a step that must not be lost, and report failures.
 * Used by the change, node-change, policy-change, quarantine and enforcement workflows.
 *
 * Workflow code: deterministic (Date.now() and sleep() are the workflow's clock and timers).
 */
import { ApplicationFailure, CancellationScope, condition, log, patched, proxyActivities, proxySinks, sleep, workflowInfo } from '@temporalio/workflow';
import type { AuditActivities } from '../activities/audit-store';
import type { AuditRecord, AuditSinks } from '../model/audit';
import { AUDIT_ACTIVITY_OPTIONS, auditRecordId, MAX_AUDIT_BATCH, type KeyedAuditRecord } from '../model/audit-chain';
import { failure, summariseFailure, TemporalFailureType, type FailureSummary, type FailureTypeName } from '../model/failures';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import type { OperatorAction } from './change';

const { audit } = proxySinks<AuditSinks>();

/**
 * The durable audit store's activity, on the cluster task queue whichever queue the workflow
 * runs on (node workflows run on their node's queue; the store is the cluster worker's).
 */
const { appendAudit } = proxyActivities<AuditActivities>({ ...AUDIT_ACTIVITY_OPTIONS, taskQueue: CLUSTER_TASK_QUEUE });

/** Longest `detail` kept in a record (the audit store's limit). */
export const MAX_AUDIT_DETAIL = 16_384;

/**
 * Whether this run writes its records to the durable audit store (issue 13). Runs started
 * before the release replay without the marker and append nothing (their records are in
 * their histories and logs, as before); every run started after it appends.
 */
export function durableAudit(): boolean {
  return patched('durable-audit');
}

/**
 * The trails of the running workflow, so {@link withDurableAudit} can wait for all of them.
 * Kept on `globalThis`, which the SDK keeps per workflow execution (module state is not
 * guaranteed to be when V8 contexts are reused).
 */
function trailsOfThisWorkflow(): AuditTrail[] {
  const g = globalThis as { __fos1AuditTrails?: AuditTrail[] };
  g.__fos1AuditTrails ??= [];
  return g.__fos1AuditTrails;
}

/**
 * Wraps a workflow function so that, however it ends (result, failure, continue-as-new,
 * cancellation), it first waits until every audit record its trails made is in the durable
 * store. workflows/worker-entry.ts registers every workflow through it.
 */
export function withDurableAudit<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  const wrapped = async (...args: A): Promise<R> => {
    // Decided in the first workflow task, before any local activity: a patch first asked
    // after a local activity that resolved across a workflow-task boundary replays as
    // unknown (the marker is in a later task than the code that asks), which is a
    // nondeterminism error. Later calls (the trail, the revision hook) get the same answer.
    durableAudit();
    try {
      const value = await fn(...args);
      await flushAll();
      return value;
    } catch (err) {
      await flushAll();
      throw err;
    }
  };
  Object.defineProperty(wrapped, 'name', { value: fn.name });
  return wrapped;
}

/** Waits for every trail of this workflow (a cancelled workflow still writes its records). */
function flushAll(): Promise<void> {
  return CancellationScope.nonCancellable(async () => {
    for (const trail of trailsOfThisWorkflow()) await trail.flush();
  });
}

/**
 * Collects audit records for one workflow, mirrors each to the worker's audit sink and
 * (runs under `patched('durable-audit')`) appends it to the durable audit store: records
 * are queued in the order they are made and sent by the `appendAudit` activity one batch at
 * a time — a batch starts when the one before is stored, so the store holds them in this
 * order —, each keyed `changeId/runId/n` (n counts the records this run made), so a retried
 * append writes nothing twice. The workflow does not wait for the store on its way; it waits
 * at its end ({@link withDurableAudit}).
 *
 * Records that reach `records` without {@link record} (a node's records the change workflow
 * copies into its status) are not appended again: their own workflow appended them.
 */
export class AuditTrail {
  readonly records: AuditRecord[];
  private readonly node: string | undefined;
  private readonly actorVerified: boolean | undefined;
  private readonly durable: boolean;
  private readonly keyPrefix: string;
  private made = 0;
  private readonly queued: KeyedAuditRecord[] = [];
  private inFlight: Promise<void> | undefined;
  /** Set by {@link holdAppends}: records stay queued until {@link releaseAppends} or {@link flush}. */
  private holding = false;

  /**
   * @param options.node set on records of a node workflow.
   * @param options.records where records go: a list the workflow carries across continue-as-new, say.
   * @param options.actorVerified whether the actor is verified (AuditRecord.actorVerified); left out when not known.
   */
  constructor(
    private readonly changeId: string,
    private readonly actor: string,
    options: { node?: string; records?: AuditRecord[]; actorVerified?: boolean } = {},
  ) {
    this.records = options.records ?? [];
    this.node = options.node;
    this.actorVerified = options.actorVerified;
    this.durable = durableAudit();
    // A record id is printable ASCII without spaces; a change id the request got wrong still
    // names its records (the run id keeps them unique).
    this.keyPrefix = changeId.replace(/[^\x21-\x7e]/g, '_').slice(0, 253) || 'unknown';
    trailsOfThisWorkflow().push(this);
  }

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

  /**
   * Records a step and drops this trail's earlier records of the same step from
   * {@link records} (the audit sink still got every one): a step repeated without bound,
   * such as the rounds of a retrying restore, keeps the workflow's list (and what it
   * carries across continue-as-new) to its latest record.
   */
  recordReplacing(step: string, result: AuditRecord['result'], startedAt: number, detail?: string, actor = this.actor): void {
    for (let i = this.records.length - 1; i >= 0; i--) if (this.records[i]?.step === step) this.records.splice(i, 1);
    this.record(step, result, startedAt, detail, actor);
  }

  /** Records a step that already happened; `actor` overrides the trail's (an operator's lift). */
  record(step: string, result: AuditRecord['result'], startedAt: number, detail?: string, actor = this.actor): void {
    const record: AuditRecord = {
      changeId: this.changeId,
      actor,
      ...(this.actorVerified !== undefined ? { actorVerified: this.actorVerified } : {}),
      ...(this.node ? { node: this.node } : {}),
      step,
      result,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: Date.now() - startedAt,
      ...(detail !== undefined ? { detail: detail.length > MAX_AUDIT_DETAIL ? `${detail.slice(0, MAX_AUDIT_DETAIL - 20)} … (cut short)` : detail } : {}),
    };
    this.records.push(record);
    audit.record(record);
    if (this.durable) {
      this.queued.push({ id: auditRecordId(this.keyPrefix, workflowInfo().runId, this.made++), record: storable(record) });
      this.send();
    }
  }

  /**
   * Keeps the records made from now on queued, to go to the store in one batch at
   * {@link releaseAppends}. For a run of local activities: their workflow task completes only
   * when the last one has, so an append started between them reaches the server no sooner than
   * one started after them, and each batch costs the workflow an activity and a workflow task.
   */
  holdAppends(): void {
    this.holding = true;
  }

  /** Sends what {@link holdAppends} kept (and whatever comes after it) as records are made again. */
  releaseAppends(): void {
    this.holding = false;
    this.send();
  }

  /** Resolves when every record made so far is in the durable store (held ones are released). */
  async flush(): Promise<void> {
    // A no-op for a trail that never held: its queue is empty or already has a batch in flight.
    this.releaseAppends();
    while (this.inFlight) await this.inFlight;
  }

  /** Starts the next batch unless one is in flight (one at a time keeps the store in this order). */
  private send(): void {
    if (this.holding || this.inFlight || this.queued.length === 0) return;
    const batch = this.queued.splice(0, MAX_AUDIT_BATCH);
    this.inFlight = appendAudit(batch).then(
      () => undefined,
      (err: unknown) => {
        // Only a refusal ends the retries (a malformed record, an id reused with other
        // content): a bug, not an outage. Logged loudly; the workflow's own result still
        // carries the records.
        log.error('audit records refused by the audit store', { records: batch.length, error: summariseFailure(err) });
      },
    ).then(() => {
      this.inFlight = undefined;
      this.send();
    });
  }
}

/**
 * The record as the store takes it: the same fields, a change id it accepts (1–253
 * characters; an invalid request's raw id may be neither).
 */
function storable(record: AuditRecord): AuditRecord {
  const changeId = record.changeId.length >= 1 && record.changeId.length <= 253 ? record.changeId : workflowInfo().workflowId.slice(0, 253);
  return changeId === record.changeId ? record : { ...record, changeId };
}

/** What {@link commitConfirmed} needs from the change workflow that waits. */
export interface CommitConfirmedWait<R> {
  /** How long the change waits for a `confirm` before every node reverts (ms). */
  timeoutMs: number;
  /** Where the deadline is shown (the change's status). */
  status: { confirmDeadline?: string };
  /** Set by the `confirm` update and the `abort` update or signal. */
  operator: { confirmation?: OperatorAction; abort?: OperatorAction };
  trail: AuditTrail;
  setPhase(phase: 'awaiting-confirmation', message: string): void;
  describeAction(verb: string, action: OperatorAction): string;
  /** Runs once confirmed: keep the change. */
  commit(): Promise<R>;
  /** Runs when not confirmed in time, or aborted while waiting: undo the change; `why` says which. */
  revert(why: string): Promise<R>;
}

/**
 * The commit-confirmed wait of a change (`options.confirmTimeout`): shows the deadline,
 * waits for `confirm` or `abort` until it, records the outcome (`confirm`, ok or failed) and
 * goes on with `commit` or `revert`.
 *
 * Replay-sensitive: `commit` and `revert` are called in the same microtask as the code after
 * the wait ran before this helper existed (the durable audit's appends are chained on
 * promises, so one more `await` between the record and the next command could put an append
 * ahead of it; see the `if (x) await …` guards in workflows/change.ts). Keep the wait
 * directly awaited here and the continuations called, not awaited, before they run.
 */
export async function commitConfirmed<R>(wait: CommitConfirmedWait<R>): Promise<R> {
  const { timeoutMs, status, operator, trail } = wait;
  status.confirmDeadline = new Date(Date.now() + timeoutMs).toISOString();
  wait.setPhase('awaiting-confirmation', `applied; send "confirm" before ${status.confirmDeadline} or every node reverts`);
  const waitStarted = Date.now();
  await condition(() => operator.confirmation !== undefined || operator.abort !== undefined, timeoutMs);
  if (operator.confirmation && !operator.abort) {
    trail.record('confirm', 'ok', waitStarted, wait.describeAction('confirmed', operator.confirmation));
    return wait.commit();
  }
  const why = operator.abort ? wait.describeAction('aborted', operator.abort) : `not confirmed within ${timeoutMs / 1000}s`;
  trail.record('confirm', 'failed', waitStarted, why);
  return wait.revert(why);
}

/** How a rollback is checked: a read-back that lists what still differs from the state before. */
export interface ReadBack {
  /** Audit step name of the read-back. */
  step: string;
  /** What differs from the state before the change; empty when it is restored. */
  differences: () => Promise<string[]>;
  /** Audit detail when nothing differs. */
  ok: string;
}

/**
 * LIFO compensations with a verified restore. Register each undo when its step may have
 * changed something — before the step when a failure half way leaves changes behind, after
 * it otherwise — then, on failure, {@link run} undoes newest first and reads back. The
 * read-back, not the undos' own success, decides whether the rollback worked.
 */
export class Compensations {
  private readonly undos: { step: string; run: () => Promise<unknown> }[] = [];

  constructor(private readonly trail: AuditTrail) {}

  /** Registers the undo of the step about to run (or just run). */
  add(step: string, run: () => Promise<unknown>): void {
    this.undos.push({ step, run });
  }

  /** How many undos are registered. */
  get size(): number {
    return this.undos.length;
  }

  /**
   * Runs every undo, newest first; one that fails does not stop the others (it is audited,
   * and the read-back reports what it left). Then reads back; with `passes` above 1, runs
   * the undos again while something differs (an undo that depends on a later one finds it
   * in place the second time). Returns the differences left: empty means verified.
   */
  async run(readBack: ReadBack, passes = 1): Promise<string[]> {
    const pass = async () => {
      for (const undo of [...this.undos].reverse()) {
        try {
          await this.trail.step(undo.step, undo.run);
        } catch {
          // Recorded in the audit trail; the read-back reports what is left.
        }
      }
    };
    let differences: string[] = [];
    for (let n = 1; n <= passes; n++) {
      await pass();
      const startedAt = Date.now();
      try {
        differences = await readBack.differences();
      } catch (err) {
        const message = `could not read back: ${summariseFailure(err).message}`;
        this.trail.record(readBack.step, 'failed', startedAt, message);
        return [message];
      }
      const again = differences.length > 0 && n < passes;
      this.trail.record(readBack.step, differences.length === 0 ? 'ok' : 'failed', startedAt, differences.length === 0 ? readBack.ok : `${differences.join('; ')}${again ? '; restoring once more' : ''}`);
      if (differences.length === 0) break;
    }
    return differences;
  }
}

/** The failure types a workflow ends with after a rollback: verified, or not. */
export interface RollbackTypes {
  rolledBack: FailureTypeName;
  rollbackFailed: FailureTypeName;
}

/**
 * The failure a workflow ends with after {@link Compensations.run}: `rolledBack` when the
 * read-back found nothing different, `rollbackFailed` with the differences otherwise. The
 * message leads with the cause's type, so clients see what went wrong first.
 */
export function rollbackFailure(types: RollbackTypes, cause: FailureSummary, differences: string[], records: AuditRecord[]): ApplicationFailure {
  if (differences.length === 0) return failure(types.rolledBack, `${cause.type}: ${cause.message}`, [{ cause, audit: records }]);
  return failure(types.rollbackFailed, `${cause.type}: ${cause.message}; rollback did not verify:\n${differences.join('\n')}`, [{ cause, differences, audit: records }]);
}

/**
 * A failure before anything was changed, passed on with its own type (PolicyMapOverflow,
 * NoEndpoint, …) so callers branch on what went wrong, and the audit trail as details.
 */
export function failedBeforeChange(err: unknown, records: AuditRecord[]): ApplicationFailure {
  const cause = summariseFailure(err);
  return ApplicationFailure.create({ type: cause.type, nonRetryable: true, message: cause.message, details: [{ audit: records }] });
}

/** How often {@link retryUntil} tries again. */
export const RETRY_UNTIL_INTERVAL_MS = 30_000;

/**
 * Runs `attempt` until it succeeds, every 30 s, for a step that must not be lost (lifting a
 * block, a rate limit, a quarantine). Each failure is reported through `onFailure` (for the
 * audit trail) with the reason and when the next attempt comes.
 */
export async function retryUntil<R extends { ok: true } | { ok: false; reason: string }>(attempt: (n: number) => Promise<R>, onFailure: (n: number, reason: string) => void): Promise<Extract<R, { ok: true }>> {
  for (let n = 1; ; n++) {
    const outcome: { ok: true } | { ok: false; reason: string } = await attempt(n);
    if (outcome.ok) return outcome as Extract<R, { ok: true }>;
    onFailure(n, `${outcome.reason}; retrying in ${RETRY_UNTIL_INTERVAL_MS / 1000}s`);
    await sleep(RETRY_UNTIL_INTERVAL_MS);
  }
}

/** Patch name: lock waits back off in proportion to the time already waited (see {@link lockWaitDelayMs}). */
export const LOCK_WAIT_PATCH = 'lock-wait-bounded';

/** Longest pause between two tries for a node's lock. */
export const LOCK_WAIT_MAX_DELAY_MS = 3_600_000;

/**
 * The pause before the next try for a node's lock, after `previousMs`: doubling from
 * 250 ms to 5 s (the first half minute, as before), then a tenth of the time already
 * waited, at most an hour (the caller stops at the deadline). Each try costs the history about ten events, so a wait of any
 * allowed length stays bounded: a 7-day `lockTimeout` takes about 230 tries (some 2,300
 * events) where a fixed 5 s would take 120,000. The cost: a lock freed after a long wait
 * is noticed up to a tenth of that wait later (6 minutes after an hour).
 */
export function lockWaitDelayMs(previousMs: number, waitedMs: number): number {
  return Math.min(LOCK_WAIT_MAX_DELAY_MS, Math.max(Math.min(previousMs * 2, 5000), Math.floor(waitedMs / 10)));
}

/** Whether starting a workflow failed because one with that id is running (a node's lock, the coordinator). */
export function isAlreadyStarted(err: unknown): boolean {
  return (err instanceof Error && err.name === TemporalFailureType.WorkflowExecutionAlreadyStarted) || summariseFailure(err).type === TemporalFailureType.WorkflowExecutionAlreadyStarted;
}
