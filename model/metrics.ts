/**
 * What workflow code reports to the worker's metrics (metrics/registry.ts). Workflows may not
 * touch a metrics library (it is not deterministic and would count again on every replay), so
 * they call these sinks (`proxySinks<MetricsSinks>()`); the worker injects them with
 * `callDuringReplay: false` (workers/fos1-worker.ts), so a replayed history counts nothing twice.
 * A sink call is no command: adding or moving one changes no workflow's history.
 */
import type { Sinks } from '@temporalio/workflow';

/** How a node lock wait ended. */
export type LockWaitResult = 'acquired' | 'timed-out' | 'aborted';

/** The metrics sinks a workflow can call. */
export interface MetricsSinks extends Sinks {
  metrics: {
    /** A change finished: its final phase and, when it failed, the failure type. */
    changeFinished(outcome: string, failureType: string | undefined): void;
    /** A change waited for a node another change held, for `waitedMs`, and how that ended. */
    lockWait(result: LockWaitResult, waitedMs: number): void;
    /** A rollout wave ended (`wave`: its 0-based index) in `state` (committed, restored, failed, …). */
    waveFinished(wave: number, state: string): void;
    /**
     * A health gate reached a verdict (`success`, `failure`, `inconclusive`) in a wave's bake,
     * or after a rollback (`wave` = -1: the post-rollback check).
     */
    gateResult(wave: number, gate: string, kind: string, result: string): void;
    /** The enforcement workflow refused a verdict (`stage` workflow; ingest counts its own refusals, stage ingest). */
    guardRefusal(code: string, stage: 'workflow'): void;
    /** Whether `node` answered the enforcement guard with its protected addresses (it fails closed when not). */
    protectedAddresses(node: string, reported: boolean): void;
  };
}
