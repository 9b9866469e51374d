/**
 * Health-gate activities of staged rollouts (model/gates.ts describes the kinds).
 *
 * Node task queue: reachability probes, datapath drop counters, and routes/neighbours,
 * all inside the node's network namespace. Cluster task queue: Prometheus instant queries
 * and the pollers of task queues (is every target's node worker alive?).
 *
 * A measurement never throws for what it measures: a probe that got no answer is a
 * `failure`; a probe that could not be run at all (no such namespace, no tool, Prometheus
 * down, an empty vector) is `inconclusive`. Only bad input to `describePollers` or Temporal
 * being unreachable raises.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { canonicalCidr, canonicalIp } from '../model/ip';
import { failure, FailureType } from '../model/failures';
import {
  compare,
  DROP_REASONS,
  judgeDatapath,
  type ClusterGateActivities,
  type DatapathBaseline,
  type DatapathGateSpec,
  type DropReasonName,
  type Measurement,
  type MeasurementResult,
  type NodeGateActivities,
  type PrometheusGateSpec,
  type ReachabilityGateSpec,
  type ReachabilityTarget,
  type RoutesGateSpec,
  type TaskQueuePollers,
} from '../model/gates';
import { openDropStats, readDropCounts } from '../bpf/drop-stats';
import { BpfNotFoundError } from '../bpf/libbpf';
import { createIpRunner, IpCommandError } from './system/ip-runner';

/** What the node gate activities act on. */
export interface NodeGateDeps {
  /** The node's network namespace; undefined for the worker's own (the host). */
  netns: string | undefined;
  /** bpffs folder of the node's pinned maps (`drop_stats` among them once the datapath is loaded). */
  bpfPinDir: string;
  /** Where `ip netns add` keeps namespaces (default /run/netns). */
  netnsDir?: string;
  ipBinary?: string;
  pingBinary?: string;
  /** Clock, for tests. */
  now?: () => Date;
}

type Verdict = Omit<Measurement, 'at'>;

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Outcome of one spawned probe. */
interface ProcessResult {
  /** The process could not be started (ENOENT...): the message. */
  spawnError?: string;
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<ProcessResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string' && (err as NodeJS.ErrnoException).code !== 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') {
        resolve({ spawnError: `${file}: ${(err as NodeJS.ErrnoException).code}`, exitCode: null, stdout: '', stderr: '' });
        return;
      }
      const exitCode = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ exitCode, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The first line of a tool's message, bounded (details must stay small). */
function firstLine(text: string): string {
  return (text.trim().split('\n')[0] ?? '').slice(0, 200);
}

/**
 * The TCP connect probe, run by `node -e` inside the namespace (`ip netns exec`): the
 * connect uses the namespace's routes, addresses and firewall, as the node's own traffic
 * would. Arguments: address, port, time-out in ms. Prints one JSON line.
 */
const TCP_PROBE_SOURCE = `
const net = require('node:net');
const [host, port, timeout] = process.argv.slice(1);
const started = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
const socket = net.connect({ host, port: Number(port) });
const done = (out) => { process.stdout.write(JSON.stringify(out) + '\\n'); socket.destroy(); process.exit(0); };
socket.setTimeout(Number(timeout), () => done({ ok: false, code: 'ETIMEDOUT', ms: ms() }));
socket.once('connect', () => done({ ok: true, ms: ms() }));
socket.once('error', (e) => done({ ok: false, code: e.code || 'ERROR', ms: ms() }));
`;

/** Builds the node gate activities. */
export function createNodeGateActivities(deps: NodeGateDeps): NodeGateActivities {
  const now = deps.now ?? (() => new Date());
  const netnsDir = deps.netnsDir ?? '/run/netns';
  if (deps.netns !== undefined && !NETNS_NAME.test(deps.netns)) throw new Error(`network namespace name "${deps.netns}" is not valid (letters, digits, "_", "-", ".")`);
  const ipBinary = deps.ipBinary ?? 'ip';
  const where = deps.netns ? `namespace ${deps.netns}` : 'the host namespace';

  /** Why the namespace cannot be measured, or undefined when it can. */
  const namespaceMissing = (): string | undefined =>
    deps.netns !== undefined && !existsSync(`${netnsDir}/${deps.netns}`) ? `network namespace ${deps.netns} does not exist` : undefined;

  /** argv that runs `file args` inside the node's namespace. */
  const inNamespace = (file: string, args: string[]): [string, string[]] => (deps.netns ? [ipBinary, ['netns', 'exec', deps.netns, file, ...args]] : [file, args]);

  async function probe(target: ReachabilityTarget): Promise<{ result: MeasurementResult; ms?: number; detail: string }> {
    const label = target.protocol === 'tcp' ? `tcp ${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port}` : `icmp ${target.address}`;
    const hardTimeout = target.timeoutMs + 5000;
    if (target.protocol === 'icmp') {
      const family = target.address.includes(':') ? '-6' : '-4';
      const [file, args] = inNamespace(deps.pingBinary ?? 'ping', [family, '-n', '-q', '-c', '1', '-W', String(target.timeoutMs / 1000), target.address]);
      const started = performance.now();
      const r = await run(file, args, hardTimeout);
      const ms = Math.round((performance.now() - started) * 10) / 10;
      if (r.spawnError) return { result: 'inconclusive', detail: `${label}: the probe could not run (${r.spawnError})` };
      if (r.exitCode === 0) return { result: 'success', ms, detail: `${label}: reply` };
      // ping exits 1 for no reply and 2 when the kernel refused to send (unreachable, a
      // blackhole or prohibit route): both are the network failing the probe.
      if (r.exitCode === 1) return { result: 'failure', detail: `${label}: no reply within ${target.timeoutMs} ms` };
      if (r.exitCode === 2) return { result: 'failure', detail: `${label}: ${firstLine(r.stderr) || 'not sent'}` };
      return { result: 'inconclusive', detail: `${label}: the probe ended abnormally (exit ${r.exitCode}): ${firstLine(r.stderr)}` };
    }
    const [file, args] = inNamespace(process.execPath, ['-e', TCP_PROBE_SOURCE, target.address, String(target.port), String(target.timeoutMs)]);
    const r = await run(file, args, hardTimeout);
    if (r.spawnError) return { result: 'inconclusive', detail: `${label}: the probe could not run (${r.spawnError})` };
    let out: { ok?: boolean; code?: string; ms?: number } | undefined;
    try {
      out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as typeof out;
    } catch {
      out = undefined;
    }
    if (!out || typeof out.ok !== 'boolean') return { result: 'inconclusive', detail: `${label}: the probe ended without an answer (exit ${r.exitCode}): ${firstLine(r.stderr)}` };
    const ms = typeof out.ms === 'number' ? Math.round(out.ms * 10) / 10 : undefined;
    if (out.ok) return { result: 'success', ...(ms !== undefined ? { ms } : {}), detail: `${label}: connected` };
    return { result: 'failure', detail: `${label}: ${out.code === 'ETIMEDOUT' ? `no answer within ${target.timeoutMs} ms` : String(out.code)}` };
  }

  async function reachability(spec: ReachabilityGateSpec): Promise<Verdict> {
    const missing = namespaceMissing();
    if (missing) return { result: 'inconclusive', detail: missing };
    const results = await Promise.all(spec.targets.map(probe));
    const failures = results.filter((r) => r.result === 'failure');
    const inconclusive = results.filter((r) => r.result === 'inconclusive');
    // One target failing is a failure even when another could not be measured: the
    // network is known to be broken. All must answer for a success.
    const result: MeasurementResult = failures.length > 0 ? 'failure' : inconclusive.length > 0 ? 'inconclusive' : 'success';
    const slowest = Math.max(...results.map((r) => r.ms ?? 0));
    const shown = result === 'success' ? results : [...failures, ...inconclusive];
    return {
      result,
      ...(result === 'success' ? { value: slowest } : {}),
      detail: `${results.length - failures.length - inconclusive.length}/${results.length} reachable: ${shown.map((r) => r.detail).join('; ')}`.slice(0, 1000),
    };
  }

  /** Samples the drop counters over `seconds`: rates per reason. */
  async function sampleDrops(seconds: number): Promise<DatapathBaseline> {
    const zero = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReasonName, number>;
    let map;
    try {
      map = openDropStats(deps.bpfPinDir);
    } catch (err) {
      const detail = err instanceof BpfNotFoundError ? `no datapath counters pinned in ${deps.bpfPinDir} (the datapath programs are not loaded on this node)` : `datapath counters unreadable: ${err instanceof Error ? err.message : String(err)}`;
      return { at: now().toISOString(), windowSeconds: seconds, ratePerSecond: zero, available: false, detail };
    }
    try {
      const first = readDropCounts(map);
      const started = performance.now();
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      const second = readDropCounts(map);
      const elapsed = (performance.now() - started) / 1000;
      const ratePerSecond = Object.fromEntries(DROP_REASONS.map((r) => [r, Math.round((Number(second[r] - first[r]) / elapsed) * 100) / 100])) as Record<DropReasonName, number>;
      return { at: now().toISOString(), windowSeconds: Math.round(elapsed * 1000) / 1000, ratePerSecond, available: true };
    } finally {
      map.close();
    }
  }

  async function datapath(spec: DatapathGateSpec, baseline: DatapathBaseline | undefined): Promise<Verdict> {
    if (!baseline) return judgeDatapath(spec, undefined, { at: '', windowSeconds: 0, ratePerSecond: {} as Record<DropReasonName, number>, available: false });
    return judgeDatapath(spec, baseline, await sampleDrops(spec.sampleSeconds));
  }

  async function routes(spec: RoutesGateSpec): Promise<Verdict> {
    const missing = namespaceMissing();
    if (missing) return { result: 'inconclusive', detail: missing };
    const ip = createIpRunner({ netns: deps.netns, ipBinary });
    const problems: string[] = [];
    try {
      const tables = new Map<string, IpRoute[]>();
      for (const want of spec.routes) {
        const family = want.destination.includes(':') ? '-6' : '-4';
        const key = `${family} ${want.table}`;
        let table = tables.get(key);
        if (!table) {
          table = await showRoutes(ip, family, want.table);
          tables.set(key, table);
        }
        const found = table.filter((r) => routeDestination(r, family) === want.destination);
        // A blackhole, unreachable or prohibit route to the destination is there but carries nothing.
        const matching = found.filter(
          (r) =>
            (r.type ?? 'unicast') === 'unicast' &&
            (!want.gateway || routeGateways(r).includes(want.gateway)) && (!want.device || routeDevices(r).includes(want.device)),
        );
        const label = `route ${want.destination}${want.table !== 254 ? ` table ${want.table}` : ''}${want.gateway ? ` via ${want.gateway}` : ''}${want.device ? ` dev ${want.device}` : ''}`;
        if (matching.length === 0) problems.push(found.length === 0 ? `${label} missing` : `${label} differs (${found.map(describeRoute).join(', ')})`);
      }
      if (spec.neighbours.length > 0) {
        const entries = JSON.parse((await ip.run(['-json', 'neigh', 'show'])) || '[]') as IpNeighbour[];
        for (const address of spec.neighbours) {
          const mine = entries.filter((n) => sameIp(n.dst, address));
          const usable = mine.filter((n) => !(n.state ?? []).some((s) => s === 'FAILED' || s === 'INCOMPLETE'));
          if (usable.length === 0) problems.push(mine.length === 0 ? `neighbour ${address} missing` : `neighbour ${address} ${(mine[0]?.state ?? []).join(',')}`);
        }
      }
    } catch (err) {
      return { result: 'inconclusive', detail: `cannot read routes or neighbours in ${where}: ${err instanceof IpCommandError ? firstLine(err.stderr) || err.message : err instanceof Error ? err.message : String(err)}` };
    }
    const total = spec.routes.length + spec.neighbours.length;
    if (problems.length > 0) return { result: 'failure', value: problems.length, detail: `${problems.length}/${total} missing: ${problems.join('; ')}`.slice(0, 1000) };
    return { result: 'success', value: 0, detail: `all ${spec.routes.length} routes and ${spec.neighbours.length} neighbours present` };
  }

  return {
    async measureGate({ name, spec, baseline }) {
      let verdict: Verdict;
      switch (spec.kind) {
        case 'reachability':
          verdict = await reachability(spec);
          break;
        case 'datapath':
          verdict = await datapath(spec, baseline);
          break;
        case 'routes':
          verdict = await routes(spec);
          break;
        case 'prometheus':
          verdict = { result: 'inconclusive', detail: `gate ${name} is a prometheus gate: it is measured on the cluster task queue (measurePrometheusGate), not on a node` };
          break;
      }
      return { at: now().toISOString(), ...verdict };
    },
    datapathBaseline(input?: { sampleSeconds?: number }) {
      const seconds = input?.sampleSeconds ?? 1;
      if (!(seconds > 0 && seconds <= 60)) throw failure(FailureType.InvalidGateInput, `datapathBaseline: sampleSeconds must be more than 0 and at most 60, got ${seconds}`);
      return sampleDrops(seconds);
    },
  };
}

/** Gate activities of a node worker built without gate dependencies: every measurement is inconclusive, saying why. */
export function unavailableNodeGateActivities(reason: string, now: () => Date = () => new Date()): NodeGateActivities {
  const zero = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReasonName, number>;
  return {
    measureGate: () => Promise.resolve({ at: now().toISOString(), result: 'inconclusive', detail: reason }),
    datapathBaseline: () => Promise.resolve({ at: now().toISOString(), windowSeconds: 0, ratePerSecond: zero, available: false, detail: reason }),
  };
}

interface IpNextHop {
  gateway?: string;
  dev?: string;
}
interface IpRoute extends IpNextHop {
  dst: string;
  type?: string;
  nexthops?: IpNextHop[];
}
interface IpNeighbour {
  dst: string;
  dev?: string;
  state?: string[];
}

async function showRoutes(ip: ReturnType<typeof createIpRunner>, family: '-4' | '-6', table: number): Promise<IpRoute[]> {
  try {
    return JSON.parse((await ip.run([family, '-json', 'route', 'show', 'table', String(table)])) || '[]') as IpRoute[];
  } catch (err) {
    // A table nobody wrote to does not exist yet: every route in it is missing.
    if (err instanceof IpCommandError && /table does not exist/i.test(err.stderr)) return [];
    throw err;
  }
}

function routeDestination(route: IpRoute, family: '-4' | '-6'): string | undefined {
  if (route.dst === 'default') return family === '-4' ? '0.0.0.0/0' : '::/0';
  try {
    return canonicalCidr(route.dst.includes('/') ? route.dst : `${route.dst}/${family === '-4' ? 32 : 128}`);
  } catch {
    return undefined;
  }
}

function sameIp(a: string, b: string): boolean {
  try {
    return canonicalIp(a) === canonicalIp(b);
  } catch {
    return false;
  }
}

function routeGateways(route: IpRoute): string[] {
  return [route.gateway, ...(route.nexthops ?? []).map((h) => h.gateway)].filter((g): g is string => !!g).map((g) => {
    try {
      return canonicalIp(g);
    } catch {
      return g;
    }
  });
}

function routeDevices(route: IpRoute): string[] {
  return [route.dev, ...(route.nexthops ?? []).map((h) => h.dev)].filter((d): d is string => !!d);
}

function describeRoute(route: IpRoute): string {
  return [route.type && route.type !== 'unicast' ? route.type : '', ...routeGateways(route).map((g) => `via ${g}`), ...routeDevices(route).map((d) => `dev ${d}`)].filter(Boolean).join(' ') || 'no next hop';
}

/** What the cluster gate activities need. */
export interface ClusterGateDeps {
  /** Temporal client for DescribeTaskQueue; the activity context's client when not given. */
  client?: Pick<Client, 'workflowService' | 'options'>;
  /**
   * Pollers seen longer ago than this do not count (default 90 s). Temporal lists a poller
   * for minutes after its last poll; an idle live worker re-polls at least once a minute.
   */
  maxPollerAgeSeconds?: number;
  /** `fetch`, for tests. */
  fetch?: typeof fetch;
  now?: () => Date;
}

const TASK_TYPES = [temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY] as const;
const TASK_QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$/;

/** Why a fetch failed, in a few words: a time-out, the socket error's code (ECONNREFUSED...), or undici's message. */
function fetchFailure(err: unknown, timeoutMs: number): string {
  // Errors may come from another realm (undici inside Node, jest's sandbox): read them by shape.
  const e = err as { name?: string; message?: string; cause?: unknown };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  for (let c: unknown = e.cause; c && typeof c === 'object'; c = (c as { cause?: unknown }).cause) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const message = (c as { message?: unknown }).message;
    if (typeof message === 'string' && message) return message.slice(0, 200);
  }
  return (e.message ?? String(err)).slice(0, 200);
}

/** Builds the cluster gate activities (Prometheus, pollers). */
export function createClusterGateActivities(deps: ClusterGateDeps = {}): ClusterGateActivities {
  const now = deps.now ?? (() => new Date());
  const doFetch = deps.fetch ?? fetch;
  const maxAgeMs = (deps.maxPollerAgeSeconds ?? 90) * 1000;

  async function queryPrometheus(spec: PrometheusGateSpec): Promise<Verdict> {
    const url = new URL(`${spec.address.replace(/\/+$/, '')}/api/v1/query`);
    url.searchParams.set('query', spec.query);
    const label = `prometheus ${url.host}`;
    let body: unknown;
    try {
      const response = await doFetch(url, { method: 'GET', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(spec.timeoutMs), redirect: 'error' });
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch {
        return { result: 'inconclusive', detail: `${label}: HTTP ${response.status}, not a JSON answer` };
      }
      if (!response.ok) {
        const err = body as { errorType?: unknown; error?: unknown };
        return { result: 'inconclusive', detail: `${label}: HTTP ${response.status} ${typeof err.errorType === 'string' ? err.errorType : ''}: ${typeof err.error === 'string' ? err.error.slice(0, 200) : ''}`.trim() };
      }
    } catch (err) {
      return { result: 'inconclusive', detail: `${label}: ${fetchFailure(err, spec.timeoutMs)}` };
    }
    const data = (body as { status?: string; data?: { resultType?: string; result?: unknown } }).data;
    let raw: unknown;
    if (data?.resultType === 'scalar') {
      raw = (data.result as unknown[] | undefined)?.[1];
    } else if (data?.resultType === 'vector') {
      const samples = (data.result as { value?: unknown[] }[] | undefined) ?? [];
      if (samples.length === 0) return { result: 'inconclusive', detail: `${label}: the query returned an empty vector` };
      if (samples.length > 1) return { result: 'inconclusive', detail: `${label}: the query returned ${samples.length} samples; aggregate it to one (sum, max...)` };
      raw = samples[0]?.value?.[1];
    } else {
      return { result: 'inconclusive', detail: `${label}: the query returned a ${data?.resultType ?? 'missing'} result; it must be a scalar or an instant vector of one sample` };
    }
    const value = typeof raw === 'string' ? Number(raw) : NaN;
    if (!Number.isFinite(value)) return { result: 'inconclusive', detail: `${label}: the value is ${String(raw)}, not a finite number` };
    const ok = compare(value, spec.successCondition.op, spec.successCondition.value);
    return { result: ok ? 'success' : 'failure', value, detail: `${label}: ${value} ${ok ? '' : 'not '}${spec.successCondition.op} ${spec.successCondition.value}`.replace(`${value} not `, `${value} is not `) };
  }

  return {
    async measurePrometheusGate({ name, spec }) {
      if (spec.kind !== 'prometheus') return { at: now().toISOString(), result: 'inconclusive', detail: `gate ${name} is a ${String(spec.kind)} gate: it is measured on its node (measureGate)` };
      return { at: now().toISOString(), ...(await queryPrometheus(spec)) };
    },
    async describePollers({ taskQueues }) {
      if (!Array.isArray(taskQueues) || taskQueues.length > 1000) throw failure(FailureType.InvalidGateInput, 'describePollers: taskQueues must be a list of at most 1000 names');
      for (const q of taskQueues) {
        if (typeof q !== 'string' || !TASK_QUEUE_NAME.test(q)) throw failure(FailureType.InvalidGateInput, `describePollers: task queue name ${JSON.stringify(String(q)).slice(0, 80)} is not valid`);
      }
      const client = deps.client ?? Context.current().client;
      const service = client.workflowService;
      const namespace = client.options.namespace;
      const cutoff = now().getTime() - maxAgeMs;
      const out: Record<string, TaskQueuePollers> = {};
      // A few at a time: a 200-node fleet must not open 400 calls at once.
      const queue = [...new Set(taskQueues)];
      const workers = Array.from({ length: Math.min(8, queue.length) }, async () => {
        for (let q = queue.shift(); q !== undefined; q = queue.shift()) {
          const identities = new Set<string>();
          for (const taskQueueType of TASK_TYPES) {
            let response;
            try {
              response = await service.describeTaskQueue({ namespace, taskQueue: { name: q, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL }, taskQueueType });
            } catch (err) {
              throw failure(FailureType.PollersUnavailable, `DescribeTaskQueue ${q} failed: ${err instanceof Error ? err.message : String(err)}`);
            }
            for (const p of response.pollers ?? []) {
              const seen = p.lastAccessTime?.seconds != null ? Number(p.lastAccessTime.seconds) * 1000 + Math.floor((p.lastAccessTime.nanos ?? 0) / 1e6) : undefined;
              if (seen !== undefined && seen < cutoff) continue;
              identities.add(p.identity ?? '(unnamed)');
            }
          }
          out[q] = { pollers: identities.size, identities: [...identities].sort() };
        }
      });
      await Promise.all(workers);
      return Object.fromEntries(taskQueues.map((q) => [q, out[q] ?? { pollers: 0, identities: [] }]));
    },
  };
}
