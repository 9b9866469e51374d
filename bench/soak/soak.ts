/**
 * Soak (issue 16, item 7): a bounded run of mixed changes, IDS blocks and their expiries on a
 * small sandbox fleet, with faults injected at random; not in CI.
 *
 *   npx tsx bench/soak/soak.ts [--minutes 20] [--nodes 3] [--concurrency 3] [--fault-every 60]
 *                              [--alert-every 30] [--seed N] [--json bench/soak/results/soak.json]
 *   (root, netns, bpffs and the Temporal CLI from scripts/bootstrap.sh)
 *
 * The parts are the chaos harness's (test/chaos/harness.ts): the Temporal dev server with its
 * history in a SQLite file, a network namespace and pinned maps per node, each node's worker and
 * the cluster worker as child processes. This process runs the ingest (an EVE file tailed, a rule
 * that blocks every severity-1 source for 60 s) on its own Temporal connection, which outlives
 * server restarts.
 *
 * Workload: `--concurrency` changes in flight at all times, each a random kind (network: a route
 * and a policy rule; blocklist patch; rate limit) on a random node, every one with keys of its
 * own; an alert from a new source every `--alert-every` seconds (blocked on every node, expiring
 * after 60 s). Faults, every `--fault-every` seconds, one at random: a node worker SIGKILLed and
 * restarted, the cluster worker SIGKILLed and restarted, the Temporal server restarted.
 * (A blocklist by reference is left out: it replaces the whole list, IDS blocks included, by design.)
 *
 * At the end: every change must have ended `applied` or `rolled-back`; every node's routes, rules,
 * rate limits and operator blocks, read back, must equal the model built from the applied changes;
 * every IDS block must have expired (none left in any map). Prints changes per second, p50/p99
 * latency, faults, and the resident memory of each process over time.
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import pino from 'pino';
import { INGEST_CHANNEL_ARGS } from '../../ingest/config';
import { startIngest, type RunningIngest } from '../../ingest/ingest-worker';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { ChaosHarness, type ChangeKind } from '../../test/chaos/harness';

const args = process.argv.slice(2);
const opt = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
};
const minutes = opt('minutes', 20);
const nodeCount = opt('nodes', 3);
const concurrency = opt('concurrency', 3);
const faultEverySec = opt('fault-every', 60);
const alertEverySec = opt('alert-every', 30);
const initialSeed = opt('seed', Date.now() % 100_000);
let seed = initialSeed;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;

/** A small deterministic generator, so a seed repeats a run's choices. */
function random(): number {
  seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
  return seed / 2_147_483_648;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;

const KINDS: readonly ChangeKind[] = ['network', 'blocklist-patch', 'ratelimits'];
const IDS_PREFIX = '198.18.';
const BLOCK_SECONDS = 60;

const RULES = {
  name: 'soak',
  rules: [
    {
      name: 'block-severity-1',
      description: 'severity-1 alerts block the source for a minute',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      decision: { action: 'block', target: 'src_ip', duration: `${BLOCK_SECONDS}s` },
    },
  ],
};

function alertLine(src: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 1,
    event_type: 'alert',
    src_ip: src,
    src_port: 40000,
    dest_ip: '192.0.2.70',
    dest_port: 443,
    proto: 'TCP',
    alert: { action: 'allowed', signature_id: 2024833, signature: 'soak', category: 'soak', severity: 1 },
  });
}

function rssMiB(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Math.round(Number(kb) / 1024) : null;
  } catch {
    return null;
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ChangeRecord {
  node: string;
  kind: ChangeKind;
  startedAt: number;
  endedAt?: number;
  phase?: string;
}

async function main(): Promise<void> {
  const h = new ChaosHarness();
  const nodes = Array.from({ length: nodeCount }, (_, i) => `soak-${i + 1}`);
  let ingest: RunningIngest | undefined;
  let connection: Connection | undefined;
  const changes: ChangeRecord[] = [];
  const faults: { atSec: number; fault: string; backAfterMs: number }[] = [];
  const memory: Record<string, number | null | string>[] = [];
  /** Per node and kind, the state the applied changes add up to (read at the start, then changed by each applied change). */
  const model = new Map<string, string[]>();
  const idsSeen = new Set<string>();
  let alerts = 0;
  let salt = 0;
  // The clock starts once the fleet, the workers and the ingest run (setup is reported apart).
  const setupStart = Date.now();
  let t0 = Date.now();
  let setupMs = 0;
  const elapsed = () => Math.round((Date.now() - t0) / 1000);
  // Once, from the end of the run or from a signal: an interrupted soak leaves no namespaces,
  // pinned maps, workers or server behind (a signal skips `finally`).
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await ingest?.stop().catch(() => undefined);
      await connection?.close().catch(() => undefined);
      await h.destroy();
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`${signal}: stopping the soak and removing its fleet`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    await h.start();
    for (const n of nodes) h.addNode(n, `node-${n}`);
    await h.startRound(new Map(), { clusterGroup: 'cluster' });
    for (const n of nodes) for (const k of KINDS) model.set(`${n}/${k}`, await h.readState(k, n));

    const dir = h.dir;
    writeFileSync(join(dir, 'rules.json'), JSON.stringify(RULES));
    const eveFile = join(dir, 'eve.json');
    writeFileSync(eveFile, '');
    connection = await Connection.connect({ address: `127.0.0.1:${h.temporalPort}`, channelArgs: { ...INGEST_CHANNEL_ARGS }, interceptors: [] });
    const client = new Client({ connection, namespace: h.env.namespace ?? 'default' });
    ingest = await startIngest(
      { rulesFile: join(dir, 'rules.json'), guard: guardConfigSchema.parse({}), nodes, eveFile, eveFrom: 'end', coalesceMs: 1000, stateDir: join(dir, 'ingest-state') },
      { workflows: client.workflow, logger: pino({ level: 'silent' }) },
    );

    t0 = Date.now();
    setupMs = t0 - setupStart;
    const deadline = t0 + minutes * 60_000;
    const inflight = new Set<Promise<void>>();
    const launch = () => {
      const node = pick(nodes);
      const kind = pick(KINDS);
      const { request, added } = h.request(kind, node, ++salt);
      const record: ChangeRecord = { node, kind, startedAt: Date.now() };
      changes.push(record);
      const p = (async () => {
        try {
          const workflowId = await h.startChange(request);
          record.phase = (await h.result(workflowId, 15 * 60_000)).phase;
        } catch (err) {
          record.phase = `error: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
        }
        record.endedAt = Date.now();
        // Every change has keys of its own, so the order the results are seen in does not matter.
        const key = `${node}/${kind}`;
        if (record.phase === 'applied') model.set(key, h.planned(kind, model.get(key) ?? [], added));
      })();
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    };

    let nextAlert = Date.now();
    let nextFault = Date.now() + faultEverySec * 1000;
    let nextSample = Date.now();
    while (Date.now() < deadline) {
      while (inflight.size < concurrency) launch();
      if (Date.now() >= nextAlert) {
        appendFileSync(eveFile, `${alertLine(`${IDS_PREFIX}${(alerts >> 8) & 255}.${alerts & 255}`)}\n`);
        alerts++;
        nextAlert += alertEverySec * 1000;
      }
      if (Date.now() >= nextSample) {
        const row: Record<string, number | null | string> = { t: elapsed(), soak: rssMiB(process.pid), temporal: rssMiB(h.temporalPid()) };
        for (const g of h.groupNames()) row[g] = rssMiB(h.pidOf(g));
        row.changesDone = changes.filter((c) => c.endedAt).length;
        memory.push(row);
        if (memory.length % 6 === 1) console.log(`[${elapsed()}s] ${row.changesDone} changes done, ${inflight.size} in flight, ${alerts} alerts; RSS MiB ${JSON.stringify(row)}`);
        for (const n of nodes) for (const b of await h.readState('blocklist-patch', n)) if (b.startsWith(`block ${IDS_PREFIX}`)) idsSeen.add(b);
        nextSample += 10_000;
      }
      if (Date.now() >= nextFault) {
        const fault = pick(['node worker SIGKILL', 'cluster worker SIGKILL', 'Temporal restart'] as const);
        const node = pick(nodes);
        const label = fault === 'node worker SIGKILL' ? `${fault} (${node})` : fault;
        const { faultAt, backAt } = fault === 'node worker SIGKILL' ? await h.killAndRestart(`node-${node}`) : fault === 'cluster worker SIGKILL' ? await h.killAndRestart('cluster') : await h.restartTemporal();
        faults.push({ atSec: Math.round((faultAt - t0) / 1000), fault: label, backAfterMs: backAt - faultAt });
        console.log(`[${elapsed()}s] ${label}, back after ${backAt - faultAt} ms; ${changes.filter((c) => c.endedAt).length} changes done`);
        nextFault = Date.now() + faultEverySec * 1000;
      }
      await sleep(100);
    }
    const issuedFor = elapsed();
    console.log(`[${issuedFor}s] stopped issuing; waiting for ${inflight.size} changes in flight`);
    await Promise.all([...inflight]);

    // Every IDS block expires BLOCK_SECONDS after it was applied (and its change may still be
    // queued behind the node's lock): wait, bounded, for the maps to be clear of them.
    const expiryDeadline = Date.now() + (BLOCK_SECONDS + 600) * 1000;
    let idsLeft: string[] = [];
    for (;;) {
      idsLeft = [];
      for (const n of nodes) for (const b of await h.readState('blocklist-patch', n)) if (b.startsWith(`block ${IDS_PREFIX}`)) idsLeft.push(`${n}: ${b}`);
      if (idsLeft.length === 0 || Date.now() > expiryDeadline) break;
      await sleep(2000);
    }

    // Final state, read back, against the model of the applied changes.
    const mismatches: string[] = [];
    for (const n of nodes) {
      for (const k of KINDS) {
        const actual = (await h.readState(k, n)).filter((s) => !s.startsWith(`block ${IDS_PREFIX}`));
        const expected = model.get(`${n}/${k}`) ?? [];
        const extra = actual.filter((a) => !expected.includes(a));
        const missing = expected.filter((e) => !actual.includes(e));
        if (extra.length + missing.length > 0) mismatches.push(`${n} ${k}: extra ${extra.slice(0, 3).join('; ') || '–'}, missing ${missing.slice(0, 3).join('; ') || '–'}`);
      }
    }

    const done = changes.filter((c) => c.endedAt !== undefined);
    const byPhase: Record<string, number> = {};
    for (const c of done) byPhase[c.phase ?? '?'] = (byPhase[c.phase ?? '?'] ?? 0) + 1;
    const latencies = done.map((c) => (c.endedAt as number) - c.startedAt).sort((a, b) => a - b);
    const summary = {
      command: `npx tsx bench/soak/soak.ts ${args.join(' ')}`.trim(),
      minutes,
      nodes: nodeCount,
      concurrency,
      faultEverySec,
      alertEverySec,
      seed: initialSeed,
      at: new Date().toISOString(),
      setupMs,
      loadavg: loadavg().map((l) => Number(l.toFixed(2))),
      changes: done.length,
      changesPerSecond: Number((done.length / issuedFor).toFixed(3)),
      latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? 0 },
      outcomes: byPhase,
      converged: done.every((c) => c.phase === 'applied' || c.phase === 'rolled-back'),
      alerts,
      idsBlocksSeen: idsSeen.size,
      idsBlocksLeftAfterExpiry: idsLeft.length,
      finalStateMismatches: mismatches,
      faults,
      memoryMiB: memory,
    };
    console.log(`\nSoak: ${minutes} min, ${nodeCount} nodes, load average ${summary.loadavg.join(' ')} (setup ${Math.round(setupMs / 1000)} s before the clock started)`);
    console.log(`changes: ${done.length} (${summary.changesPerSecond}/s), p50 ${summary.latencyMs.p50} ms, p99 ${summary.latencyMs.p99} ms, outcomes ${JSON.stringify(byPhase)}`);
    console.log(`IDS: ${alerts} alerts, ${idsSeen.size} distinct blocks seen in the maps, ${idsLeft.length} left after expiry`);
    console.log(`faults: ${faults.map((f) => `${f.atSec}s ${f.fault}`).join(', ') || 'none'}`);
    console.log(`final state: ${mismatches.length === 0 ? 'every node equals the model of its applied changes' : mismatches.join('\n  ')}`);
    const columns = Object.keys(memory[0] ?? {});
    console.log(`\nresident memory (MiB) over time:\n| ${columns.join(' | ')} |\n|${columns.map(() => '---:').join('|')}|`);
    for (const row of memory.filter((_, i) => i % 6 === 0 || i === memory.length - 1)) console.log(`| ${columns.map((c) => row[c] ?? '–').join(' | ')} |`);
    if (jsonOut) {
      mkdirSync(dirname(jsonOut), { recursive: true });
      writeFileSync(jsonOut, `${JSON.stringify(summary, null, 2)}\n`);
    }
    if (!summary.converged || mismatches.length > 0 || idsLeft.length > 0) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
