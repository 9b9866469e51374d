/**
 * Recovery on the time-skipping test server (issue 16), with fake nodes running the real
 * node activities:
 *
 * - a restore that does not verify keeps retrying with back-off (visible in `nodeProgress`
 *   and the audit) until the node takes it, or an operator gives up; over days of failing
 *   rounds it continues as new, each run's history bounded;
 * - a snapshot is never taken after its own apply: the workflow task that ran a local
 *   prepare and apply is failed before it completes, so the retried task runs the prepare
 *   again, and a later revert still restores the state from before the change;
 * - the longest allowed lock wait and confirmation wait (7 days each) keep the change's
 *   and its waves' histories bounded.
 */
import { WorkflowClient, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type InjectedSinks } from '@temporalio/worker';
import type { AuditSinks } from '../../model/audit';
import { CLUSTER_TASK_QUEUE, nodeLockWorkflowId, nodeTaskQueue } from '../../model/naming';
import { RESTORE_HISTORY_LIMIT } from '../../workflows/node-recovery';
import { eventually } from '../helpers/eventually';
import { FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';
import { workflowBundleOptions } from '../../workers/workflow-bundle';

interface Progress {
  step: string;
  restore?: { attempt: number; lastError: string; since: string; nextTryAt?: string };
}
interface NodeResult {
  outcome: string;
  rollbackDifferences?: string[];
  audit: { step: string; result: string; detail?: string; actor: string }[];
}
interface Status {
  phase: string;
  message: string;
  waves?: { name: string }[];
  nodes: Record<string, { outcome: string; phase?: string; restore?: Progress['restore'] }>;
}

const DAY = 86_400_000;
const WEEK = 7 * DAY;

describeTimeSkipping('recovery (time-skipping server, fake nodes)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const nodes = { retry: new FakeNode('rc-retry'), long: new FakeNode('rc-long'), lock: new FakeNode('rc-lock'), status: new FakeNode('rc-status') };
  let sequence = 0;

  beforeAll(async () => {
    env = await startTimeSkipping();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes: Object.values(nodes) });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });

  /** A node workflow that blocks `cidr` on `node` (started as the change workflow would, under the node's lock). */
  async function startNodeBlock(node: FakeNode, cidr: string, extra: Record<string, unknown> = {}): Promise<WorkflowHandleWithFirstExecutionRunId> {
    const now = await env.currentTimeMs();
    return env.client.workflow.start('nodeChangeWorkflow', {
      taskQueue: nodeTaskQueue(node.name),
      workflowId: nodeLockWorkflowId(node.name),
      args: [{ changeId: `rc-${++sequence}`, author: 'tester', node: node.name, patch: { blocklist: { upsert: [{ cidr, reason: 'recovery test', expiresAt: new Date(now + DAY).toISOString() }] } }, dryRun: false, ...extra }],
    });
  }
  const progressOf = (handle: WorkflowHandle) => new WorkflowClient({ connection: env.connection }).getHandle(handle.workflowId).query<Progress>('nodeProgress');
  const eventCount = async (workflowId: string, runId?: string) => (await new WorkflowClient({ connection: env.connection }).getHandle(workflowId, runId).fetchHistory()).events?.length ?? 0;

  it('keeps retrying a restore that does not verify, shows it, and rolls back once the node takes it', async () => {
    const node = nodes.retry;
    node.blocklist.set('203.0.113.1/32', undefined);
    node.failBlocklistApply = 'injected apply failure';
    node.failRestores = 'node unreachable (injected)';
    const handle = await startNodeBlock(node, '198.51.100.30/32');
    // The first rollback (two passes) fails; the workflow waits for its first retry instead of ending rollback-failed.
    const waiting = await eventually(() => progressOf(handle), (p) => p.step === 'restore retrying', 'the restore to start retrying', 30_000);
    expect(waiting.restore).toMatchObject({ attempt: 0, lastError: expect.stringMatching(/^restore blocklist: .*node unreachable \(injected\).*should be absent/) });
    expect(Date.parse(waiting.restore?.nextTryAt ?? '') - Date.parse(waiting.restore?.since ?? '')).toBeGreaterThanOrEqual(5_000);
    expect(node.blocklist.has('198.51.100.30/32')).toBe(true); // the half-done apply is still there

    // Two failed rounds: 5 s, then 10 s later; the attempt count, error and next try move on.
    await env.sleep(6_000);
    const first = await eventually(() => progressOf(handle), (p) => p.restore?.attempt === 1 && p.restore.nextTryAt !== undefined, 'the first retry to fail', 15_000);
    expect(first.restore?.lastError).toMatch(/node unreachable \(injected\)/);
    expect(Date.parse(first.restore?.nextTryAt ?? '') - (await env.currentTimeMs())).toBeGreaterThan(5_000);

    node.failRestores = undefined; // the node is back
    const result = (await handle.result()) as NodeResult;
    expect(result.outcome).toBe('rolled-back');
    expect([...node.blocklist.keys()]).toEqual(['203.0.113.1/32']);
    // The audit: the last failed round (one record, replaced each round) and the one that verified.
    const retries = result.audit.filter((r) => r.step.startsWith('restore retr'));
    expect(retries.map((r) => `${r.step}:${r.result}`)).toEqual(['restore retry:failed', 'restore retried:ok']);
    expect(retries[0]?.detail).toMatch(/^attempt 1 did not verify: .*node unreachable.*; next try at /);
    expect(retries[1]?.detail).toMatch(/^attempt 2: node equals snapshot/);
    expect(node.calls.filter((c) => c.startsWith('restoreAndCheck'))).toHaveLength(2);
  });

  it("shows a retrying restore in the change's status (attempt, last error, next try) until the node takes it", async () => {
    const node = nodes.status;
    node.failBlocklistApply = 'injected apply failure';
    node.failRestores = 'node unreachable (injected)';
    const id = `rc-status-${++sequence}`;
    const now = await env.currentTimeMs();
    const change = await env.client.workflow.start('changeWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: `change-${id}`,
      args: [{ id, author: 'tester', reason: 'restore status', targets: [node.name], patch: { blocklist: { upsert: [{ cidr: '198.51.100.35/32', reason: 'restore status', expiresAt: new Date(now + DAY).toISOString() }] } }, options: { defaultBakeSeconds: 0 } }],
    });
    const statusOf = () => new WorkflowClient({ connection: env.connection }).getHandle(change.workflowId).query<Status>('status');
    // The node's first rollback failed: the change's status says the restore is retrying, and when it tries next.
    const waiting = await eventually(statusOf, (s) => s.nodes[node.name]?.restore !== undefined, "the change's status to show the retrying restore", 30_000);
    expect(waiting.nodes[node.name]?.restore).toMatchObject({ attempt: 0, lastError: expect.stringMatching(/node unreachable \(injected\)/), nextTryAt: expect.any(String) });
    expect(Date.parse(waiting.nodes[node.name]?.restore?.nextTryAt ?? '') - Date.parse(waiting.nodes[node.name]?.restore?.since ?? '')).toBe(5_000);
    // A failed round later: the attempt count and the next try move on (10 s back-off now).
    await env.sleep(6_000);
    const later = await eventually(statusOf, (s) => s.nodes[node.name]?.restore?.attempt === 1 && s.nodes[node.name]?.restore?.nextTryAt !== undefined, 'the first retry to fail, in the status', 15_000);
    const restore = later.nodes[node.name]?.restore;
    expect(Date.parse(restore?.nextTryAt ?? '') - Date.parse(waiting.nodes[node.name]?.restore?.nextTryAt ?? '')).toBeGreaterThanOrEqual(10_000);

    node.failRestores = undefined; // the node is back
    const final = (await change.result().catch((err: { cause?: { details?: unknown[] } }) => err.cause?.details?.[0])) as Status;
    expect(final.phase).toBe('rolled-back');
    expect(final.nodes[node.name]).toMatchObject({ outcome: 'rolled-back' });
    // Its final result replaces the retrying view.
    expect(final.nodes[node.name]?.restore).toBeUndefined();
    expect([...node.blocklist.keys()]).toEqual([]);
  });

  it('over days of failing rounds continues as new with a bounded history, until an operator gives up', async () => {
    const node = nodes.long;
    node.failBlocklistApply = 'injected apply failure';
    node.failRestores = 'node unreachable (injected)';
    const handle = await startNodeBlock(node, '198.51.100.31/32');
    const firstRunId = handle.firstExecutionRunId;
    await eventually(() => progressOf(handle), (p) => p.step === 'restore retrying', 'the restore to start retrying', 30_000);
    await env.sleep(2 * DAY);
    const latest = new WorkflowClient({ connection: env.connection }).getHandle(handle.workflowId);
    const description = await latest.describe();
    expect(description.type).toBe('nodeRestoreWorkflow'); // continued as new (at least once) …
    expect(description.runId).not.toBe(firstRunId);
    const progress = await latest.query<Progress>('nodeProgress');
    // … and still retrying: 2 days at the 10-minute cap is over 280 rounds.
    expect(progress.restore?.attempt).toBeGreaterThan(280);
    // Every run's history stays near the limit (one round past it at most), whatever the outage's length.
    expect(await eventCount(handle.workflowId, firstRunId)).toBeLessThan(RESTORE_HISTORY_LIMIT + 50);
    expect(await eventCount(handle.workflowId)).toBeLessThan(RESTORE_HISTORY_LIMIT + 50);

    await latest.signal('giveUpRestore', { reason: 'node replaced; restored by hand', actor: 'operator' });
    const result = (await latest.result()) as NodeResult;
    expect(result.outcome).toBe('rollback-failed');
    expect(result.rollbackDifferences?.join()).toMatch(/node unreachable/);
    const gaveUp = result.audit.find((r) => r.step === 'restore given up');
    expect(gaveUp).toMatchObject({ result: 'failed', actor: 'operator', detail: expect.stringMatching(/^node replaced; restored by hand \(after \d+ retries; last error: /) });
    // The carried audit keeps one record of the repeated round, not hundreds.
    expect(result.audit.filter((r) => r.step === 'restore retry')).toHaveLength(1);
    node.failRestores = undefined;
  });

  it('never snapshots after its own apply: a replayed local prepare returns the first snapshot, and the revert restores it', async () => {
    const node = new FakeNode('rc-replay');
    const existing = '198.51.100.40/32';
    const added = '198.51.100.41/32';
    const before = Math.floor((await env.currentTimeMs()) / 1000) + 3600;
    node.blocklist.set(existing, before);
    // This node's worker fails the first workflow task right after the local apply (test/fixtures/fail-first-workflow-task.ts).
    const bundle = await bundleWorkflowCode(
      workflowBundleOptions({
        workflowInterceptorModules: [require.resolve('../fixtures/fail-first-workflow-task')],
        logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: (m: string) => console.error(m) },
      }),
    );
    const sinks: InjectedSinks<AuditSinks> = { audit: { record: { fn: () => undefined, callDuringReplay: false } } };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: nodeTaskQueue(node.name), workflowBundle: bundle, activities: node.activities(), sinks });
    await worker.runUntil(async () => {
      const now = await env.currentTimeMs();
      const handle = await env.client.workflow.start('nodeChangeWorkflow', {
        taskQueue: nodeTaskQueue(node.name),
        workflowId: nodeLockWorkflowId(node.name),
        args: [
          {
            changeId: 'rc-replay-1',
            author: 'tester',
            node: node.name,
            // Changes the expiry of a present entry and adds one: both must be undone.
            patch: { blocklist: { upsert: [{ cidr: existing, reason: 'longer', expiresAt: new Date(now + DAY).toISOString() }, { cidr: added, reason: 'new', expiresAt: new Date(now + DAY).toISOString() }] } },
            dryRun: false,
            hold: true,
          },
        ],
      });
      await eventually(() => handle.query<Progress>('nodeProgress'), (p) => p.step.startsWith('holding'), 'the node to hold the applied change', 30_000);
      // The repeat happened: prepare and apply ran, the task failed, and the prepare ran again on the changed maps.
      expect(node.calls.slice(0, 4)).toEqual(['prepareSubsystems', 'applySubsystem(blocklist)', 'prepareSubsystems', 'applySubsystem(blocklist)']);
      expect(node.blocklist.get(existing)).not.toBe(before);
      expect(node.blocklist.has(added)).toBe(true);
      await handle.signal('nodeDecision', { decision: 'revert', reason: 'test revert' });
      const result = (await handle.result()) as NodeResult;
      expect(result.outcome).toBe('restored');
    });
    // The state from before the change, not the one the repeated prepare saw.
    expect([...node.blocklist.entries()]).toEqual([[existing, before]]);
  });

  it('waits for a lock through the longest lockTimeout, behind a change awaiting the longest confirmTimeout, with bounded histories', async () => {
    const node = nodes.lock;
    const start = async (options: Record<string, unknown>) => {
      const id = `rc-change-${++sequence}`;
      const now = await env.currentTimeMs();
      return env.client.workflow.start('changeWorkflow', {
        taskQueue: CLUSTER_TASK_QUEUE,
        workflowId: `change-${id}`,
        args: [{ id, author: 'tester', reason: 'long waits', targets: [node.name], patch: { blocklist: { upsert: [{ cidr: `198.51.100.${50 + sequence}/32`, reason: 'long waits', expiresAt: new Date(now + 30 * DAY).toISOString() }] } }, options: { defaultBakeSeconds: 0, ...options } }],
      });
    };
    const holder = await start({ confirmTimeout: '168h' });
    await eventually(() => holder.query<Status>('status'), (s) => s.phase === 'awaiting-confirmation', 'the holder to await confirmation', 15_000);
    // The waiter starts an hour later, so the holder's confirm timeout frees the node 6 days 23 hours into its wait.
    await env.sleep(3_600_000);
    const waiter = await start({ lockTimeout: '168h' });
    await eventually(() => waiter.query<Status>('status'), (s) => s.phase === 'rolling-out', 'the waiter to roll out', 15_000);
    await env.sleep(WEEK);
    const client = new WorkflowClient({ connection: env.connection });
    const holderStatus = await client.getHandle(holder.workflowId).query<Status>('status');
    expect(holderStatus.phase).toBe('reverted');
    expect(holderStatus.message).toMatch(/not confirmed within 604800s/);
    const waiterStatus = await client.getHandle(waiter.workflowId).query<Status>('status');
    expect(waiterStatus.phase).toBe('applied');
    // Bounded: a 7-day confirm wait is one timer; a 7-day lock wait a few hundred tries (support.ts lockWaitDelayMs).
    const holderEvents = await eventCount(holder.workflowId);
    const waiterEvents = await eventCount(waiter.workflowId);
    const waveIds = await childIds(waiter.workflowId);
    const waveEvents = await Promise.all(waveIds.filter((id) => !id.startsWith('node-')).map((id) => eventCount(id)));
    expect({ holderEvents: holderEvents < 300, waiterEvents: waiterEvents < 300, waves: waveEvents.length, waveEvents: waveEvents.every((n) => n < 3_000) }).toEqual({ holderEvents: true, waiterEvents: true, waves: 1, waveEvents: true });
    console.log(`7-day waits: holder change ${holderEvents} events, waiter change ${waiterEvents}, its wave ${waveEvents.join(', ')}`);
  });

  /** The workflow ids of a workflow's children, from its history. */
  async function childIds(workflowId: string): Promise<string[]> {
    const history = await new WorkflowClient({ connection: env.connection }).getHandle(workflowId).fetchHistory();
    return (history.events ?? []).flatMap((e) => (e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId ? [e.startChildWorkflowExecutionInitiatedEventAttributes.workflowId] : []));
  }
});
