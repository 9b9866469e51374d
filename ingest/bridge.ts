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
 * A block is admitted first: the bridge asks the enforcement coordinator (an Update,
 * starting the coordinator if needed) whether the caps allow one more, and hands the
 * admission to the workflow with the verdict, so the workflow can start the change in its
 * first task instead of asking the coordinator and waiting for a signal back. A refused
 * or failed admission is not the bridge's to act on: the verdict goes out without one and
 * the workflow, the durable authority, asks again and audits a refusal.
 */
import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AuditRecord } from '../model/audit';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { enforcementWorkflow, verdictSignal, ENFORCER, type EnforcementInput } from '../workflows/enforcement';
import { admitUpdate, ENFORCEMENT_COORDINATOR_ID, enforcementCoordinatorWorkflow, type AdmitAnswer } from '../workflows/enforcement-coordinator';
import { actionStrength, enforcementWorkflowId, type Admission, type Decision } from '../model/enforcement-decision';
import type { EnforcementGuard } from '../model/enforcement-guard';

/** What became of one decision. */
export type BridgeOutcome = 'notified' | 'allowed' | 'refused' | 'signalled' | 'coalesced' | 'failed';

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
}

/** Sends decisions to enforcement workflows. */
export class EnforcementBridge {
  readonly counts: Record<BridgeOutcome, number> = { notified: 0, allowed: 0, refused: 0, signalled: 0, coalesced: 0, failed: 0 };
  readonly admissions: AdmissionCounts = { admitted: 0, refused: 0, failed: 0 };
  private readonly recent = new Map<string, { strength: number; at: number }>();
  private readonly now: () => number;

  constructor(private readonly options: BridgeOptions) {
    this.now = options.now ?? Date.now;
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
      return this.count('refused');
    }
    const now = this.now();
    const strength = actionStrength(decision.action);
    const last = this.recent.get(decision.target);
    if (last && now - last.at < this.options.coalesceMs && strength <= last.strength) return this.count('coalesced');
    // Marked before the await, so concurrent repeats coalesce against this one.
    this.recent.set(decision.target, { strength, at: now });
    if (this.recent.size > 100_000) this.forgetOlderThan(now - this.options.coalesceMs);
    // No guard and no caps: the workflow reads them from the cluster worker's configuration.
    const input: EnforcementInput = { target: decision.target, nodes: this.options.nodes };
    const admission = decision.action === 'block' ? await this.admit(decision.target) : undefined;
    try {
      await this.options.workflows.signalWithStart(enforcementWorkflow, {
        workflowId: enforcementWorkflowId(decision.target),
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [input],
        signal: verdictSignal,
        signalArgs: [admission ? { ...decision, admission } : decision],
      });
      return this.count('signalled');
    } catch (err) {
      // Let the next verdict about this target try again.
      this.recent.delete(decision.target);
      logger.error({ err, decision }, `could not signal the enforcement workflow for ${decision.target}`);
      return this.count('failed');
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
        update(admitUpdate, {
          args: [{ target, deadline }],
          startWorkflowOperation: new WithStartWorkflowOperation(enforcementCoordinatorWorkflow, {
            workflowId: ENFORCEMENT_COORDINATOR_ID,
            taskQueue: CLUSTER_TASK_QUEUE,
            args: [undefined],
            workflowIdConflictPolicy: 'USE_EXISTING',
          }),
        }),
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

  private forgetOlderThan(cutoff: number): void {
    for (const [target, entry] of this.recent) if (entry.at < cutoff) this.recent.delete(target);
  }
}
