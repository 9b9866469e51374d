/**
 * Abort tells the truth: an abort of a single-node change while it applies restores the
 * node (the read-back equals the snapshot and the outcome says so), and an abort while the
 * change waits for a node's lock ends the wait and changes nothing. Real parts: the Temporal
 * dev server, a network namespace for the node; the apply is held by the node activities'
 * fault hook on a promise the test resolves, not by a sleep.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import type { Subsystem } from '../../model/subsystem';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { abortSignal, changeWorkflow, confirmUpdate } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { waitForPhase } from '../helpers/change-client';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-abort';

/** A gate the fault hook waits on: `entered` resolves when the apply reached it, `release()` lets it go on. */
interface Gate {
  subsystem: Subsystem;
  entered: Promise<void>;
  release: () => void;
  /** What the fault hook awaits: marks the gate entered, then waits for the release. */
  arrive: () => Promise<void>;
}

describePrivileged('abort of a change (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let workers: RunningWorkers;
  const pinDir = `/sys/fs/bpf/fos1-test-abort-${randomBytes(4).toString('hex')}`;
  let gate: Gate | undefined;

  function holdApply(subsystem: Subsystem): Gate {
    let enter!: () => void;
    let release!: () => void;
    const entered = new Promise<void>((r) => (enter = r));
    const released = new Promise<void>((r) => (release = r));
    const held: Gate = {
      subsystem,
      entered,
      release,
      arrive: async () => {
        enter();
        await released;
      },
    };
    gate = held;
    return held;
  }

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create('fos1abt');
    workers = await startWorkers(
      env,
      NODE,
      { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } },
      {
        // Runs after the subsystem's kernel change, before the activity reports it: the node is changed while the apply is held.
        faults: async (subsystem) => {
          const g = gate;
          if (g?.subsystem !== subsystem) return;
          gate = undefined;
          await g.arrive();
        },
      },
    );
  });

  afterAll(async () => {
    gate?.release();
    await workers?.stop();
    removePinnedBlocklist(pinDir);
    ns?.destroy();
    await env?.teardown();
  });

  let sequence = 0;
  function start(overrides: Partial<ChangeRequestInput>): Promise<WorkflowHandle<typeof changeWorkflow>> {
    const req = { id: `abort-${++sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'abort test', targets: [NODE], ...overrides } as ChangeRequestInput;
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }
  const route = (destination: string) => ({ patch: { routes: { upsert: [{ destination, gateway: LAN_GATEWAY_V4 }] } } });
  const routes = () => ns.routesJson(DEFAULT_ROUTE_PROTOCOL);

  test('an abort while a single-node change applies restores the node: the read-back equals the snapshot, and the outcome says so', async () => {
    const before = routes();
    const g = holdApply('routes');
    const handle = await start(route('10.91.0.0/24'));
    await g.entered;
    // The route is in the kernel now, the apply not yet reported: abort here.
    expect(JSON.stringify(routes())).toContain('10.91.0.0');
    await handle.signal(abortSignal, { by: 'bob', reason: 'wrong route' });
    g.release();
    const status = await handle.result();
    expect(status.phase).toBe('reverted');
    expect(status.message).toBe('aborted by bob: wrong route during rollout; every applied node was restored and verified against its snapshot');
    expect(status.nodes[NODE]?.outcome).toBe('restored');
    expect(status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`)).toEqual(expect.arrayContaining(['routes:ok', 'verify:ok', 'restore requested:ok', 'restore routes:ok', 'verify rollback:ok']));
    expect(routes()).toEqual(before);
  });

  test('a single-node change without abort still applies, and releases the node', async () => {
    const status = await (await start(route('10.92.0.0/24'))).result();
    expect(status.phase).toBe('applied');
    expect(status.nodes[NODE]?.outcome).toBe('applied');
    expect(JSON.stringify(routes())).toContain('10.92.0.0');
    // The lock is free: the next change runs at once.
    expect((await (await start({ patch: { routes: { remove: [{ destination: '10.92.0.0/24' }] } } })).result()).phase).toBe('applied');
  });

  test('an abort while waiting for the node lock ends the wait, changes nothing, and says it never applied', async () => {
    const first = await start({ ...route('10.93.0.0/24'), options: { confirmTimeout: '60s' } });
    await waitForPhase(first, 'awaiting-confirmation');
    const afterFirst = routes();
    const second = await start({ ...route('10.94.0.0/24'), options: { lockTimeout: '10m' } });
    await waitForPhase(second, 'waiting-for-node');
    await second.signal(abortSignal, { by: 'bob' });
    const status = await second.result(); // long before lockTimeout
    expect(status.phase).toBe('aborted');
    expect(status.message).toBe('aborted by bob before anything was applied; no node was changed');
    expect(status.nodes[NODE]?.outcome).toBe('not-applied');
    expect(routes()).toEqual(afterFirst);

    await first.executeUpdate(confirmUpdate, { args: [{ by: 'alice' }] });
    expect((await first.result()).phase).toBe('applied');
    expect(JSON.stringify(routes())).not.toContain('10.94.0.0');
  });
});
