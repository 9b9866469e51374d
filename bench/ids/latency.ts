/**
 * Alert-to-drop latency on the dev stack: a Suricata alert line appended to a tailed
 * eve.json → the source's entry present in the node's pinned eBPF blocklist map (the map
 * the datapath drops on). Real Temporal dev server (the built CLI), a network namespace
 * node with its worker, the ingest worker tailing a file.
 *
 *   npx tsx bench/ids/latency.ts [--samples 40] [--json bench/ids/results/latency.json]
 *   (root, bpffs and the Temporal CLI from scripts/bootstrap.sh are needed)
 *
 * Contenders, side by side in one run, each on fresh source addresses (198.18.0.0/15,
 * the benchmarking range):
 *   fos1 path        — tail → rules → bridge (coordinator's admission, signalWithStart) →
 *                      enforcement workflow →
 *                      change workflow → node workflow → map (what operators get)
 *   change workflow  — a blocklist patch started directly as a change workflow (the change
 *                      path alone: no tail, rules, enforcement or coordinator)
 *   map write        — BlocklistMaps.upsert from this process (the floor: the syscall)
 * The map is polled every millisecond; samples run one after another.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Client } from '@temporalio/client';
import pino from 'pino';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { startIngest } from '../../ingest/ingest-worker';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { enforcementWorkflowId } from '../../model/enforcement-decision';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { TestNamespace } from '../../test/helpers/netns';
import { startTemporal, startWorkers } from '../../test/helpers/temporal';
import { changeWorkflow } from '../../workflows/change';

const args = process.argv.slice(2);
const samples = Number(args[args.indexOf('--samples') + 1] ?? 40) || 40;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const NODE = 'bench-node';

const RULES = {
  name: 'bench',
  rules: [
    {
      name: 'block-severity-1',
      description: 'severity-1 alerts block the source',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      decision: { action: 'block', target: 'src_ip', duration: '1h' },
    },
  ],
};

function alertLine(src: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 904992230150281,
    event_type: 'alert',
    src_ip: src,
    src_port: 55641,
    dest_ip: '192.0.2.70',
    dest_port: 443,
    proto: 'TCP',
    alert: { action: 'allowed', signature_id: 2024833, signature: 'bench', category: 'bench', severity: 1 },
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function waitForEntry(maps: BlocklistMaps, cidr: string, started: number, timeoutMs = 30_000): Promise<number> {
  for (;;) {
    // A point lookup (one syscall), not a dump: the poller shares the event loop with the
    // workers and the ingest pipeline it measures, so it must stay cheap.
    if (maps.getExact(cidr) !== null) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`${cidr} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function main(): Promise<void> {
  const env = await startTemporal();
  const ns = TestNamespace.create('fos1b');
  const pinDir = `/sys/fs/bpf/fos1-bench-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'fos1-bench-'));
  // The caps are the cluster worker's: high enough for the bench's burst of new blocks.
  const workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 4096, v6: 64 } }, { guard: guardConfigSchema.parse({ maxNewBlocksPerMinute: 10_000 }) });
  const maps = BlocklistMaps.open({ pinDir, maxEntriesV4: 4096, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 4096, maxEntriesV6: 64 } });
  writeFileSync(join(dir, 'rules.json'), JSON.stringify(RULES));
  const eveFile = join(dir, 'eve.json');
  writeFileSync(eveFile, '');
  const ingest = await startIngest(
    { rulesFile: join(dir, 'rules.json'), guard: guardConfigSchema.parse({ maxNewBlocksPerMinute: 10_000 }), nodes: [NODE], eveFile, eveFrom: 'end', coalesceMs: 1000 },
    { workflows: env.client.workflow, logger: pino({ level: 'silent' }) },
  );
  const results: Record<string, number[]> = { 'fos1 path': [], 'change workflow': [], 'map write': [] };
  let first: number | undefined;
  /** Where the change path spends its time: each audited step's duration, per sample. */
  const steps: Record<string, number[]> = {};
  /** Where the fos1 path spends its time, from the workflows' histories (server clock). */
  const hops: Record<string, number[]> = {};
  const traced: { src: string; wallStart: number; total: number }[] = [];
  try {
    for (let i = 0; i <= samples; i++) {
      // fos1 path (sample 0 also starts the coordinator: reported apart as the cold start)
      const src = `198.18.${i >> 8}.${i & 255}`;
      let t0 = performance.now();
      const wallStart = Date.now();
      appendFileSync(eveFile, `${alertLine(src)}\n`);
      const full = await waitForEntry(maps, `${src}/32`, t0);
      if (i === 0) first = full;
      else {
        results['fos1 path']!.push(full);
        traced.push({ src, wallStart, total: full });
      }
      await new Promise((r) => setTimeout(r, 100));

      // change workflow alone
      const src2 = `198.19.${i >> 8}.${i & 255}`;
      const id = `bench-${i}-${randomBytes(2).toString('hex')}`;
      t0 = performance.now();
      const handle = await env.client.workflow.start(changeWorkflow, {
        taskQueue: CLUSTER_TASK_QUEUE,
        workflowId: changeWorkflowId(id),
        args: [{ id, author: 'bench', reason: 'bench', targets: [NODE], patch: { blocklist: { upsert: [{ cidr: src2, reason: 'bench' }] } } }],
      });
      const direct = await waitForEntry(maps, `${src2}/32`, t0);
      if (i > 0) results['change workflow']!.push(direct);
      const status = await handle.result();
      if (i > 0) for (const r of status.audit) (steps[`${r.node ? 'node ' : ''}${r.step}`] ??= []).push(r.durationMs);

      // map write floor
      const src3 = `198.18.${128 + (i >> 8)}.${i & 255}`;
      t0 = performance.now();
      maps.upsert([{ cidr: `${src3}/32` }]);
      const floor = await waitForEntry(maps, `${src3}/32`, t0);
      if (i > 0) results['map write']!.push(floor);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const t of traced) await traceHops(env.client, t, hops);
  } finally {
    await ingest.stop();
    await workers.stop();
    maps.close();
    removePinnedBlocklist(pinDir);
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
    await env.teardown();
  }
  const rows = Object.entries(results).map(([contender, values]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return { contender, samples: sorted.length, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1]! };
  });
  const meta = { node: process.version, samples, coldStartMs: Number(first?.toFixed(1)), loadavg: loadavg().map((l) => Number(l.toFixed(2))), at: new Date().toISOString() };
  const fmt = (ms: number) => (ms >= 10 ? ms.toFixed(0) : ms.toFixed(2));
  console.log(`Alert-to-drop latency, ${samples} samples each (load average ${meta.loadavg.join(' ')}; cold start of the fos1 path, coordinator included: ${fmt(first ?? 0)} ms)`);
  console.log('| contender | p50 ms | p90 ms | p99 ms | max ms | p50 vs fos1 path |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const base = rows[0]!.p50;
  for (const r of rows) console.log(`| ${r.contender} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${(r.p50 / base).toFixed(3)} |`);
  const stepRows = Object.entries(steps).map(([step, values]) => ({ step, p50: percentile([...values].sort((a, b) => a - b), 50) }));
  console.log('\nChange workflow steps (audit durations, p50 ms): ' + stepRows.map((r) => `${r.step} ${r.p50}`).join(', '));
  const hopRows = Object.entries(hops).map(([hop, values]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return { hop, p50: Number(percentile(sorted, 50).toFixed(1)), p99: Number(percentile(sorted, 99).toFixed(1)) };
  });
  console.log('\nfos1 path hops (from workflow histories, ms; p50 / p99):');
  for (const h of hopRows) console.log(`  ${h.hop}: ${h.p50} / ${h.p99}`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ meta, rows, changeSteps: stepRows, fos1PathHops: hopRows }, null, 2)}\n`);
}

/**
 * Splits one fos1-path sample into hops using event times of the enforcement, change and
 * node workflows' histories: alert appended → enforcement workflow started (tail, rules,
 * signalWithStart) → change workflow started (enforcement decision, caps) → node workflow
 * started (validation, node lock) → entry in the map (node workflow's map steps).
 */
async function traceHops(client: Client, t: { src: string; wallStart: number; total: number }, hops: Record<string, number[]>): Promise<void> {
  const ms = (e: { eventTime?: { seconds?: unknown; nanos?: number | null } | null }) => Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
  const history = async (workflowId: string, runId?: string) => (await client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
  const enf = await history(enforcementWorkflowId(`${t.src}/32`));
  const enfStarted = ms(enf[0]!);
  const childStarted = enf.find((e) => e.childWorkflowExecutionStartedEventAttributes);
  const change = childStarted?.childWorkflowExecutionStartedEventAttributes?.workflowExecution;
  if (!change?.workflowId) return;
  const ch = await history(change.workflowId, change.runId ?? undefined);
  const changeStarted = ms(ch[0]!);
  const node = ch.find((e) => e.childWorkflowExecutionStartedEventAttributes)?.childWorkflowExecutionStartedEventAttributes?.workflowExecution;
  if (!node?.workflowId) return;
  const nd = await history(node.workflowId, node.runId ?? undefined);
  const nodeStarted = ms(nd[0]!);
  const add = (hop: string, v: number) => (hops[hop] ??= []).push(v);
  add('alert → enforcement started (tail, rules, signalWithStart)', enfStarted - t.wallStart);
  add('enforcement started → change started (decision, caps)', changeStarted - enfStarted);
  add('change started → node started (validate, node lock)', nodeStarted - changeStarted);
  add('node started → entry in map (map steps)', t.wallStart + t.total - nodeStarted);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
