/**
 * A node workflow whose steps are local activities (a blocklist patch) sends their audit
 * records to the durable store in one batch once the steps are done — one `appendAudit`
 * activity, not one per batch in flight — and, when it holds the node, before it waits for the
 * decision: the records are stored while the node still holds its lock. A node workflow with
 * remote steps (a route patch) keeps sending as it goes. Time-skipping server, fake nodes, the
 * real audit activities over a file store.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import { nodeLockWorkflowId, nodeTaskQueue } from '../../model/naming';
import { testAuditStores, type TestAuditStores } from '../helpers/audit-stores';
import { eventually } from '../helpers/eventually';
import { FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';

describeTimeSkipping('node workflow audit batches (time-skipping server, fake nodes)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  let stores: TestAuditStores;
  const blocks = new FakeNode('ab-blocks');
  const routes = new FakeNode('ab-routes');

  beforeAll(async () => {
    env = await startTimeSkipping();
    stores = testAuditStores();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes: [blocks, routes], audit: stores });
  });
  afterAll(async () => {
    await workers?.stop();
    await stores?.close();
    await env?.teardown();
  });

  /** The `appendAudit` activities a workflow scheduled, each with how many records it carried. */
  async function appends(workflowId: string): Promise<number[]> {
    const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
    return (history.events ?? [])
      .filter((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED && e.activityTaskScheduledEventAttributes?.activityType?.name === 'appendAudit')
      .map((e) => {
        const payload = e.activityTaskScheduledEventAttributes?.input?.payloads?.[0]?.data;
        return (JSON.parse(Buffer.from(payload ?? []).toString()) as unknown[]).length;
      });
  }

  it('a held blocklist node stores all its records in one batch before it waits, and nothing more on commit', async () => {
    const handle = await env.client.workflow.start('nodeChangeWorkflow', {
      taskQueue: nodeTaskQueue(blocks.name),
      workflowId: nodeLockWorkflowId(blocks.name),
      args: [{ changeId: 'ab-held', author: 'tester', node: blocks.name, patch: { blocklist: { upsert: [{ cidr: '198.51.100.61/32', reason: 'audit batch test' }] } }, dryRun: false, hold: true }],
    });
    // Holding (no decision yet): the snapshot, plan, apply and verify records are already stored.
    const stored = await eventually(() => stores.audit.query({ changeId: 'ab-held' }), (rows) => rows.length >= 4, 'the held node\'s records in the store', 20_000);
    expect(stored.map((r) => r.record.step)).toEqual(['snapshot', 'plan', 'blocklist', 'verify']);
    expect(await appends(handle.workflowId)).toEqual([4]);

    await handle.signal('nodeDecision', { decision: 'commit', reason: 'test commits' });
    expect(((await handle.result()) as { outcome: string }).outcome).toBe('applied');
    expect(await appends(handle.workflowId)).toEqual([4]);
    expect(await stores.audit.query({ changeId: 'ab-held' })).toHaveLength(4);
  });

  it('a route node (remote activities) still sends its records as it goes', async () => {
    const handle = await env.client.workflow.start('nodeChangeWorkflow', {
      taskQueue: nodeTaskQueue(routes.name),
      workflowId: nodeLockWorkflowId(routes.name),
      args: [{ changeId: 'ab-route', author: 'tester', node: routes.name, patch: { routes: { upsert: [{ destination: '198.51.100.0/24', gateway: '10.0.0.1' }] } }, dryRun: false }],
    });
    expect(((await handle.result()) as { outcome: string }).outcome).toBe('applied');
    const batches = await appends(handle.workflowId);
    // The first record is sent as soon as it is made, before the apply activity.
    expect(batches.length).toBeGreaterThan(1);
    expect(batches[0]).toBe(1);
    expect((await stores.audit.query({ changeId: 'ab-route' })).map((r) => r.record.step)).toEqual(['snapshot', 'plan', 'routes', 'verify']);
  });
});
