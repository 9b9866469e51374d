/**
 * fos1's own Prometheus metrics (prom-client), one registry per process. Every fos1 process —
 * the worker (workers/main.ts), the API (api/main.ts), ingest (ingest/main.ts) and `npm start`
 * — serves this registry at `/metrics` on its own loopback listener (metrics/server.ts,
 * `FOS1_METRICS_PORT`); the Temporal SDK's metrics are a separate endpoint (metrics/config.ts).
 * Names and labels are listed in docs/observability.md; keep the two in step.
 *
 * Workflow code never touches these: it reports through sinks (model/metrics.ts), which
 * {@link metricsSinks} turns into counts here, outside replay.
 */
import type { InjectedSinks } from '@temporalio/worker';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MetricsSinks } from '../model/metrics';

/** The process's registry: fos1's metrics plus Node's process metrics (`process_*`, `nodejs_*`). */
export const registry = new Registry();
collectDefaultMetrics({ register: registry });
// Gauges that prom-client names like counters: `promtool check metrics` rejects the names, so
// they are left out (nodejs_active_handles / _requests / _resources carry the same numbers).
for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);

/** Seconds, from a millisecond to ten minutes: node steps are fast, big blocklists and lock waits are not. */
const DURATION_BUCKETS = [0.001, 0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 120, 600];

/** Changes that finished, by final phase (`applied`, `reverted`, `rejected`, `planned`, …) and failure type (`none` when it did not fail). */
export const changesTotal = new Counter({
  name: 'fos1_changes_total',
  help: 'Change workflows that finished, by outcome (final phase) and failure type (none when it did not fail)',
  labelNames: ['outcome', 'failure_type'] as const,
  registers: [registry],
});

/** Node activities (prepare, apply, check) per subsystem. */
export const nodeStepSeconds = new Histogram({
  name: 'fos1_node_step_duration_seconds',
  help: 'Duration of a node activity step (prepare, apply, check) per subsystem (all for multi-subsystem steps), by result',
  labelNames: ['step', 'subsystem', 'result'] as const,
  buckets: DURATION_BUCKETS,
  registers: [registry],
});

/** Rollbacks: one subsystem's snapshot put back on a node. */
export const rollbackSeconds = new Histogram({
  name: 'fos1_node_rollback_duration_seconds',
  help: "Duration of restoring one subsystem's snapshot on a node (a rollback step), by result",
  labelNames: ['subsystem', 'result'] as const,
  buckets: DURATION_BUCKETS,
  registers: [registry],
});

/** Waits for a node's lock (another change held it). */
export const lockWaitSeconds = new Histogram({
  name: 'fos1_node_lock_wait_duration_seconds',
  help: "Time a change waited for a node's lock held by another change, by how the wait ended (acquired, timed-out, aborted)",
  labelNames: ['result'] as const,
  buckets: DURATION_BUCKETS,
  registers: [registry],
});

/** Rollout waves that finished. */
export const rolloutWavesTotal = new Counter({
  name: 'fos1_rollout_waves_total',
  help: 'Rollout waves that finished, by wave index and result',
  labelNames: ['wave', 'result'] as const,
  registers: [registry],
});

/** Health-gate verdicts during rollouts. */
export const rolloutGateResultsTotal = new Counter({
  name: 'fos1_rollout_gate_results_total',
  help: 'Rollout health-gate verdicts, by wave index, gate name and result',
  labelNames: ['wave', 'gate', 'result'] as const,
  registers: [registry],
});

/** IDS/DPI lines read by ingest. */
export const ingestLinesTotal = new Counter({
  name: 'fos1_ingest_lines_total',
  help: 'Verdict lines read by ingest, by source (eve origin or ndpi) and result (accepted, rejected)',
  labelNames: ['source', 'result'] as const,
  registers: [registry],
});

/** Rule decisions taken on accepted lines. */
export const decisionsTotal = new Counter({
  name: 'fos1_enforcement_decisions_total',
  help: 'Enforcement decisions the rules took, by action (block, rate-limit, quarantine, notify, allow)',
  labelNames: ['action'] as const,
  registers: [registry],
});

/** Decisions the guard refused (allow-listed, too broad, …). */
export const guardRefusalsTotal = new Counter({
  name: 'fos1_guard_refusals_total',
  help: "Enforcement decisions the guard refused before any workflow ran, by the refusal's code",
  labelNames: ['code'] as const,
  registers: [registry],
});

/** API responses. */
export const apiResponsesTotal = new Counter({
  name: 'fos1_api_responses_total',
  help: 'HTTP API responses, by method, route pattern (unmatched: no such route) and status code',
  labelNames: ['method', 'route', 'status'] as const,
  registers: [registry],
});

/**
 * Counts one rollout health-gate verdict. The rollout engine calls it where a gate is judged
 * (`wave`: 0-based wave index; `gate`: the gate's name; `result`: pass, fail, error).
 */
export function recordGateResult(wave: number, gate: string, result: string): void {
  rolloutGateResultsTotal.inc({ wave: String(wave), gate, result });
}

/** Counts one finished rollout wave (`result`: promoted, failed, aborted, …). */
export function recordWave(wave: number, result: string): void {
  rolloutWavesTotal.inc({ wave: String(wave), result });
}

/**
 * Times `fn` into `histogram` with `labels` plus `result` (`ok`, or `failed` when it throws).
 * The activity's own errors pass through unchanged.
 */
export async function timed<T, L extends string>(histogram: Histogram<L | 'result'>, labels: Partial<Record<L, string>>, fn: () => Promise<T>): Promise<T> {
  const end = histogram.startTimer(labels as Partial<Record<L | 'result', string>>);
  try {
    const value = await fn();
    end({ result: 'ok' } as Partial<Record<L | 'result', string>>);
    return value;
  } catch (err) {
    end({ result: 'failed' } as Partial<Record<L | 'result', string>>);
    throw err;
  }
}

/** The workflow metrics sinks (model/metrics.ts), never called during replay. */
export function metricsSinks(): InjectedSinks<MetricsSinks> {
  return {
    metrics: {
      changeFinished: { fn: (_info, outcome, failureType) => changesTotal.inc({ outcome, failure_type: failureType ?? 'none' }), callDuringReplay: false },
      lockWait: { fn: (_info, result, waitedMs) => lockWaitSeconds.observe({ result }, waitedMs / 1000), callDuringReplay: false },
    },
  };
}
