/**
 * An automated block on a fleet, on the time-skipping test server with fake nodes: it reaches
 * every node in one wave, without the default strategy's canary and bakes, one node after
 * another in name order. With the default (a canary, 30 s bake, half, 30 s bake, the rest) the
 * other nodes stayed open for a minute while each finished wave held its node's lock, and on a
 * busy fleet (bench/soak: an alert every 10 s on 3 nodes) every other change queued behind the
 * blocks and lifts for good; with all nodes at once, three blocks each held one node and
 * waited for the others (until lockTimeout), which the one order rules out.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { eventually } from '../helpers/eventually';
import { FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';

interface EnforcementStatus {
  active?: { enforced: boolean };
  blocks: { changeId: string }[];
}
interface ChangeStatus {
  phase: string;
  waves?: { name: string; nodes: string[]; concurrency: number; bakeSeconds: number }[];
}

describeTimeSkipping('an automated block on a fleet (time-skipping server, fake nodes)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const nodes = [new FakeNode('ef-1'), new FakeNode('ef-2'), new FakeNode('ef-3')];

  beforeAll(async () => {
    env = await startTimeSkipping();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });

  it('blocks on every node in one wave, with no bake, the nodes in name order, and lifts the same way', async () => {
    const target = '203.0.113.99/32';
    const handle = await env.client.workflow.signalWithStart('enforcementWorkflow', {
      workflowId: `enforce-${target.replace(/\//g, '_')}`,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [{ target, nodes: ['ef-2', 'ef-3', 'ef-1'] }],
      signal: 'verdict',
      signalArgs: [{ rule: 'test-rule', action: 'block', target, durationMs: 60_000, escalation: { factor: 2, maxDurationMs: 600_000 }, memoryMs: 60_000, reason: 'test verdict', evidence: { source: 'suricata', eventType: 'alert', timestamp: new Date().toISOString() } }],
    });
    const status = await eventually(() => handle.query<EnforcementStatus>('enforcement'), (s) => s.active?.enforced === true, 'the block', 30_000);
    expect(nodes.map((n) => n.blocklist.has(target))).toEqual([true, true, true]);
    const change = (await env.client.workflow.getHandle(changeWorkflowId(status.blocks[0]?.changeId ?? '')).result()) as ChangeStatus;
    expect(change.phase).toBe('applied');
    // One node at a time in one order: two blocks never each hold a node the other waits for.
    expect(change.waves?.map((w) => `${w.name}: ${w.nodes.join(',')} (${w.concurrency} at once, bake ${w.bakeSeconds} s)`)).toEqual(['all: ef-1,ef-2,ef-3 (1 at once, bake 0 s)']);
    await handle.signal('lift', { by: 'tester', reason: 'cleanup' });
    await eventually(() => handle.query<EnforcementStatus>('enforcement'), (s) => s.active === undefined, 'the lift', 30_000);
    expect(nodes.map((n) => n.blocklist.has(target))).toEqual([false, false, false]);
  });
});
