/**
 * Every fault at every step of the node workflow, for each kind of change (issue 16, item 1),
 * and a staged rollout whose wave-2 node worker is SIGKILLed during its apply (issue 12).
 *
 * Real Temporal dev server (SQLite file, restarted in place), real namespaces and pinned maps,
 * node and cluster workers as child processes stopped at an exact step by a test-only
 * interceptor (test/chaos/chaos-worker.ts) and SIGKILLed there. Every change must end `applied`
 * with the node's state equal to the plan, or `rolled-back` with it equal to the snapshot, both
 * read back from the kernel; nothing else. Recovery (worker or server back → change ended) is
 * recorded; with FOS1_CHAOS_MAX_RECOVERY_MS set it is also asserted (issue 16's goal: 10 s).
 * FOS1_CHAOS_REPORT names a file the results table is written to (test/chaos/RESULTS.md).
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import type { ChangeRequestInput } from '../../model/change-request';
import type { ChaosBehaviour } from './chaos-worker';
import { CHANGE_KINDS, ChaosHarness, judge, resultsTable, stepsOf, type CellResult, type ChangeKind, type Fault } from './harness';
import { describePrivileged } from '../helpers/capabilities';

const SHORT: Record<ChangeKind, string> = { network: 'net', 'blocklist-patch': 'blp', 'blocklist-ref': 'blr', ratelimits: 'rl' };
/** How long a change may take under a fault: before heartbeats a killed activity waits out its 2-minute start-to-close. */
const CHANGE_DEADLINE_MS = 10 * 60_000;
const MAX_RECOVERY_MS = process.env.FOS1_CHAOS_MAX_RECOVERY_MS ? Number(process.env.FOS1_CHAOS_MAX_RECOVERY_MS) : undefined;
/** A folder for each cell's history timeline (harness.ts `timeline`): where its recovery seconds went. */
const TIMELINE_DIR = process.env.FOS1_CHAOS_TIMELINE;

type NodeBehaviour = Omit<ChaosBehaviour, 'controlDir'>;

/** One change under test: where it runs, what it expects, and when its fault ended. */
interface Cell {
  fault: Fault;
  kind: ChangeKind;
  step: string;
  /** The nodes the change targets (one, or a rollout's three) and their state before it. */
  nodes: string[];
  before: Map<string, string[]>;
  planned: Map<string, string[]>;
  workflowId: string;
  startedAt: number;
  /** When the fault struck, and when the killed worker (or the server) was back: the recovery clock starts there. */
  faultAt?: number;
  backAt?: number;
}

describePrivileged('chaos: every fault at every step of the node workflow (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  const h = new ChaosHarness();
  const results: CellResult[] = [];
  let salt = Number(process.pid % 1000) * 7;
  const nodesOf = (kind: ChangeKind) => [...h.nodes.values()].filter((n) => n.group === kind).map((n) => n.name);

  // A round that failed must not leave changes running into the next one.
  afterEach(async () => {
    const left = await h.terminateLeftovers();
    if (left.length > 0) console.warn(`terminated ${left.length} change(s) the test left running: ${left.join(', ')}`);
  }, 120_000);

  beforeAll(async () => {
    await h.start();
    for (const kind of CHANGE_KINDS) stepsOf(kind).forEach((_, i) => h.addNode(`${SHORT[kind]}-${i + 1}`, kind));
    // The rollout's nodes: the wave-2 node in a process of its own, so killing it kills nothing else.
    h.addNode('wave-1', 'rollout');
    h.addNode('wave-2', 'rollout-wave-2');
    h.addNode('wave-3', 'rollout');
  }, 180_000);

  afterAll(async () => {
    const table = `${resultsTable(results)}\n\nLoad average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')} (2 cores).`;
    console.log(`chaos results:\n${table}`);
    if (process.env.FOS1_CHAOS_REPORT) appendFileSync(process.env.FOS1_CHAOS_REPORT, `${table}\n`);
    await h.destroy();
  }, 120_000);

  /** Starts a change of `kind` on `nodes`, reading their state first. */
  async function startCell(fault: Fault, kind: ChangeKind, step: string, nodes: string[], extra: Partial<ChangeRequestInput> = {}): Promise<Cell> {
    const before = new Map<string, string[]>();
    const planned = new Map<string, string[]>();
    const { request, added } = h.request(kind, nodes[0] as string, ++salt, nodes);
    for (const n of nodes) {
      const state = await h.readState(kind, n);
      before.set(n, state);
      planned.set(n, h.planned(kind, state, added));
    }
    const startedAt = Date.now();
    const workflowId = await h.startChange({ ...request, ...extra } as ChangeRequestInput);
    return { fault, kind, step, nodes, before, planned, workflowId, startedAt };
  }

  /** Waits for a cell's change to end and judges it by read-back on every node it targets. */
  async function finish(cell: Cell): Promise<CellResult> {
    let phase: string;
    try {
      phase = (await h.result(cell.workflowId, CHANGE_DEADLINE_MS)).phase;
    } catch (err) {
      phase = `no result (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`;
    }
    const endedAt = Date.now();
    const verdicts = await Promise.all(cell.nodes.map(async (n) => judge(phase, await h.readState(cell.kind, n), cell.before.get(n) ?? [], cell.planned.get(n) ?? [])));
    const bad = verdicts.find((v) => !v.converged);
    const result: CellResult = {
      fault: cell.fault,
      kind: cell.kind,
      step: cell.step,
      node: cell.nodes.join(','),
      phase,
      converged: bad === undefined,
      detail: bad?.detail ?? (verdicts[0]?.detail as string),
      recoveryMs: cell.backAt === undefined ? undefined : endedAt - cell.backAt,
      faultToEndMs: cell.faultAt === undefined ? undefined : endedAt - cell.faultAt,
      totalMs: endedAt - cell.startedAt,
    };
    results.push(result);
    if (TIMELINE_DIR) await writeTimeline(cell, endedAt);
    return result;
  }

  /** Writes the cell's history timeline (0 = the worker or server back) to TIMELINE_DIR. */
  async function writeTimeline(cell: Cell, endedAt: number): Promise<void> {
    const zero = cell.backAt ?? cell.startedAt;
    const at = (ms: number | undefined, what: string) => (ms === undefined ? [] : [`${((ms - zero) / 1000).toFixed(2).padStart(8)} s  harness: ${what}`]);
    const lines = await h.timeline(cell.workflowId, zero).catch((err: unknown) => [`timeline unavailable: ${String(err)}`]);
    mkdirSync(TIMELINE_DIR as string, { recursive: true });
    const name = `${cell.fault}-${cell.kind}-${cell.step}`.replace(/[^a-z0-9]+/gi, '-');
    writeFileSync(join(TIMELINE_DIR as string, `${name}.txt`), [...at(cell.faultAt, 'fault'), ...at(cell.backAt, 'back'), ...at(endedAt, 'change ended'), ...lines].sort((a, b) => parseFloat(a) - parseFloat(b)).join('\n') + '\n');
  }

  /**
   * One fault at every step of every kind at once: each cell on its own node, stopped at its
   * step; then the fault; then every change must converge.
   */
  async function round(fault: Exclude<Fault, 'none (each activity twice)'>, withRollout = false): Promise<CellResult[]> {
    const plan = CHANGE_KINDS.flatMap((kind) => stepsOf(kind).map((s, i) => ({ kind, ...s, node: nodesOf(kind)[i] as string })));
    const specs = new Map<string, NodeBehaviour>(plan.map((c) => [c.node, { stop: c.stop, failVerify: c.failVerify }]));
    if (withRollout) {
      specs.set('wave-1', {});
      specs.set('wave-2', { stop: { step: 'apply routes', when: 'after' } });
      specs.set('wave-3', {});
    }
    await h.startRound(specs, { clusterGroup: 'cluster' });
    const cells = await Promise.all(plan.map((c) => startCell(fault, c.kind, `${c.stop.step} (${c.stop.when})`, [c.node])));
    const rollout = withRollout
      ? await startCell(fault, 'network', 'rollout: wave-2 node, apply routes (after)', ['wave-1', 'wave-2', 'wave-3'], { strategy: { waves: [{ nodes: ['wave-1'] }, { nodes: ['wave-2'] }, {}] } } as Partial<ChangeRequestInput>)
      : undefined;
    const stopped = plan.map((c) => c.node);
    if (fault === 'node-worker SIGKILL') {
      // Each process is killed once all of its nodes stand at their steps.
      await Promise.all([
        ...CHANGE_KINDS.map(async (kind) => {
          await h.waitStopped(nodesOf(kind));
          const times = await h.killAndRestart(kind);
          for (const c of cells) if (c.kind === kind) Object.assign(c, times);
        }),
        ...(rollout
          ? [
              (async () => {
                await h.waitStopped(['wave-2']);
                Object.assign(rollout, await h.killAndRestart('rollout-wave-2'));
              })(),
            ]
          : []),
      ]);
    } else {
      await h.waitStopped(stopped);
      const times = fault === 'cluster-worker SIGKILL' ? await h.killAndRestart('cluster') : await h.restartTemporal();
      for (const c of cells) Object.assign(c, times);
      for (const n of stopped) h.release(n);
    }
    return Promise.all([...cells, ...(rollout ? [rollout] : [])].map(finish));
  }

  const expectConverged = (cells: CellResult[]) => {
    expect(cells.filter((c) => !c.converged).map((c) => `${c.fault} at ${c.step} (${c.kind}): ${c.phase}: ${c.detail}`)).toEqual([]);
    if (MAX_RECOVERY_MS !== undefined) expect(cells.filter((c) => (c.recoveryMs ?? 0) > MAX_RECOVERY_MS).map((c) => `${c.step} (${c.kind}): ${c.recoveryMs} ms`)).toEqual([]);
  };

  test('node worker SIGKILLed at every step of every kind of change, and a wave-2 node worker SIGKILLed during its apply in a 3-wave rollout (issue 12): every change converges', async () => {
    const cells = await round('node-worker SIGKILL', true);
    expectConverged(cells);
    // The rollout's restores go newest first; if it rolled back, wave 3 was never touched.
    const rollout = cells.find((c) => c.step.startsWith('rollout')) as CellResult;
    expect(['applied', 'rolled-back']).toContain(rollout.phase);
  }, 15 * 60_000);

  test('cluster worker SIGKILLed while a node stands at every step of every kind: every change converges', async () => {
    expectConverged(await round('cluster-worker SIGKILL'));
  }, 15 * 60_000);

  test('Temporal server restarted (SQLite kept) while a node stands at every step of every kind: every change converges', async () => {
    expectConverged(await round('Temporal restart'));
  }, 15 * 60_000);

  test('every node activity run twice in a row (idempotency): the same end state, on the apply path and on the rollback path', async () => {
    const specs = new Map<string, NodeBehaviour>();
    const plan = CHANGE_KINDS.flatMap((kind) => [
      { kind, node: nodesOf(kind)[0] as string, failVerify: false },
      { kind, node: nodesOf(kind)[1] as string, failVerify: true },
    ]);
    for (const c of plan) specs.set(c.node, { twice: true, failVerify: c.failVerify });
    await h.startRound(specs, { clusterGroup: 'cluster' });
    const cells = await Promise.all(plan.map((c) => startCell('none (each activity twice)', c.kind, c.failVerify ? 'every step twice, rollback path' : 'every step twice, apply path', [c.node])));
    const ended = await Promise.all(cells.map(finish));
    expectConverged(ended);
    // Twice through the apply path still applies; twice through the rollback path still restores.
    expect(ended.map((c) => `${c.kind}: ${c.phase}`)).toEqual(plan.map((c) => `${c.kind}: ${c.failVerify ? 'rolled-back' : 'applied'}`));
  }, 12 * 60_000);
});
