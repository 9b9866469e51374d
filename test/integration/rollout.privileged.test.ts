/**
 * Staged rollouts on real parts: the Temporal dev server, one network namespace per router
 * node (each with its own "upstream" namespace behind a veth, so reachability probes are real
 * ICMP), one node worker per node (in this process; node ro6's in a child process that is
 * SIGKILLed), pinned blocklist maps per node.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId, nodeLockWorkflowId, SearchAttributes } from '../../model/naming';
import {
  abortUpdate,
  changeWorkflow,
  confirmUpdate,
  extendBakeUpdate,
  pauseUpdate,
  promoteUpdate,
  resumeUpdate,
  statusQuery,
  type ChangeStatus,
} from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure } from '../helpers/change-client';
import { eventually } from '../helpers/eventually';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const PROBE_TARGET = '198.51.100.1';
/** The gateway the breaking change routes the probe target through: present upstream of every node but ro2 and ro3. */
const CHANGE_GATEWAY = '10.78.0.5';
const REPO = join(__dirname, '..', '..');

interface TestNode {
  name: string;
  netns: string;
  upstream: string;
  pinDir: string;
}

describePrivileged('staged rollouts across a fleet (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  const suffix = randomBytes(3).toString('hex');
  const nodes: TestNode[] = [];
  const workers: RunningWorkers[] = [];
  const maps = new Map<string, BlocklistMaps>();
  let killable: ChildProcess | undefined;

  function createNode(i: number): TestNode {
    const node: TestNode = { name: `ro${i}`, netns: `fos1ro${i}-${suffix}`, upstream: `fos1ru${i}-${suffix}`, pinDir: `/sys/fs/bpf/fos1-test-ro${i}-${suffix}` };
    execFileSync('ip', ['netns', 'add', node.netns]);
    execFileSync('ip', ['netns', 'add', node.upstream]);
    const inNode = (...args: string[]) => execFileSync('ip', ['-n', node.netns, ...args]);
    const inUp = (...args: string[]) => execFileSync('ip', ['-n', node.upstream, ...args]);
    inNode('link', 'set', 'lo', 'up');
    inUp('link', 'set', 'lo', 'up');
    inNode('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'dn0', 'netns', node.upstream);
    inNode('addr', 'add', '10.78.0.2/24', 'dev', 'up0');
    inNode('link', 'set', 'up0', 'up');
    inUp('addr', 'add', '10.78.0.1/24', 'dev', 'dn0');
    // ro2 and ro3 (the second wave of the breaking test) have no 10.78.0.5 upstream: a route
    // through it black-holes the probe target there, and only there.
    if (i !== 2 && i !== 3) inUp('addr', 'add', `${CHANGE_GATEWAY}/24`, 'dev', 'dn0');
    inUp('link', 'set', 'dn0', 'up');
    inUp('addr', 'add', `${PROBE_TARGET}/32`, 'dev', 'lo');
    // The node's own route to the service (not fos1's protocol: fos1 does not manage it).
    inNode('route', 'add', '198.51.100.0/24', 'via', '10.78.0.1', 'proto', 'static');
    return node;
  }

  const target = (n: TestNode) => ({ netns: n.netns, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: n.pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });

  /** Node ro6's worker as its own process (node --import tsx workers/main.ts), so the test can SIGKILL it. */
  function startKillableWorker(n: TestNode): ChildProcess {
    // node itself, with tsx as a loader: the tsx CLI would run the worker in a child process of
    // its own, and a SIGKILL of the CLI (which cannot relay it) would leave the worker running.
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'workers', 'main.ts')], {
      cwd: REPO,
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: env.address,
        TEMPORAL_NAMESPACE: env.namespace ?? 'default',
        FOS1_NODE_NAME: n.name,
        FOS1_NETNS: n.netns,
        FOS1_BPF_PIN_DIR: n.pinDir,
        FOS1_CLUSTER_WORKER: 'false',
        FOS1_BLOCKLIST_MAX_ENTRIES_V4: '64',
        FOS1_BLOCKLIST_MAX_ENTRIES_V6: '64',
        FOS1_BLOCKHOST_MAX_ENTRIES_V4: '64',
        FOS1_BLOCKHOST_MAX_ENTRIES_V6: '64',
        FOS1_BLOCKLIST_STORE_DIR: join(tmpdir(), `fos1-test-ro6-store-${suffix}`),
        LOG_LEVEL: 'error',
      },
      stdio: 'ignore',
    });
    return child;
  }

  beforeAll(async () => {
    env = await startTemporal();
    for (let i = 1; i <= 6; i++) nodes.push(createNode(i));
    for (const n of nodes.slice(0, 5)) workers.push(await startWorkers(env, n.name, target(n), { clusterWorker: n.name === 'ro1' }));
    for (const n of nodes) {
      if (n.name === 'ro6') continue;
      maps.set(n.name, BlocklistMaps.open({ pinDir: n.pinDir, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 64, maxEntriesV6: 64 } }));
    }
  }, 180_000);

  afterAll(async () => {
    if (killable && killable.exitCode === null) {
      const exited = new Promise((resolve) => killable?.once('exit', resolve));
      killable.kill('SIGKILL');
      await exited;
    }
    for (const w of workers) await w.stop();
    for (const m of maps.values()) m.close();
    for (const n of nodes) {
      removePinnedBlocklist(n.pinDir);
      for (const ns of [n.netns, n.upstream]) {
        try {
          execFileSync('ip', ['netns', 'del', ns]);
        } catch {
          // already gone
        }
      }
    }
    await env?.teardown();
  });

  let sequence = 0;
  function start(overrides: Partial<ChangeRequestInput>): Promise<WorkflowHandle<typeof changeWorkflow>> {
    const req = { id: `ro-${++sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'rollout test', targets: ['ro1'], ...overrides } as ChangeRequestInput;
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }
  const routes = (n: string) => execFileSync('ip', ['-n', nodes.find((x) => x.name === n)?.netns as string, '-4', '-json', 'route', 'show', 'table', 'all']).toString();
  const blocked = (n: string) => (maps.get(n) as BlocklistMaps).readAll().map((e) => e.cidr);
  const block = (cidr: string) => ({ patch: { blocklist: { upsert: [{ cidr, reason: 'rollout test' }] } } });
  const reach = { kind: 'reachability' as const, intervalSeconds: 1, count: 2, targets: [{ protocol: 'icmp' as const, address: PROBE_TARGET, timeoutMs: 500 }] };
  const status = (h: WorkflowHandle<typeof changeWorkflow>) => h.query(statusQuery);
  const waitFor = (h: WorkflowHandle<typeof changeWorkflow>, what: string, ok: (s: ChangeStatus) => boolean, ms = 30_000) => eventually(() => status(h), ok, what, ms, 100);
  /** The update's refusal message (the validator's reason). */
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => 'accepted',
      (err: unknown) => String((err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message),
    );

  test('wave 2 breaks reachability for real: its gate fails, waves 2 and 1 are restored exactly, wave 3 is never touched, the gates pass again', async () => {
    const before = Object.fromEntries(['ro1', 'ro2', 'ro3', 'ro4', 'ro5'].map((n) => [n, routes(n)]));
    const handle = await start({
      targets: ['ro1', 'ro2', 'ro3', 'ro4', 'ro5'],
      patch: { routes: { upsert: [{ destination: `${PROBE_TARGET}/32`, gateway: CHANGE_GATEWAY }] } },
      strategy: {
        waves: [
          { name: 'canary', nodes: ['ro1'], bakeSeconds: 1, gates: ['reach'] },
          { name: 'second', nodes: ['ro2', 'ro3'], parallelism: 2, bakeSeconds: 1, gates: ['reach'] },
          { name: 'rest', gates: ['reach'] },
        ],
        gates: { reach },
      },
    });
    const { type, status: final } = await changeFailure(handle);
    expect(type).toBe('RolloutGateFailed');
    expect(final.phase).toBe('rolled-back');
    expect(final.message).toMatch(/wave second: gate reach failed/);
    expect(final.waves?.map((w) => [w.name, w.state])).toEqual([
      ['canary', 'restored'],
      ['second', 'restored'],
      ['rest', 'pending'],
    ]);
    expect(final.waves?.[0]?.gateVerdicts.reach?.phase).toBe('success');
    expect(final.waves?.[1]?.gateVerdicts.reach?.phase).toBe('failure');
    for (const n of ['ro1', 'ro2', 'ro3']) {
      expect(final.nodes[n]?.outcome).toBe('restored');
      // Read back by the node workflow against its snapshot, and by us against the namespace.
      expect(final.audit.filter((r) => r.node === n).map((r) => `${r.step}:${r.result}`)).toEqual(expect.arrayContaining(['routes:ok', 'verify:ok', 'restore requested:ok', 'verify rollback:ok']));
      expect(routes(n)).toEqual(before[n]);
    }
    // Newest first: the second wave's nodes were restored before the canary.
    const restoredAt = (n: string) => final.audit.find((r) => r.node === n && r.step === 'restore requested')?.startedAt ?? '';
    expect(restoredAt('ro1') >= restoredAt('ro2') && restoredAt('ro1') >= restoredAt('ro3')).toBe(true);
    for (const n of ['ro4', 'ro5']) {
      expect(final.nodes[n]?.outcome).toBe('pending');
      expect(routes(n)).toEqual(before[n]);
    }
    await expect(env.client.workflow.getHandle(nodeLockWorkflowId('ro4')).describe()).rejects.toThrow(/not found/i);
    expect(final.postRollbackGates?.reach?.phase).toBe('success');
    expect(final.audit.map((r) => `${r.step}:${r.result}`)).toEqual(expect.arrayContaining(['wave second gates:failed', 'restore every touched node:ok', 'post-rollback gates:ok']));
  });

  test('onGateFailure pause: a failed gate holds the rollout for an operator (nodes keep the change, the next wave waits); abort restores every touched node', async () => {
    const before = Object.fromEntries(['ro1', 'ro2', 'ro4'].map((n) => [n, routes(n)]));
    const handle = await start({
      targets: ['ro1', 'ro2', 'ro4'],
      patch: { routes: { upsert: [{ destination: `${PROBE_TARGET}/32`, gateway: CHANGE_GATEWAY }] } },
      strategy: {
        waves: [
          { name: 'canary', nodes: ['ro1'], gates: ['reach'] },
          { name: 'second', nodes: ['ro2'], gates: ['reach'] },
          { name: 'rest' },
        ],
        gates: { reach },
        onGateFailure: 'pause',
      },
    });
    const paused = await waitFor(handle, 'paused on the failed gate', (s) => s.phase === 'paused', 60_000);
    expect(paused.waves?.map((w) => [w.name, w.state])).toEqual([
      ['canary', 'ready'],
      ['second', 'gate-failed'],
      ['rest', 'pending'],
    ]);
    expect(paused.waves?.[1]?.gateVerdicts.reach?.phase).toBe('failure');
    expect(paused.paused?.reason).toMatch(/reach failed/);
    // Held, not rolled back: ro2 keeps the black-holing route for the operator to look at.
    expect(paused.nodes.ro2?.outcome).toBe('applied');
    expect(routes('ro2')).not.toEqual(before.ro2);
    expect(paused.nodes.ro4?.outcome).toBe('pending');
    await handle.executeUpdate(abortUpdate, { args: [{ by: 'bob', reason: 'gate failed on second' }] });
    const done = await handle.result();
    expect(done.phase).toBe('reverted');
    expect(done.nodes.ro1?.outcome).toBe('restored');
    expect(done.nodes.ro2?.outcome).toBe('restored');
    expect(done.nodes.ro4?.outcome).toBe('not-applied');
    for (const n of ['ro1', 'ro2', 'ro4']) expect(routes(n)).toEqual(before[n]);
  });

  test('pause during a bake, resume, promote, full promote; each control refused in the wrong phase', async () => {
    const handle = await start({
      targets: ['ro1', 'ro4', 'ro5'],
      ...block('192.0.2.101'),
      strategy: { waves: [{ name: 'one', nodes: ['ro1'], bakeSeconds: 120, gates: ['reach'] }, { name: 'two', nodes: ['ro4'], bakeSeconds: 120 }, { name: 'three' }], gates: { reach } },
    });
    const baking = await waitFor(handle, 'wave one baking', (s) => s.phase === 'baking' && s.currentWave === 'one');
    // While its wave bakes, the canary is applied and holding its lock (not still "applying").
    expect(baking.nodes.ro1).toMatchObject({ wave: 'one', phase: 'holding', outcome: 'applied' });
    expect(baking.progress.nodesDone).toBe(1);
    expect(await refusal(handle.executeUpdate(resumeUpdate, { args: [{ by: 'bob' }] }))).toMatch(/nothing to resume: the change is baking/);
    expect(await refusal(handle.executeUpdate(confirmUpdate, { args: [{ by: 'bob' }] }))).toMatch(/nothing to confirm/);
    expect(await refusal(handle.executeUpdate(extendBakeUpdate, { args: [{ by: 'bob', seconds: 0 }] }))).toMatch(/seconds: must be a whole number/);
    expect(await refusal(handle.executeUpdate(extendBakeUpdate, { args: [{ by: 'bob', seconds: 30 }] }))).toBe('accepted');

    const paused = await handle.executeUpdate(pauseUpdate, { args: [{ by: 'bob', reason: 'looking at graphs' }] });
    expect(paused).toMatchObject({ phase: 'paused', paused: { by: 'bob', reason: 'looking at graphs' } });
    expect(await refusal(handle.executeUpdate(pauseUpdate, { args: [{ by: 'bob' }] }))).toMatch(/cannot pause: the change is paused/);
    expect(blocked('ro4')).not.toContain('192.0.2.101/32');
    const resumed = await handle.executeUpdate(resumeUpdate, { args: [{ by: 'bob' }] });
    expect(resumed.phase).toBe('baking');

    await handle.executeUpdate(promoteUpdate, { args: [{ by: 'bob' }] });
    await waitFor(handle, 'wave two baking', (s) => s.phase === 'baking' && s.currentWave === 'two');
    expect(blocked('ro4')).toContain('192.0.2.101/32');
    expect(blocked('ro5')).not.toContain('192.0.2.101/32');
    const described = await handle.describe();
    expect(described.searchAttributes.Fos1Wave ?? described.typedSearchAttributes.get(SearchAttributes.wave)).toEqual(expect.arrayContaining(['two']));
    expect(described.typedSearchAttributes.get(SearchAttributes.status)).toBe('baking');

    await handle.executeUpdate(promoteUpdate, { args: [{ by: 'bob', full: true }] });
    const done = await handle.result();
    expect(done.phase).toBe('applied');
    expect(done.waves?.map((w) => w.state)).toEqual(['committed', 'committed', 'committed']);
    for (const n of ['ro1', 'ro4', 'ro5']) expect(blocked(n)).toContain('192.0.2.101/32');
    expect(done.waves?.[0]?.gateVerdicts.reach?.measurements.length).toBeGreaterThan(0);
    expect(done.audit.map((r) => r.step)).toEqual(expect.arrayContaining(['extend bake', 'pause', 'resume', 'promote']));
    // Once the change has ended, Temporal itself refuses every update (the API answers 409 with the phase).
    expect(await refusal(handle.executeUpdate(abortUpdate, { args: [{ by: 'bob' }] }))).toMatch(/already completed/);
  });

  test('abort mid-wave restores every node changed so far, newest first', async () => {
    const before = { ro1: blocked('ro1'), ro4: blocked('ro4'), ro5: blocked('ro5') };
    const handle = await start({
      targets: ['ro1', 'ro4', 'ro5'],
      ...block('192.0.2.102'),
      strategy: { waves: [{ name: 'one', nodes: ['ro1'] }, { name: 'two', nodes: ['ro4'], bakeSeconds: 120 }, { name: 'three' }] },
    });
    await waitFor(handle, 'wave two baking', (s) => s.phase === 'baking' && s.currentWave === 'two');
    expect(blocked('ro4')).toContain('192.0.2.102/32');
    await handle.executeUpdate(abortUpdate, { args: [{ by: 'bob', reason: 'wrong list' }] });
    expect(await refusal(handle.executeUpdate(abortUpdate, { args: [{ by: 'bob' }] }))).toMatch(/already reverting|already completed/);
    const done = await handle.result();
    expect(done.phase).toBe('reverted');
    expect(done.message).toContain('aborted by bob: wrong list');
    expect(done.nodes.ro1?.outcome).toBe('restored');
    expect(done.nodes.ro4?.outcome).toBe('restored');
    expect(done.nodes.ro5?.outcome).toBe('not-applied');
    expect({ ro1: blocked('ro1'), ro4: blocked('ro4'), ro5: blocked('ro5') }).toEqual(before);
  });

  test('an inconclusive gate pauses the rollout and never passes: resumed, it measures again and pauses again', async () => {
    const before = blocked('ro1');
    const handle = await start({
      targets: ['ro1', 'ro4'],
      ...block('192.0.2.103'),
      strategy: {
        waves: [{ name: 'one', nodes: ['ro1'], gates: ['metrics'] }, { name: 'two' }],
        // Nothing listens on port 9: the query cannot be measured.
        gates: { metrics: { kind: 'prometheus', address: 'http://127.0.0.1:9', query: 'up', successCondition: { op: '>=', value: 1 }, intervalSeconds: 1, count: 1, timeoutMs: 500 } },
      },
    });
    const paused = await waitFor(handle, 'paused on the inconclusive gate', (s) => s.phase === 'paused');
    expect(paused.waves?.[0]).toMatchObject({ state: 'gate-inconclusive', gateVerdicts: { metrics: { phase: 'inconclusive' } } });
    expect(paused.paused?.reason).toMatch(/metrics was inconclusive/);
    expect(paused.nodes.ro4?.outcome).toBe('pending');
    // Paused on a gate, not in a bake: there is no bake to extend.
    expect(await refusal(handle.executeUpdate(extendBakeUpdate, { args: [{ by: 'bob', seconds: 10 }] }))).toMatch(/no bake to extend: the change is paused/);
    await handle.executeUpdate(resumeUpdate, { args: [{ by: 'bob' }] });
    const again = await waitFor(handle, 'a second inconclusive run', (s) => s.phase === 'paused' && s.audit.filter((r) => r.step === 'wave one gates').length === 2);
    expect(again.nodes.ro4?.outcome).toBe('pending');
    expect(blocked('ro4')).not.toContain('192.0.2.103/32');
    await handle.executeUpdate(abortUpdate, { args: [{ by: 'bob' }] });
    expect((await handle.result()).phase).toBe('reverted');
    expect(blocked('ro1')).toEqual(before);
  });

  test('a target whose worker is not polling fails the change up front, naming the node; nothing is applied', async () => {
    const before = blocked('ro1');
    const handle = await start({ targets: ['ro1', 'ro-dead'], ...block('192.0.2.104') });
    const { type, status: final } = await changeFailure(handle);
    expect(type).toBe('NodeNotPolling');
    expect(final.message).toMatch(/no worker is polling the task queue of node ro-dead \(fos1-node-ro-dead\); nothing was applied/);
    expect(final.nodes.ro1?.outcome).toBe('pending');
    expect(blocked('ro1')).toEqual(before);
  });

  test('the worker of a wave-2 node is SIGKILLed during its apply and restarted: the rollout converges, never half-applied', async () => {
    const ro6 = nodes.find((n) => n.name === 'ro6') as TestNode;
    killable = startKillableWorker(ro6);
    await eventually(
      async () => (await env.client.workflowService.describeTaskQueue({ namespace: env.namespace ?? 'default', taskQueue: { name: 'fos1-node-ro6' }, taskQueueType: 1 })).pollers?.length ?? 0,
      (n) => n > 0,
      'ro6 worker polling',
      60_000,
      250,
    );
    const handle = await start({ targets: ['ro1', 'ro6', 'ro4'], ...block('192.0.2.105'), strategy: { waves: [{ nodes: ['ro1'] }, { nodes: ['ro6'] }, {}] } });
    // The moment ro6's node workflow exists, its worker dies: somewhere between snapshot and verify.
    await eventually(
      () => env.client.workflow.getHandle(nodeLockWorkflowId('ro6')).describe().then(() => true, () => false),
      (started) => started,
      'ro6 node workflow started',
      30_000,
      20,
    );
    killable.kill('SIGKILL');
    await new Promise((resolve) => killable?.once('exit', resolve));
    killable = startKillableWorker(ro6);
    const final = await handle.result().then(
      (s) => s,
      (err: unknown) => ((err as { cause?: { details?: unknown[] } }).cause?.details?.[0] as ChangeStatus),
    );
    const ro6Maps = BlocklistMaps.open({ pinDir: ro6.pinDir, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 64, maxEntriesV6: 64 } });
    const has = { ro1: blocked('ro1').includes('192.0.2.105/32'), ro6: ro6Maps.readAll().some((e) => e.cidr === '192.0.2.105/32'), ro4: blocked('ro4').includes('192.0.2.105/32') };
    ro6Maps.close();
    // Converged: every node has the change (applied) or none has it (rolled back).
    expect(['applied', 'rolled-back']).toContain(final.phase);
    expect(has).toEqual(final.phase === 'applied' ? { ro1: true, ro6: true, ro4: true } : { ro1: false, ro6: false, ro4: false });
  }, 400_000);
});
