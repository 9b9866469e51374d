/**
 * The decision → workflow bridge: runs in the ingest worker, outside workflows.
 *
 * The bridge's guard (the ingest worker's FOS1_GUARD_FILE) only refuses early, to spare
 * Temporal; it is never handed on. The enforcement workflows and the coordinator enforce the
 * cluster worker's guard and caps, whatever a caller sends.
 *
 * `notify` and `allow` decisions end here (logged). Enforcing decisions go through the
 * guard first, so an alert about a management address is refused (and audited) without
 * touching Temporal, then to the target's enforcement workflow with signalWithStart.
 * Repeats are coalesced: a verdict no stronger than one sent for the same target within
 * `coalesceMs` is counted, not sent, so a flood of alerts about one source costs a
 * handful of signals, not one per alert.
 *
 * When Temporal cannot be reached, an enforcing decision is not lost: it goes to the
 * decision spool (ingest/spool.ts, on disk) and `submit` resolves only once it is kept
 * there (so the EVE tail saves its position past the line only then). While the spool
 * holds anything, new decisions join it (delivered in arrival order), and a background
 * loop delivers them, retrying with back-off (0.5 s doubling to 30 s) until Temporal is
 * back. Delivering one twice (a crash before the spool's head was saved) is harmless:
 * the verdict reaches the same per-target workflow by signal-with-start, and a repeat
 * while a block is in force at most extends it.
 *
 * Memory stays bounded under a flood of distinct sources: the coalescing map keeps at
 * most `maxRecent` targets (the oldest are forgotten first, which costs only a repeat
 * signal), and the spool is on disk, capped (callers refuse input once it is full).
 *
 * A block is admitted first: the bridge asks the enforcement coordinator (an Update,
 * starting the coordinator if needed) whether the caps allow one more, and hands the
 * admission to the workflow with the verdict, so the workflow can start the change in its
 * first task instead of asking the coordinator and waiting for a signal back. A refused
 * or failed admission is not the bridge's to act on: the verdict goes out without one and
 * the workflow, the durable authority, asks again and audits a refusal.
 *
 * {@link EnforcementBridge.close} waits for every Temporal call the bridge started,
 * including an admission it stopped waiting for (the client's gRPC retries go on for up to
 * about 20 s against an unreachable server): a call left running would retry on a timer
 * after the process, or a test, thinks the ingest has stopped. The wait is bounded
 * (`closeTimeoutMs`), and a give-up is logged with how many calls were left.
 */
import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AuditRecord } from '../model/audit';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { enforcementWorkflow, verdictSignal, ENFORCER, type EnforcementInput } from '../workflows/enforcement';
import { admitUpdate, ENFORCEMENT_COORDINATOR_ID, enforcementCoordinatorWorkflow, type AdmitAnswer } from '../workflows/enforcement-coordinator';
import { actionStrength, enforcementWorkflowId, type Admission, type Decision } from '../model/enforcement-decision';
import { guardRefusalsTotal } from '../metrics/registry';
import type { EnforcementGuard } from '../model/enforcement-guard';
import type { DecisionSpool, SpooledDecision } from './spool';

/** What became of one decision. */
export type BridgeOutcome = 'notified' | 'allowed' | 'refused' | 'signalled' | 'coalesced' | 'spooled' | 'failed';

/** What became of the admissions the bridge asked for. */
export interface AdmissionCounts {
  admitted: number;
  /** Refused by the caps (the workflow asks again and audits the refusal). */
  refused: number;
  /** No answer in time, or an error. */
  failed: number;
}

/**
 * The part of the Temporal client the bridge uses (a fake in unit tests). Without
 * `executeUpdateWithStart`, blocks go out unadmitted (the workflow asks the coordinator).
 */
export type WorkflowStarter = Pick<Client['workflow'], 'signalWithStart'> & Partial<Pick<Client['workflow'], 'executeUpdateWithStart'>>;

/** Options of {@link EnforcementBridge}. */
export interface BridgeOptions {
  workflows: WorkflowStarter;
  guard: EnforcementGuard;
  /** Nodes whose blocklists enforcement writes. */
  nodes: string[];
  logger: Logger;
  /** Repeats of a target within this many ms are coalesced. */
  coalesceMs: number;
  /** Clock, injectable for tests. */
  now?: () => number;
  /** How long to wait for the coordinator's admission before sending the verdict without one (default 2000). */
  admitTimeoutMs?: number;
  /**
   * Where decisions Temporal did not take are kept until it does. Without one, such a
   * decision is logged and counted `failed` (benchmarks, unit tests).
   */
  spool?: DecisionSpool;
  /** Targets the coalescing map remembers at most (default 100,000). */
  maxRecent?: number;
  /** Back-off of the spool's delivery: first and longest wait in ms (default 500 and 30,000). */
  retryBackoffMs?: { initial: number; max: number };
  /**
   * How long {@link EnforcementBridge.close} waits for Temporal calls still in flight
   * (default 30,000: past the client's default gRPC retries, about 20 s).
   */
  closeTimeoutMs?: number;
}

/** Default of {@link BridgeOptions.closeTimeoutMs}. */
export const BRIDGE_CLOSE_TIMEOUT_MS = 30_000;

/** Counters of the spool's delivery. */
export interface DeliveryCounts {
  /** Delivered from the spool. */
  delivered: number;
  /** Delivery attempts from the spool that failed (and were retried). */
  retries: number;
  /** Dropped: Temporal refused them as invalid (logged; retrying cannot help). */
  dropped: number;
}

/** Sends decisions to enforcement workflows. */
export class EnforcementBridge {
  readonly counts: Record<BridgeOutcome, number> = { notified: 0, allowed: 0, refused: 0, signalled: 0, coalesced: 0, spooled: 0, failed: 0 };
  readonly admissions: AdmissionCounts = { admitted: 0, refused: 0, failed: 0 };
  readonly delivery: DeliveryCounts = { delivered: 0, retries: 0, dropped: 0 };
  private readonly recent = new Map<string, { strength: number; at: number }>();
  private readonly now: () => number;
  private readonly maxRecent: number;
  private draining: Promise<void> | null = null;
  private closed = false;
  private wakeDrain: (() => void) | null = null;
  /** Temporal calls started and not yet settled (deliveries and admissions). */
  private readonly calls = new Set<Promise<unknown>>();

  constructor(private readonly options: BridgeOptions) {
    this.now = options.now ?? Date.now;
    this.maxRecent = options.maxRecent ?? 100_000;
    if (options.spool && options.spool.pending > 0) this.startDrain();
  }

  /** Whether new input should be refused (or wait): the spool is past its cap. */
  get full(): boolean {
    return this.options.spool?.full ?? false;
  }

  /** Resolves when the spool has room (at once without a spool). */
  whenRoom(): Promise<void> {
    return this.options.spool?.whenRoom() ?? Promise.resolve();
  }

  /** Targets in the coalescing map (bounded by `maxRecent`). */
  get recentTargets(): number {
    return this.recent.size;
  }

  /** Temporal calls the bridge started that have not settled yet. */
  get callsInFlight(): number {
    return this.calls.size;
  }

  /**
   * Stops the spool's delivery loop (records left stay on disk for the next start), waits
   * (bounded by `closeTimeoutMs`) for the Temporal calls still in flight, closes the spool.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeDrain?.();
    await this.draining;
    await this.settleCalls();
    await this.options.spool?.close();
  }

  /** Waits until no call is in flight, or logs how many are left when `closeTimeoutMs` runs out. */
  private async settleCalls(): Promise<void> {
    if (this.calls.size === 0) return;
    const timeoutMs = this.options.closeTimeoutMs ?? BRIDGE_CLOSE_TIMEOUT_MS;
    const startedAt = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      // A call may start while another settles (a delivery after its admission): wait for those too.
      while (this.calls.size > 0) {
        if ((await Promise.race([Promise.allSettled([...this.calls]), timedOut])) === 'timeout') {
          this.options.logger.warn(
            { callsInFlight: this.calls.size, waitedMs: Date.now() - startedAt },
            `stopping with ${this.calls.size} Temporal call(s) still in flight after ${timeoutMs} ms (the client may still retry them; a verdict among them is in the decision spool or was sent)`,
          );
          return;
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Counts `call` as in flight until it settles (what {@link close} waits for). */
  private track<T>(call: Promise<T>): Promise<T> {
    this.calls.add(call);
    const untrack = () => void this.calls.delete(call);
    call.then(untrack, untrack);
    return call;
  }

  /** Handles one decision. Never throws: failures are logged and counted. */
  async submit(decision: Decision): Promise<BridgeOutcome> {
    const { logger } = this.options;
    if (decision.action === 'notify' || decision.action === 'allow') {
      logger.info({ decision }, `${decision.action} ${decision.target}: ${decision.reason}`);
      return this.count(decision.action === 'notify' ? 'notified' : 'allowed');
    }
    const refusal = this.options.guard.checkTarget(decision.target);
    if (refusal) {
      const record: AuditRecord = {
        changeId: enforcementWorkflowId(decision.target),
        actor: ENFORCER,
        step: 'refused',
        result: 'failed',
        startedAt: new Date(this.now()).toISOString(),
        durationMs: 0,
        detail: `${refusal.code}: ${refusal.reason} (rule ${decision.rule}, ${decision.action})`,
      };
      logger.warn({ audit: record, decision }, `audit refused ${decision.action} of ${decision.target}: ${refusal.reason}`);
      guardRefusalsTotal.inc({ code: refusal.code, stage: 'ingest' });
      return this.count('refused');
    }
    const now = this.now();
    const strength = actionStrength(decision.action);
    const last = this.recent.get(decision.target);
    if (last && now - last.at < this.options.coalesceMs && strength <= last.strength) return this.count('coalesced');
    // Marked before the await, so concurrent repeats coalesce against this one (a kept
    // decision will be delivered, so repeats of it coalesce too). Re-inserted so the map's
    // order is by last use and the oldest are forgotten first.
    this.recent.delete(decision.target);
    this.recent.set(decision.target, { strength, at: now });
    if (this.recent.size > this.maxRecent) this.forget(now - this.options.coalesceMs);
    const spool = this.options.spool;
    // Behind kept decisions, in order: Temporal is likely still away, and order is kept.
    if (spool && (spool.pending > 0 || this.draining)) return this.keep(decision);
    try {
      await this.deliver(decision);
      return this.count('signalled');
    } catch (err) {
      if (spool && !isPermanent(err)) {
        logger.warn({ err: errorSummary(err), target: decision.target }, `Temporal did not take the verdict for ${decision.target}; keeping it in the decision spool`);
        return this.keep(decision);
      }
      // Let the next verdict about this target try again.
      this.recent.delete(decision.target);
      logger.error({ err, decision }, `could not signal the enforcement workflow for ${decision.target}`);
      return this.count('failed');
    }
  }

  /** Admits (blocks) and signals one decision; throws what Temporal threw. */
  private async deliver(decision: Decision): Promise<void> {
    // No guard and no caps: the workflow reads them from the cluster worker's configuration.
    const input: EnforcementInput = { target: decision.target, nodes: this.options.nodes };
    const admission = decision.action === 'block' ? await this.admit(decision.target) : undefined;
    await this.track(
      this.options.workflows.signalWithStart(enforcementWorkflow, {
        workflowId: enforcementWorkflowId(decision.target),
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [input],
        signal: verdictSignal,
        signalArgs: [admission ? { ...decision, admission } : decision],
      }),
    );
  }

  /**
   * Appends to the spool, retrying (with back-off) until the disk takes it: resolving
   * means kept, and the callers move on (the tail saves its position) only then.
   */
  private async keep(decision: Decision): Promise<BridgeOutcome> {
    const spool = this.options.spool!;
    let wait = this.options.retryBackoffMs?.initial ?? 500;
    for (;;) {
      try {
        await spool.append(decision);
        break;
      } catch (err) {
        if (this.closed) throw err;
        this.options.logger.error({ err }, `could not write the verdict for ${decision.target} to the decision spool; retrying in ${wait} ms`);
        await sleep(wait);
        wait = Math.min(wait * 2, this.options.retryBackoffMs?.max ?? 30_000);
      }
    }
    this.startDrain();
    return this.count('spooled');
  }

  private startDrain(): void {
    if (this.draining || this.closed) return;
    this.draining = this.drain()
      .catch((err: unknown) => this.options.logger.error({ err }, 'the decision spool delivery loop failed'))
      .finally(() => {
        this.draining = null;
        // Something kept after the loop looked for the last time.
        if (!this.closed && (this.options.spool?.pending ?? 0) > 0) this.startDrain();
      });
  }

  /** Delivers the spool's records in order, each retried with back-off until Temporal takes it. */
  private async drain(): Promise<void> {
    const spool = this.options.spool!;
    const initial = this.options.retryBackoffMs?.initial ?? 500;
    const max = this.options.retryBackoffMs?.max ?? 30_000;
    let wait = initial;
    while (!this.closed) {
      const record: SpooledDecision | null = await spool.next();
      if (!record) return;
      try {
        await this.deliver(record.decision);
        // Counted with the spool's own count (which drops at once), so the two agree.
        this.delivery.delivered++;
        await spool.ack(record);
        if (wait !== initial) this.options.logger.info({ spool: spool.stats }, 'Temporal takes verdicts again; delivering the decision spool');
        wait = initial;
      } catch (err) {
        if (isPermanent(err)) {
          this.delivery.dropped++;
          this.options.logger.error({ err, decision: record.decision }, `Temporal refused the kept verdict for ${record.decision.target} as invalid; dropped`);
          await spool.skip(record);
          continue;
        }
        this.delivery.retries++;
        this.options.logger.warn({ err: errorSummary(err), pending: spool.pending, retryInMs: wait }, `Temporal still unreachable; ${spool.pending} verdict(s) kept in the decision spool`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.wakeDrain = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeDrain = null;
        wait = Math.min(wait * 2, max);
      }
    }
  }

  /**
   * Asks the coordinator to admit a block of `target` under the caps. Undefined when it
   * refused, did not answer in time, or the client cannot send updates: the verdict is
   * still sent, and the workflow asks for itself. (An admission that arrives too late is
   * held until it expires, so it errs on the side of fewer blocks.)
   */
  private async admit(target: string): Promise<Admission | undefined> {
    const update = this.options.workflows.executeUpdateWithStart?.bind(this.options.workflows);
    if (!update) return undefined;
    const timeoutMs = this.options.admitTimeoutMs ?? 2000;
    // The coordinator's deadline is a little earlier than ours, so an answer it gives is
    // one we still take (a slot reserved for an asker who left would be held for nothing).
    const deadline = new Date(Date.now() + Math.max(timeoutMs - 500, timeoutMs / 2)).toISOString();
    let timer: NodeJS.Timeout | undefined;
    try {
      const answer = await Promise.race([
        // Tracked: past our time-out the call goes on (and retries) without us; close() waits for it.
        this.track(
          update(admitUpdate, {
            args: [{ target, deadline }],
            startWorkflowOperation: new WithStartWorkflowOperation(enforcementCoordinatorWorkflow, {
              workflowId: ENFORCEMENT_COORDINATOR_ID,
              taskQueue: CLUSTER_TASK_QUEUE,
              args: [undefined],
              workflowIdConflictPolicy: 'USE_EXISTING',
            }),
          }),
        ),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), timeoutMs);
        }),
      ]);
      if (answer === 'timeout') {
        this.admissions.failed++;
        this.options.logger.warn({ target }, `no admission from the enforcement coordinator for ${target} in time; the workflow will ask`);
        return undefined;
      }
      const result: AdmitAnswer = answer;
      if (!result.granted) {
        this.admissions.refused++;
        return undefined;
      }
      this.admissions.admitted++;
      return { token: result.token, expiresAt: result.expiresAt };
    } catch (err) {
      this.admissions.failed++;
      this.options.logger.warn({ err, target }, `asking the enforcement coordinator to admit ${target} failed; the workflow will ask`);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  private count(outcome: BridgeOutcome): BridgeOutcome {
    this.counts[outcome]++;
    return outcome;
  }

  /**
   * Bounds the coalescing map: entries past the window go first; if a flood of distinct
   * targets keeps it over the cap even so, the least recently used go too (the cost is a
   * repeat signal, which the target's workflow absorbs).
   */
  private forget(cutoff: number): void {
    for (const [target, entry] of this.recent) if (entry.at < cutoff) this.recent.delete(target);
    // Leave headroom, so the sweep above is not repeated on every new target.
    const keep = Math.floor(this.maxRecent * 0.9);
    for (const target of this.recent.keys()) {
      if (this.recent.size <= keep) break;
      this.recent.delete(target);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** gRPC INVALID_ARGUMENT: Temporal will never take this request; retrying cannot help. */
function isPermanent(err: unknown): boolean {
  const code = (e: unknown): unknown => (e && typeof e === 'object' ? (e as { code?: unknown }).code : undefined);
  const cause = err && typeof err === 'object' ? (err as { cause?: unknown }).cause : undefined;
  return code(err) === 3 || code(cause) === 3;
}

/** An error's message only (a connection error's stack says nothing new, every few seconds). */
function errorSummary(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
