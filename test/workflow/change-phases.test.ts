/**
 * The change workflow's phase machine on the time-skipping test server, with fake nodes:
 * rolling-out → awaiting-confirmation → applied (confirm) / reverted (timeout, abort);
 * a node that fails → rolled-back, the nodes before it restored; a node held by another
 * change → NodeBusy after lockTimeout. Timeouts of minutes pass in milliseconds; the
 * privileged tests (test/integration/change-*.test.ts) keep the real-kernel checks.
 *
 * Workflows, queries, updates and signals are named by their type names (what a client
 * outside the code base uses), so moving workflow code between files does not touch this.
 */
import { WorkflowClient, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { CLUSTER_TASK_QUEUE } from '../../model/naming';
import { FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';
import { eventually } from '../helpers/eventually';

interface Status {
  phase: string;
  message: string;
  nodes: Record<string, { outcome: string; diff: string[] }>;
  audit: { step: string; result: string; node?: string; detail?: string }[];
}

const BLOCKED = '198.51.100.7/32';

describeTimeSkipping('change workflow phases (time-skipping server, fake nodes)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const nodes = { a: new FakeNode('ts-a'), b: new FakeNode('ts-b') };
  let sequence = 0;

  beforeAll(async () => {
    env = await startTimeSkipping();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes: Object.values(nodes) });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });
  beforeEach(() => {
    for (const node of Object.values(nodes)) {
      node.blocklist.clear();
      node.failBlocklistApply = undefined;
    }
  });

  /**
   * Starts a change that blocks {@link BLOCKED} for a day on `targets`. With no bake after the
   * canary (`defaultBakeSeconds: 0`): these tests are about the phase machine, and the bake's
   * timer would only wait for time the tests do not skip (staged rollouts have their own tests).
   */
  async function startBlock(targets: string[], options: Record<string, unknown> = {}): Promise<WorkflowHandle> {
    const id = `ts-change-${++sequence}`;
    const now = await env.currentTimeMs();
    return env.client.workflow.start('changeWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: `change-${id}`,
      args: [{ id, author: 'tester', reason: 'phase machine test', targets, patch: { blocklist: { upsert: [{ cidr: BLOCKED, reason: 'test block', expiresAt: new Date(now + 86_400_000).toISOString() }] } }, options: { defaultBakeSeconds: 0, ...options } }],
    });
  }

  const status = (handle: WorkflowHandle) => handle.query<Status>('status');
  const waitForPhase = (handle: WorkflowHandle, phase: string) => eventually(() => status(handle), (s) => s.phase === phase, `phase ${phase}`, 15_000);
  const failureOf = async (handle: WorkflowHandle): Promise<{ type?: string; status: Status }> => {
    const err = await handle.result().then(
      () => new Error('expected the change to fail'),
      (e: unknown) => e,
    );
    if (!(err instanceof WorkflowFailedError)) throw err;
    const cause = err.cause as { type?: string; details?: unknown[] };
    return { type: cause.type, status: cause.details?.[0] as Status };
  };

  it('applies node by node, awaits confirmation, and is applied once confirmed', async () => {
    const handle = await startBlock([nodes.a.name, nodes.b.name], { confirmTimeout: '10m' });
    const waiting = await waitForPhase(handle, 'awaiting-confirmation');
    // Both nodes applied and holding; the entry is on both before anyone confirms.
    expect(Object.values(waiting.nodes).map((n) => n.outcome)).toEqual(['applied', 'applied']);
    expect(nodes.a.blocklist.has(BLOCKED) && nodes.b.blocklist.has(BLOCKED)).toBe(true);
    await handle.executeUpdate('confirm', { args: [{ by: 'tester', reason: 'looks right' }] });
    const result = ((await handle.result()) as Status);
    expect(result.phase).toBe('applied');
    expect(result.audit.some((r) => r.step === 'confirm' && r.result === 'ok' && r.detail?.includes('tester'))).toBe(true);
    expect(nodes.a.blocklist.has(BLOCKED) && nodes.b.blocklist.has(BLOCKED)).toBe(true);
  });

  it('refuses a confirm when nothing awaits confirmation', async () => {
    const handle = await startBlock([nodes.a.name]);
    await handle.result();
    await expect(handle.executeUpdate('confirm', { args: [{}] })).rejects.toThrow();
  });

  it('reverts every node when the confirmation does not come in time', async () => {
    const handle = await startBlock([nodes.a.name, nodes.b.name], { confirmTimeout: '10m' });
    await waitForPhase(handle, 'awaiting-confirmation');
    const before = await env.currentTimeMs();
    const realStart = Date.now();
    const result = ((await handle.result()) as Status);
    expect(result.phase).toBe('reverted');
    expect(result.message).toMatch(/not confirmed within 600s/);
    // Ten minutes passed for the workflow, not for us.
    expect((await env.currentTimeMs()) - before).toBeGreaterThanOrEqual(600_000);
    expect(Date.now() - realStart).toBeLessThan(60_000);
    expect(Object.values(result.nodes).map((n) => n.outcome)).toEqual(['restored', 'restored']);
    expect(nodes.a.blocklist.has(BLOCKED) || nodes.b.blocklist.has(BLOCKED)).toBe(false);
  });

  it('reverts every node on abort while awaiting confirmation', async () => {
    const handle = await startBlock([nodes.a.name, nodes.b.name], { confirmTimeout: '10m' });
    await waitForPhase(handle, 'awaiting-confirmation');
    await handle.signal('abort', { by: 'tester', reason: 'wrong prefix' });
    const result = ((await handle.result()) as Status);
    expect(result.phase).toBe('reverted');
    expect(result.message).toMatch(/aborted by tester: wrong prefix/);
    expect(nodes.a.blocklist.has(BLOCKED) || nodes.b.blocklist.has(BLOCKED)).toBe(false);
  });

  it('rolls back: the failing node restores itself, the nodes before it are restored', async () => {
    nodes.b.failBlocklistApply = 'map write failed half way';
    const handle = await startBlock([nodes.a.name, nodes.b.name]);
    const { type, status: final } = await failureOf(handle);
    expect(type).toBe('ChangeRolledBack');
    expect(final.phase).toBe('rolled-back');
    expect(final.nodes[nodes.a.name]?.outcome).toBe('restored');
    expect(final.nodes[nodes.b.name]?.outcome).toBe('rolled-back');
    expect(final.audit.some((r) => r.node === nodes.b.name && r.step === 'verify rollback' && r.result === 'ok')).toBe(true);
    // The fake wrote the entry before failing: the rollback took it off again.
    expect(nodes.a.blocklist.has(BLOCKED) || nodes.b.blocklist.has(BLOCKED)).toBe(false);
  });

  it('gives up with NodeBusy when another change holds the node past lockTimeout', async () => {
    const holder = await startBlock([nodes.a.name], { confirmTimeout: '100h' });
    await waitForPhase(holder, 'awaiting-confirmation');
    const before = await env.currentTimeMs();
    const late = await startBlock([nodes.a.name], { lockTimeout: '30s' });
    // Skip exactly 40 s: awaiting the result through the time-skipping client would let the
    // server run on to the holder's confirm timeout as soon as the late change is done.
    await env.sleep(40_000);
    const { type, status: final } = await failureOf(new WorkflowClient({ connection: env.connection }).getHandle(late.workflowId));
    expect(type).toBe('NodeBusy');
    expect(final.phase).toBe('rolled-back');
    expect(final.message).toMatch(/stayed busy with another change for 30s/);
    expect((await env.currentTimeMs()) - before).toBeGreaterThanOrEqual(30_000);
    // The holder is untouched and still waits for its confirmation.
    expect((await status(holder)).phase).toBe('awaiting-confirmation');
    await holder.executeUpdate('confirm', { args: [{ by: 'tester' }] });
    expect((((await holder.result()) as Status)).phase).toBe('applied');
  });
});
