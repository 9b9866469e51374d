/**
 * What workflow code reports to the worker's metrics (metrics/registry.ts). Workflows may not
 * touch a metrics library (it is not deterministic and would count again on every replay), so
 * they call these sinks (`proxySinks<MetricsSinks>()`); the worker injects them with
 * `callDuringReplay: false` (workers/fos1-worker.ts), so a replayed history counts nothing twice.
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
  };
}
