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
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
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
  help: 'Rollout waves that finished, by wave index and result (committed, restored, failed, aborted, planned, …)',
  labelNames: ['wave', 'result'] as const,
  registers: [registry],
});

/** Health-gate verdicts during rollouts. */
export const rolloutGateResultsTotal = new Counter({
  name: 'fos1_rollout_gate_results_total',
  help: 'Rollout health-gate verdicts (success, failure, inconclusive), by wave index (post-rollback: the check after a rollback), gate name and kind',
  labelNames: ['wave', 'gate', 'kind', 'result'] as const,
  registers: [registry],
});

/** Nodes that could not report their protected addresses to the enforcement guard. */
export const protectedAddressesUnavailable = new Gauge({
  name: 'fos1_node_protected_addresses_unavailable',
  help: 'Whether a node failed to report its protected addresses the last time the enforcement guard asked (1: automatic blocks for it are refused, enforcement fails closed; 0: reported)',
  labelNames: ['node'] as const,
  registers: [registry],
});

/** Failed protected-address reports, per node. */
export const protectedAddressFailuresTotal = new Counter({
  name: 'fos1_node_protected_addresses_failures_total',
  help: 'Times a node could not report its protected addresses to the enforcement guard (unreachable worker, read error)',
  labelNames: ['node'] as const,
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
  help: "Enforcement decisions the guard refused, by the refusal's code and where (ingest: before any workflow ran; workflow: the enforcement workflow's guard and caps)",
  labelNames: ['code', 'stage'] as const,
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
      waveFinished: { fn: (_info, wave, state) => rolloutWavesTotal.inc({ wave: String(wave), result: state }), callDuringReplay: false },
      gateResult: { fn: (_info, wave, gate, kind, result) => rolloutGateResultsTotal.inc({ wave: wave < 0 ? 'post-rollback' : String(wave), gate, kind, result }), callDuringReplay: false },
      guardRefusal: { fn: (_info, code, stage) => guardRefusalsTotal.inc({ code, stage }), callDuringReplay: false },
      protectedAddresses: {
        fn: (_info, node, reported) => {
          protectedAddressesUnavailable.set({ node }, reported ? 0 : 1);
          if (!reported) protectedAddressFailuresTotal.inc({ node });
        },
        callDuringReplay: false,
      },
    },
  };
}
