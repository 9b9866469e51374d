/**
 * Health gates of a staged rollout: what a change request's strategy names under
 * `gates: { <name>: GateSpec }`, what one measurement is, and the pure analysis that turns a
 * run of measurements into a verdict with Argo Rollouts' semantics (count, interval,
 * failure limit, inconclusive limit).
 *
 * A gate that cannot measure (no such namespace, Prometheus down, an empty vector, NaN,
 * no baseline) is `inconclusive`, never `success`: a rollout must not advance on a
 * measurement nobody took.
 *
 * Pure code: workflows import it (no Node built-ins here). The activities live in
 * activities/gates.ts; the types of their signatures are here so workflows can
 * `proxyActivities<NodeGateActivities>` without importing activity code.
 */
import { z } from 'zod';
import { formatPath } from './issue-path';
import { cidrSchema, ipSchema, portSchema } from './ip';
import { interfaceNameSchema, tableSchema } from './node-state';

/**
 * Why fos1's datapath dropped a packet, in the order of `FOS1_REASON_*` (1..5) in
 * bpf/include/fos1-datapath.h; bpf/datapath-codec.ts's `DropReason` names the same values
 * (a unit test keeps the two equal).
 */
export const DROP_REASONS = ['blocklist-host', 'blocklist-prefix', 'zone-rule', 'zone-default', 'rate-limit'] as const;
/** One drop reason's name. */
export type DropReasonName = (typeof DROP_REASONS)[number];

/** Gate names: how a strategy and the status query refer to a gate. */
export const GATE_NAME = /^[a-z][a-z0-9-]{0,62}$/;

/** Fields every gate kind shares (Argo Rollouts' analysis semantics). */
const commonGateFields = {
  /** Seconds between two measurements of one run (default 10). */
  intervalSeconds: z.number().positive('must be more than 0').max(3600, 'must be at most 3600 (one hour)').default(10),
  /** Measurements per run (default 3): the run succeeds when this many are done within the limits. */
  count: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1000, 'must be at most 1000').default(3),
  /** Failed measurements tolerated (default 0): one more and the gate fails. */
  failureLimit: z.number().int('must be a whole number').min(0, 'must be 0 or more').default(0),
  /** Inconclusive measurements tolerated (default 0): one more and the gate is inconclusive (the rollout pauses). */
  inconclusiveLimit: z.number().int('must be a whole number').min(0, 'must be 0 or more').default(0),
};

/** One probe of a reachability gate, run inside the node's network namespace. */
export const reachabilityTargetSchema = z
  .object({
    /** `icmp`: one echo request (`ping -c1`); `tcp`: a TCP connect to `port`. */
    protocol: z.enum(['icmp', 'tcp'], { error: 'must be "icmp" or "tcp"' }),
    /** An IPv4 or IPv6 address (no names: a gate must not depend on the node's resolver). */
    address: ipSchema,
    /** TCP port; required for `tcp`, not allowed for `icmp`. */
    port: portSchema.optional(),
    /** How long to wait for the answer (default 1000 ms). */
    timeoutMs: z.number().int('must be a whole number').min(100, 'must be at least 100').max(30_000, 'must be at most 30000').default(1000),
  })
  .strict()
  .superRefine((target, ctx) => {
    if (target.protocol === 'tcp' && target.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: 'is required for a tcp probe' });
    if (target.protocol === 'icmp' && target.port !== undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: 'is not allowed for an icmp probe' });
  });

/** ICMP and TCP probes from inside the node's namespace: gateways, DNS, a service behind the router. */
export const reachabilityGateSchema = z
  .object({
    kind: z.literal('reachability'),
    ...commonGateFields,
    targets: z.array(reachabilityTargetSchema).min(1, 'must list at least one target').max(32, 'must list at most 32 targets'),
  })
  .strict();

/** fos1's datapath drop counters per reason, against the baseline taken before the wave. */
export const datapathGateSchema = z
  .object({
    kind: z.literal('datapath'),
    ...commonGateFields,
    /** Largest tolerated increase of the drop rate (packets/s) of any one reason over the baseline's (default 10). */
    maxDropRateIncreasePerSecond: z.number().min(0, 'must be 0 or more').default(10),
    /** Reasons to watch (default: all of {@link DROP_REASONS}). */
    reasons: z
      .array(z.enum(DROP_REASONS, { error: `must be one of ${DROP_REASONS.join(', ')}` }))
      .min(1, 'must list at least one reason (leave it out for all)')
      .optional(),
    /** Seconds over which one measurement (and the baseline) samples the counters (default 1). */
    sampleSeconds: z.number().positive('must be more than 0').max(60, 'must be at most 60').default(1),
  })
  .strict();

/** A route the routes gate expects in the node's namespace. */
export const expectedRouteSchema = z
  .object({
    /** A prefix, or `default` (0.0.0.0/0; `default6` for ::/0). */
    destination: z
      .string()
      .transform((d) => (d === 'default' ? '0.0.0.0/0' : d === 'default6' ? '::/0' : d))
      .pipe(cidrSchema),
    /** Table (default main, 254). */
    table: tableSchema.default(254),
    /** When given, the route must have this gateway (or a next hop with it). */
    gateway: ipSchema.optional(),
    /** When given, the route must leave through this device (or a next hop does). */
    device: interfaceNameSchema.optional(),
  })
  .strict();

/** Routes and neighbours present in the node's namespace. */
export const routesGateSchema = z
  .object({
    kind: z.literal('routes'),
    ...commonGateFields,
    routes: z.array(expectedRouteSchema).max(256, 'must list at most 256 routes').default([]),
    /**
     * Neighbour addresses that must have a usable entry (any state but FAILED and
     * INCOMPLETE; NOARP and PERMANENT count).
     */
    neighbours: z.array(ipSchema).max(256, 'must list at most 256 neighbours').default([]),
  })
  .strict()
  .superRefine((gate, ctx) => {
    if (gate.routes.length + gate.neighbours.length === 0) ctx.addIssue({ code: 'custom', path: ['routes'], message: 'routes or neighbours must list at least one entry' });
  });

/** Comparison of a Prometheus gate's value. */
export const comparisonOps = ['<', '<=', '>', '>=', '=='] as const;
export type ComparisonOp = (typeof comparisonOps)[number];

/** A PromQL instant query over Prometheus's HTTP API (`/api/v1/query`), run by the cluster worker. */
export const prometheusGateSchema = z
  .object({
    kind: z.literal('prometheus'),
    ...commonGateFields,
    /** `http://host:port` (or https), optionally with a path prefix; no credentials, query or fragment. */
    address: z
      .string()
      .max(2048, 'must be at most 2048 characters')
      .refine((text) => {
        try {
          const url = new URL(text);
          return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '' && url.search === '' && url.hash === '';
        } catch {
          return false;
        }
      }, 'must be an http(s) URL like "http://prometheus:9090" without credentials, query or fragment'),
    /** PromQL; it must return a scalar or a vector of exactly one sample (aggregate it: `sum(...)`, `max(...)`). */
    query: z.string().min(1, 'must not be empty').max(4096, 'must be at most 4096 characters'),
    /** The value passes when `value <op> successCondition.value`. */
    successCondition: z
      .object({
        op: z.enum(comparisonOps, { error: `must be one of ${comparisonOps.join(' ')}` }),
        value: z.number().refine(Number.isFinite, 'must be a finite number'),
      })
      .strict(),
    /** HTTP time-out of one query (default 5000 ms). */
    timeoutMs: z.number().int('must be a whole number').min(100, 'must be at least 100').max(60_000, 'must be at most 60000').default(5000),
  })
  .strict();

/** One gate: common analysis fields plus one kind. */
export const gateSpecSchema = z.discriminatedUnion('kind', [reachabilityGateSchema, datapathGateSchema, routesGateSchema, prometheusGateSchema], {
  error: 'must have kind "reachability", "datapath", "routes" or "prometheus"',
});

/** The strategy's `gates` object: gate name → spec. */
export const gatesSchema = z
  .record(z.string(), gateSpecSchema)
  .superRefine((gates, ctx) => {
    // Checked here rather than as the record's key schema, whose error would not name the key.
    for (const name of Object.keys(gates)) {
      if (!GATE_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'gate names must be lowercase letters, digits and "-", starting with a letter (at most 63)' });
    }
    if (Object.keys(gates).length > 16) ctx.addIssue({ code: 'custom', message: 'must name at most 16 gates' });
  });

export type GateSpec = z.output<typeof gateSpecSchema>;
export type GateSpecInput = z.input<typeof gateSpecSchema>;
export type ReachabilityGateSpec = z.output<typeof reachabilityGateSchema>;
export type ReachabilityTarget = z.output<typeof reachabilityTargetSchema>;
export type DatapathGateSpec = z.output<typeof datapathGateSchema>;
export type RoutesGateSpec = z.output<typeof routesGateSchema>;
export type ExpectedRoute = z.output<typeof expectedRouteSchema>;
export type PrometheusGateSpec = z.output<typeof prometheusGateSchema>;
/** A gate kind measured on the node (node task queue). */
export type NodeGateSpec = ReachabilityGateSpec | DatapathGateSpec | RoutesGateSpec;

/** A field and what is wrong with it. */
export interface GateIssue {
  field: string;
  message: string;
}

/** Parses one gate spec; issues name the field (`targets[0].port`). */
export function parseGateSpec(input: unknown): { ok: true; spec: GateSpec } | { ok: false; issues: GateIssue[] } {
  const parsed = gateSpecSchema.safeParse(input);
  if (parsed.success) return { ok: true, spec: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => ({ field: formatPath(i.path), message: i.message })) };
}

/** Where a gate is measured: on the node's task queue, or (Prometheus) on the cluster's. */
export function gateQueue(spec: Pick<GateSpec, 'kind'>): 'node' | 'cluster' {
  return spec.kind === 'prometheus' ? 'cluster' : 'node';
}

/** The outcome of one measurement. */
export type MeasurementResult = 'success' | 'failure' | 'inconclusive';

/** One measurement of one gate. */
export interface Measurement {
  /** When it was taken (ISO 8601). */
  at: string;
  result: MeasurementResult;
  /** The measured number, when the kind has one (Prometheus value, worst drop-rate increase, slowest probe in ms). */
  value?: number;
  /** What was seen, for operators (never secrets or file contents). */
  detail: string;
}

/** A gate run's phase. */
export type GatePhase = 'running' | 'success' | 'failure' | 'inconclusive';

/** Counts of a run's measurements so far. */
export interface GateTally {
  successes: number;
  failures: number;
  inconclusives: number;
}

/** A gate's state as the rollout status shows it. */
export interface GateVerdict {
  gate: string;
  kind: GateSpec['kind'];
  phase: GatePhase;
  tally: GateTally;
  /** The last few measurements (bounded, newest last). */
  measurements: Measurement[];
}

/** Measurements the status keeps per gate (bounded history and payloads). */
export const VERDICT_MEASUREMENTS_KEPT = 5;

type AnalysisLimits = Pick<GateSpec, 'count' | 'failureLimit' | 'inconclusiveLimit'>;

/**
 * Argo Rollouts' analysis of one run, measurement by measurement in order: `failure` as soon
 * as failures exceed `failureLimit`; `inconclusive` as soon as inconclusives exceed
 * `inconclusiveLimit`; `success` once `count` measurements are done within both limits;
 * `running` before that. Measurements after the first `count` are ignored.
 */
export function analyse(spec: AnalysisLimits, measurements: readonly Pick<Measurement, 'result'>[]): GatePhase {
  const tally = { successes: 0, failures: 0, inconclusives: 0 };
  for (const [i, m] of measurements.entries()) {
    if (i >= spec.count) break;
    if (m.result === 'success') tally.successes++;
    else if (m.result === 'failure') tally.failures++;
    else tally.inconclusives++;
    if (tally.failures > spec.failureLimit) return 'failure';
    if (tally.inconclusives > spec.inconclusiveLimit) return 'inconclusive';
  }
  return Math.min(measurements.length, spec.count) >= spec.count ? 'success' : 'running';
}

/** Counts the results of the first `count` measurements. */
export function tally(spec: Pick<GateSpec, 'count'>, measurements: readonly Pick<Measurement, 'result'>[]): GateTally {
  const counted = measurements.slice(0, spec.count);
  return {
    successes: counted.filter((m) => m.result === 'success').length,
    failures: counted.filter((m) => m.result === 'failure').length,
    inconclusives: counted.filter((m) => m.result === 'inconclusive').length,
  };
}

/** The verdict of a run: phase, tally and the last {@link VERDICT_MEASUREMENTS_KEPT} measurements. */
export function gateVerdict(gate: string, spec: GateSpec, measurements: readonly Measurement[]): GateVerdict {
  return {
    gate,
    kind: spec.kind,
    phase: analyse(spec, measurements),
    tally: tally(spec, measurements),
    measurements: measurements.slice(-VERDICT_MEASUREMENTS_KEPT),
  };
}

/** Whether `value <op> threshold` holds (the Prometheus gate's success condition). */
export function compare(value: number, op: ComparisonOp, threshold: number): boolean {
  switch (op) {
    case '<':
      return value < threshold;
    case '<=':
      return value <= threshold;
    case '>':
      return value > threshold;
    case '>=':
      return value >= threshold;
    case '==':
      return value === threshold;
  }
}

/** Drop counters of one node sampled before a wave: the datapath gate compares against its rates. */
export interface DatapathBaseline {
  /** When the sample ended (ISO 8601). */
  at: string;
  /** Length of the sample window, seconds. */
  windowSeconds: number;
  /** Dropped packets per second per reason over the window. */
  ratePerSecond: Record<DropReasonName, number>;
  /** Whether the datapath counters could be read (no pinned map: every rate is 0 and gates against it are inconclusive). */
  available: boolean;
  /** Why not, when not available. */
  detail?: string;
}

/**
 * Pure part of the datapath gate: the measurement for a current sample against the
 * baseline. Inconclusive without a usable baseline or sample.
 */
export function judgeDatapath(
  spec: Pick<DatapathGateSpec, 'maxDropRateIncreasePerSecond' | 'reasons'>,
  baseline: DatapathBaseline | undefined,
  current: DatapathBaseline,
): Omit<Measurement, 'at'> {
  if (!baseline) return { result: 'inconclusive', detail: 'no baseline: the datapath gate needs datapathBaseline() taken before the wave' };
  if (!baseline.available) return { result: 'inconclusive', detail: `baseline has no datapath counters: ${baseline.detail ?? 'unavailable'}` };
  if (!current.available) return { result: 'inconclusive', detail: `datapath counters unavailable: ${current.detail ?? 'unavailable'}` };
  const reasons = spec.reasons ?? DROP_REASONS;
  let worst: { reason: DropReasonName; increase: number } | undefined;
  for (const reason of reasons) {
    const increase = current.ratePerSecond[reason] - baseline.ratePerSecond[reason];
    if (!worst || increase > worst.increase) worst = { reason, increase };
  }
  const w = worst ?? { reason: reasons[0] ?? 'blocklist-host', increase: 0 };
  const rounded = Math.round(w.increase * 100) / 100;
  const over = w.increase > spec.maxDropRateIncreasePerSecond;
  return {
    result: over ? 'failure' : 'success',
    value: rounded,
    detail: `largest drop-rate increase ${rounded}/s (${w.reason}) ${over ? '>' : '<='} ${spec.maxDropRateIncreasePerSecond}/s`,
  };
}

/** Input of the node activity `measureGate`. */
export interface MeasureGateInput {
  /** The gate's name (for details and logs). */
  name: string;
  spec: GateSpec;
  /** The datapath gate's baseline (from `datapathBaseline()` before the wave); other kinds ignore it. */
  baseline?: DatapathBaseline;
}

/** Input of the cluster activity `measurePrometheusGate`. */
export interface MeasurePrometheusGateInput {
  name: string;
  spec: PrometheusGateSpec;
}

/** Pollers of one task queue (workflow and activity pollers together). */
export interface TaskQueuePollers {
  pollers: number;
  /** Worker identities, sorted, deduplicated. */
  identities: string[];
}

/**
 * Gate activities on the NODE task queue (`nodeTaskQueue(node)`): measured inside the node's
 * namespace. `measureGate` with a Prometheus spec answers inconclusive (it belongs to the
 * cluster queue: see {@link gateQueue}).
 */
export interface NodeGateActivities {
  measureGate(input: MeasureGateInput): Promise<Measurement>;
  /** Samples the drop counters over `sampleSeconds` (default 1; use the datapath gate's). */
  datapathBaseline(input?: { sampleSeconds?: number }): Promise<DatapathBaseline>;
}

/** Gate activities on the CLUSTER task queue. */
export interface ClusterGateActivities {
  measurePrometheusGate(input: MeasurePrometheusGateInput): Promise<Measurement>;
  /** Pollers per task queue (Temporal's DescribeTaskQueue, workflow and activity types): 0 means no live worker. */
  describePollers(input: { taskQueues: string[] }): Promise<Record<string, TaskQueuePollers>>;
}
