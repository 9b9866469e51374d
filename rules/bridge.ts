/**
 * The decision → workflow bridge: runs in the ingest worker, outside workflows.
 *
 * `notify` and `allow` decisions end here (logged). Enforcing decisions go through the
 * guard first, so an alert about a management address is refused (and audited) without
 * touching Temporal, then to the target's enforcement workflow with signalWithStart.
 * Repeats are coalesced: a verdict no stronger than one sent for the same target within
 * `coalesceMs` is counted, not sent, so a flood of alerts about one source costs a
 * handful of signals, not one per alert.
 */
import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AuditRecord } from '../model/audit';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { enforcementWorkflow, verdictSignal, ENFORCER, type EnforcementInput } from '../workflows/enforcement';
import { actionStrength, enforcementWorkflowId, type Decision } from './decision';
import type { EnforcementGuard } from './guard';

/** What became of one decision. */
export type BridgeOutcome = 'notified' | 'allowed' | 'refused' | 'signalled' | 'coalesced' | 'failed';

/** The part of the Temporal client the bridge uses (a fake in unit tests). */
export type WorkflowStarter = Pick<Client['workflow'], 'signalWithStart'>;

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
}

/** Sends decisions to enforcement workflows. */
export class EnforcementBridge {
  readonly counts: Record<BridgeOutcome, number> = { notified: 0, allowed: 0, refused: 0, signalled: 0, coalesced: 0, failed: 0 };
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
    const input: EnforcementInput = { target: decision.target, nodes: this.options.nodes, guard: this.options.guard.config };
    try {
      await this.options.workflows.signalWithStart(enforcementWorkflow, {
        workflowId: enforcementWorkflowId(decision.target),
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [input],
        signal: verdictSignal,
        signalArgs: [decision],
      });
      return this.count('signalled');
    } catch (err) {
      // Let the next verdict about this target try again.
      this.recent.delete(decision.target);
      logger.error({ err, decision }, `could not signal the enforcement workflow for ${decision.target}`);
      return this.count('failed');
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
