/**
 * A staged rollout to N simulated router nodes on one machine, on real parts: the Temporal
 * dev server, one network namespace and one pinned blocklist map set per node, one node task
 * queue per node. The cluster worker (and the first node's worker) run in THIS process; the
 * other N − 1 node workers run in `--hosts` processes of their own (node-host.ts, default 4),
 * many node task queues to a process: N separate processes would need ~N × 150 MB.
 *
 *   run 1: canary + 3 waves (33 %, 50 %, rest), zero bake, no gates: total time, time per wave,
 *          fos1's overhead per node and per wave (wall time minus the node-side work the audit
 *          trail records), history size and event types of every workflow (fetchHistory,
 *          encoded bytes), CPU seconds of the dev server, this process and the node hosts;
 *          `--repeat R` times (default 3), the median run reported in full
 *   run 2: the same rollout with a gate that fails in the last wave: time from the failed gate
 *          to every node restored and verified (read-back), from the change's audit trail
 *
 * The change is a one-entry blocklist patch (the node's smallest real change: local
 * activities, pinned maps written and read back).
 *
 *   npx tsx bench/rollout/run.ts --nodes 100 --json bench/rollout/results/rollout-100.json   (as root)
 *   … --profile DIR   V8 CPU profiles of the node hosts' main threads, written when they exit
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { temporal } from '@temporalio/proto';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { AuditRecord } from '../../model/audit';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId, nodeLockWorkflowId, nodeTaskQueue } from '../../model/naming';
import { createSandboxNamespace } from '../../scripts/sandbox-netns';
import { eventually } from '../../test/helpers/eventually';
import { startTemporal, startWorkers, workflowBundle } from '../../test/helpers/temporal';
import type { NodeHostConfig } from './node-host';
import { changeWorkflow, type ChangeStatus } from '../../workflows/change';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : (process.argv[i + 1] ?? fallback);
}

const end = (r: AuditRecord) => Date.parse(r.startedAt) + r.durationMs;
/** Node-side work of one node: its snapshot, apply and verify steps (or restore and read-back). */
const nodeWork = (audit: AuditRecord[], node: string, steps: (s: string) => boolean) => audit.filter((r) => r.node === node && steps(r.step)).reduce((ms, r) => ms + r.durationMs, 0);

async function main(): Promise<void> {
  const n = Number(arg('nodes', '100'));
  const jsonPath = arg('json', '');
  const hostCount = Math.max(1, Number(arg('hosts', '4')));
  const repeatCount = Math.max(1, Number(arg('repeat', '3')));
  // Node hosts run workflows on their main thread (debugMode) unless `--worker-threads` (one per node worker: ~60 MB more each, and a first run that compiles the bundle in every thread).
  const mainThreadWorkflows = !process.argv.includes('--worker-threads');
  const keepStackTraceHook = process.argv.includes('--keep-stack-trace-hook');
  const suffix = randomBytes(2).toString('hex');
  const names = Array.from({ length: n }, (_, i) => `sim${i + 1}`);
  const netns = (node: string) => `fos1b-${node}-${suffix}`;
  const pinDir = (node: string) => `/sys/fs/bpf/fos1-bench-${node}-${suffix}`;
  const env = await startTemporal();
  const serverPid = temporalServerPid();
  const started = performance.now();
  const hosts: NodeHost[] = [];
  let cluster: Awaited<ReturnType<typeof startWorkers>> | undefined;
  try {
    for (const node of names) createSandboxNamespace(netns(node), ['10.77.0.2/24']);
    // The cluster worker (and sim1's node worker) as the tests run them.
    const target = (node: string) => ({ netns: netns(node), routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir(node), blocklistMaxEntries: { v4: 64, v6: 64 }, blocklistStoreDir: join(tmpdir(), `fos1-bench-store-${node}-${suffix}`) });
    cluster = await startWorkers(env, names[0] as string, target(names[0] as string));
    // The other nodes' workers in `hosts` processes of their own (node-host.ts): apart from the
    // cluster worker, as on a real fleet, and packed many to a process to fit memory.
    const bundlePath = join(tmpdir(), `fos1-bench-bundle-${suffix}.js`);
    writeFileSync(bundlePath, (await workflowBundle()).code);
    const others = names.slice(1);
    const perHost = Math.ceil(others.length / hostCount);
    const batches = Array.from({ length: Math.ceil(others.length / perHost) }, (_, h) => others.slice(h * perHost, (h + 1) * perHost));
    hosts.push(...(await Promise.all(batches.map((batch) => startNodeHost({ address: env.address, namespace: env.namespace ?? 'default', workflowBundlePath: bundlePath, nodes: batch.map((name) => ({ name, target: target(name) })), mainThreadWorkflows, keepStackTraceHook })))));
    await waitForPollers(env, others.map(nodeTaskQueue));
    const setupMs = performance.now() - started;
    console.log(`${n} nodes up in ${(setupMs / 1000).toFixed(1)} s (${hosts.length} node host processes)`);

    const strategy = (failLast: boolean) => ({
      waves: [
        { name: 'canary', size: 1 },
        { name: 'w1', percent: 33 },
        { name: 'w2', percent: 50 },
        { name: 'w3', ...(failLast ? { gates: ['unreachable'] } : {}) },
      ],
      // Nobody answers 10.77.0.99 on the nodes' LAN: the probe fails on every node of the last wave.
      gates: failLast ? { unreachable: { kind: 'reachability' as const, intervalSeconds: 1, count: 1, targets: [{ protocol: 'icmp' as const, address: '10.77.0.99', timeoutMs: 200 }] } } : {},
    });
    const run = async (id: string, failLast: boolean, cidr: string) => {
      const request = { id, author: 'bench', reason: 'rollout benchmark', targets: names, patch: { blocklist: { upsert: [{ cidr, reason: 'bench' }] } }, strategy: strategy(failLast) } as ChangeRequestInput;
      const t0 = performance.now();
      const handle = await env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(id), args: [request] });
      const status = await handle.result().catch((err: unknown) => (err as { cause?: { details?: unknown[] } }).cause?.details?.[0] as ChangeStatus);
      return { status, totalMs: performance.now() - t0 };
    };
    const historyBytes = async (workflowId: string) => {
      const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
      // Which events a history is made of (each a write on the server): where a wave's time goes.
      const eventTypes: Record<string, number> = {};
      for (const e of history.events ?? []) {
        const type = temporal.api.enums.v1.EventType[e.eventType ?? 0]?.replace(/^EVENT_TYPE_/, '') ?? String(e.eventType);
        eventTypes[type] = (eventTypes[type] ?? 0) + 1;
      }
      return { events: history.events?.length ?? 0, bytes: temporal.api.history.v1.History.encode(history).finish().length, eventTypes };
    };

    // ── run 1: success, `--repeat` times (each upserts a different entry, so each changes every node) ──
    const measureRun1 = async (i: number) => {
      const id = `bench-ok-${suffix}-${i}`;
      const cpuBefore = cpuSeconds(serverPid, hosts);
      const stealBefore = stealSeconds();
      const ok = await run(id, false, `192.0.2.${10 + i}`);
      const cpuAfter = cpuSeconds(serverPid, hosts);
      // CPU time the hypervisor gave to others while this VM wanted it: the noise between sessions.
      cpuAfter.steal = stealSeconds() - stealBefore;
      // CPU each part used during the run (user + system): with 2 cores, where the wall time goes.
      const cpu = Object.fromEntries(Object.entries(cpuAfter).map(([k, v]) => [k, Number((v - (cpuBefore[k] ?? 0)).toFixed(2))]));
      if (ok.status.phase !== 'applied') throw new Error(`run 1 #${i + 1} ended ${ok.status.phase}: ${ok.status.message}`);
      const audit = ok.status.audit;
      const waveRecords = audit.filter((r) => r.node === undefined && r.step.startsWith('wave '));
      const isApply = (s: string) => !s.startsWith('restore') && !s.startsWith('verify rollback');
      const waves = (ok.status.waves ?? []).map((w) => {
        const rec = waveRecords.find((r) => r.step === `wave ${w.name}`);
        const wallMs = rec?.durationMs ?? 0;
        // The wave's critical path of node work: nodes run in parallel, the slowest one bounds it.
        const slowestNodeMs = Math.max(0, ...w.nodes.map((node) => nodeWork(audit, node, isApply)));
        return { name: w.name, nodes: w.nodes.length, wallMs, slowestNodeMs, overheadMs: wallMs - slowestNodeMs };
      });
      const auditedNodes = names.filter((node) => audit.some((r) => r.node === node));
      const nodeWorkTotal = auditedNodes.reduce((ms, node) => ms + nodeWork(audit, node, isApply), 0);
      const criticalPath = waves.reduce((ms, w) => ms + w.slowestNodeMs, 0);
      const histories: Record<string, { events: number; bytes: number }> = {};
      const wfId = changeWorkflowId(id);
      histories.change = await historyBytes(wfId);
      for (const w of ok.status.waves ?? []) histories[`wave ${w.name} (${w.nodes.length} nodes)`] = await historyBytes(`${wfId}/wave-${w.index + 1}-${w.name}`);
      // The nodes' lock workflow ids name the node: their latest run is this rollout's.
      const nodeSizes = await Promise.all(names.map((node) => historyBytes(nodeLockWorkflowId(node))));
      histories['node workflow (largest)'] = nodeSizes.reduce((a, b) => (b.bytes > a.bytes ? b : a));
      const result = {
        totalMs: Math.round(ok.totalMs),
        waves,
        nodeWorkTotalMs: nodeWorkTotal,
        nodesAudited: auditedNodes.length,
        overheadPerNodeMs: Number(((ok.totalMs - criticalPath) / n).toFixed(1)),
        overheadPerWaveMs: Math.round(waves.reduce((ms, w) => ms + w.overheadMs, 0) / waves.length),
        cpuSeconds: cpu,
        histories,
      };
      console.log(`run 1 #${i + 1}: ${result.totalMs} ms, overhead ${result.overheadPerNodeMs} ms/node; CPU seconds: ${Object.entries(cpu).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      return result;
    };
    const repeats: Awaited<ReturnType<typeof measureRun1>>[] = [];
    for (let i = 0; i < repeatCount; i++) repeats.push(await measureRun1(i));
    // The run with the median overhead is reported in full; every run's figures are kept.
    const run1 = [...repeats].sort((a, b) => a.overheadPerNodeMs - b.overheadPerNodeMs)[Math.floor((repeats.length - 1) / 2)] as (typeof repeats)[number];
    if (process.argv.includes('--sequence')) {
      const h = await env.client.workflow.getHandle(nodeLockWorkflowId(names[n - 1] as string)).fetchHistory();
      console.log(`node workflow ${names[n - 1]}:\n${(h.events ?? []).map((e) => `  ${e.eventId} ${temporal.api.enums.v1.EventType[e.eventType ?? 0]} ${e.eventTime?.seconds}.${String(e.eventTime?.nanos ?? 0).padStart(9, '0').slice(0, 3)}`).join('\n')}`);
    }

    // ── run 2: the last wave's gate fails ──
    const bad = await run(`bench-fail-${suffix}`, true, '192.0.2.2');
    const gateFailed = bad.status.audit.find((r) => r.step === 'wave w3 gates' && r.result === 'failed');
    const restored = bad.status.audit.find((r) => r.step === 'restore every touched node');
    const restoredNodes = Object.values(bad.status.nodes).filter((x) => x.outcome === 'restored').length;
    const rollback = {
      phase: bad.status.phase,
      message: bad.status.message,
      restoredNodes,
      restoreVerified: restored?.result === 'ok',
      failedGateToRestoredMs: gateFailed && restored ? end(restored) - end(gateFailed) : undefined,
      restoreMs: restored?.durationMs,
      totalMs: bad.totalMs,
    };
    const failHistories: Record<string, { events: number; bytes: number }> = {};
    const failId = changeWorkflowId(`bench-fail-${suffix}`);
    failHistories.change = await historyBytes(failId);
    for (const w of bad.status.waves ?? []) failHistories[`wave ${w.name} (${w.nodes.length} nodes)`] = await historyBytes(`${failId}/wave-${w.index + 1}-${w.name}`);

    const result = {
      takenAt: new Date().toISOString(),
      machine: { loadavg: loadavg().map((l) => Number(l.toFixed(2))), benchRssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) },
      nodes: n,
      workerLayout: `bench process: cluster worker + ${names[0]}'s node worker; ${hosts.length} node host processes (node-host.ts) with the other ${n - 1} node task queues (one Worker each, 2 workflow + 2 activity pollers, workflows on the host's main thread)`,
      run1,
      run1Repeats: repeats.map((r) => ({ totalMs: r.totalMs, overheadPerNodeMs: r.overheadPerNodeMs, cpuSeconds: r.cpuSeconds })),
      run2: { ...rollback, histories: failHistories },
    };
    console.log(JSON.stringify(result, null, 2));
    if (jsonPath) {
      mkdirSync(dirname(jsonPath), { recursive: true });
      writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
    }
  } finally {
    const hostsMiB = await Promise.all(hosts.map((h) => h.stop()));
    if (hostsMiB.length > 0) console.log(`node hosts' peak RSS: ${hostsMiB.map((m) => `${m} MiB`).join(', ')}`);
    await cluster?.stop().catch(() => undefined);
    for (const node of names) {
      removePinnedBlocklist(pinDir(node));
      try {
        execFileSync('ip', ['netns', 'del', netns(node)]);
      } catch {
        // not created
      }
    }
    rmSync(join(tmpdir(), `fos1-bench-bundle-${suffix}.js`), { force: true });
    await env.teardown();
  }
}

/** A running node-host.ts process; `stop()` ends it and returns its peak RSS (MiB). */
interface NodeHost {
  pid: number | undefined;
  stop(): Promise<number>;
}

/** The machine's CPU steal time so far (seconds, all cores; /proc/stat). */
function stealSeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/) ?? [];
  return Number(cpu[8] ?? 0) / 100;
}

/** The dev server's pid: this process's `temporal` child (found once, after it started). */
function temporalServerPid(): number | undefined {
  const pid = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).find((d) => {
    try {
      const status = readFileSync(`/proc/${d}/status`, 'utf8');
      return /^Name:\s+temporal$/m.test(status) && new RegExp(`^PPid:\\s+${process.pid}$`, 'm').test(status);
    } catch {
      return false;
    }
  });
  return pid === undefined ? undefined : Number(pid);
}

/** CPU time (user + system, seconds) so far of this process, the dev server and the node hosts. */
function cpuSeconds(serverPid: number | undefined, hosts: NodeHost[]): Record<string, number> {
  const ticks = 100; // USER_HZ on Linux
  const of = (pid: number | undefined) => {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
      return (Number(fields[11]) + Number(fields[12])) / ticks;
    } catch {
      return 0;
    }
  };
  return { server: of(serverPid), bench: of(process.pid), hosts: hosts.reduce((s, h) => s + of(h.pid), 0) };
}

async function startNodeHost(config: NodeHostConfig): Promise<NodeHost> {
  // `--profile DIR`: each host writes a V8 CPU profile of its main thread there when it exits.
  const profileDir = arg('profile', '');
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', join(__dirname, 'node-host.ts')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
  process.once('exit', () => child.kill('SIGKILL'));
  child.stdin.write(`${JSON.stringify(config)}\n`);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) resolve();
    });
    void exited.then((code) => reject(new Error(`node host for ${config.nodes[0]?.name}… exited with ${code} before it was ready`)));
  });
  return {
    pid: child.pid,
    async stop() {
      const peak = peakRssMiB(child.pid);
      child.kill('SIGTERM');
      await exited;
      return peak;
    },
  };
}

/** VmHWM of a process (its peak resident set), in MiB. */
function peakRssMiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
  } catch {
    return 0;
  }
}

/** Waits until every node task queue has a workflow poller (the change's own poller check would fail the rollout otherwise). */
async function waitForPollers(env: Awaited<ReturnType<typeof startTemporal>>, queues: string[]): Promise<void> {
  const polled = async (name: string) => {
    const r = await env.client.workflowService.describeTaskQueue({ namespace: env.namespace ?? 'default', taskQueue: { name, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL }, taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW });
    return (r.pollers?.length ?? 0) > 0;
  };
  await eventually(async () => (await Promise.all(queues.map(polled))).filter((p) => !p).length, (missing) => missing === 0, 'every node task queue to have a poller', 120_000, 500);
}

void main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
