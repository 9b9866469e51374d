/**
 * The readiness verdict's logic (workers/readiness.ts) with a stand-in for Temporal's
 * DescribeTaskQueue; the real server is in test/integration/worker-readiness.privileged.test.ts.
 */
import { temporal } from '@temporalio/proto';
import { checkReadiness, type PolledWorker, type TaskQueueDescriber } from '../../workers/readiness';
import { parseWorkerConfig } from '../../workers/config';

const { TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY } = temporal.api.enums.v1.TaskQueueType;

function worker(state: string, taskQueue = 'fos1-node-a', identity = '1@a'): PolledWorker {
  return { getState: () => state, options: { taskQueue, identity, namespace: 'default' } };
}

/** Pollers per `queue/type`, as the server would list them. */
function describer(pollers: Record<string, string[]>): TaskQueueDescriber & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    describeTaskQueue: async (req) => {
      const key = `${req.taskQueue?.name}/${req.taskQueueType === TASK_QUEUE_TYPE_ACTIVITY ? 'activity' : req.taskQueueType === TASK_QUEUE_TYPE_WORKFLOW ? 'workflow' : '?'}`;
      calls.push(key);
      return { pollers: (pollers[key] ?? []).map((identity) => ({ identity })) };
    },
  };
}

describe('checkReadiness', () => {
  it('is ready when the worker runs and is listed as workflow and activity poller', async () => {
    const d = describer({ 'fos1-node-a/workflow': ['9@b', '1@a'], 'fos1-node-a/activity': ['1@a'] });
    expect(await checkReadiness([worker('RUNNING')], d)).toEqual({ ready: true, reasons: [] });
    expect(d.calls).toEqual(['fos1-node-a/workflow', 'fos1-node-a/activity']);
  });

  it('is not ready while RUNNING but another process is the only poller', async () => {
    const r = await checkReadiness([worker('RUNNING')], describer({ 'fos1-node-a/workflow': ['9@b'], 'fos1-node-a/activity': ['1@a'] }));
    expect(r).toEqual({ ready: false, reasons: ['fos1-node-a: 1@a is not yet polling its workflow tasks'] });
  });

  it('trusts the state over a stale poller list (a stopped worker stays listed for minutes)', async () => {
    const d = describer({ 'fos1-node-a/workflow': ['1@a'], 'fos1-node-a/activity': ['1@a'] });
    expect(await checkReadiness([worker('STOPPING')], d)).toEqual({ ready: false, reasons: ['fos1-node-a: worker is STOPPING'] });
    expect(d.calls).toEqual([]);
  });

  it('needs every worker of the process ready', async () => {
    const d = describer({ 'fos1-node-a/workflow': ['1@a'], 'fos1-node-a/activity': ['1@a'] });
    const r = await checkReadiness([worker('RUNNING'), worker('RUNNING', 'fos1-cluster')], d);
    expect(r.ready).toBe(false);
    expect(r.reasons).toEqual(['fos1-cluster: 1@a is not yet polling its workflow tasks', 'fos1-cluster: 1@a is not yet polling its activity tasks']);
  });

  it('reports an unreachable server as not ready, with the error', async () => {
    const failing: TaskQueueDescriber = { describeTaskQueue: async () => Promise.reject(new Error('14 UNAVAILABLE: connection refused')) };
    const r = await checkReadiness([worker('RUNNING')], failing);
    expect(r.ready).toBe(false);
    expect(r.reasons[0]).toBe('fos1-node-a: DescribeTaskQueue failed (14 UNAVAILABLE: connection refused)');
  });

  it('is not ready with no worker at all', async () => {
    expect(await checkReadiness([], describer({}))).toEqual({ ready: false, reasons: ['no worker in this process'] });
  });
});

describe('worker configuration: health endpoint and worker kinds', () => {
  it('has no health endpoint unless FOS1_HEALTH_PORT is set; binds to loopback by default', () => {
    expect(parseWorkerConfig({}).health).toBeUndefined();
    expect(parseWorkerConfig({ FOS1_HEALTH_PORT: '8081' }).health).toEqual({ port: 8081, host: '127.0.0.1' });
    expect(parseWorkerConfig({ FOS1_HEALTH_PORT: '8081', FOS1_HEALTH_HOST: '0.0.0.0' }).health).toEqual({ port: 8081, host: '0.0.0.0' });
  });

  it('refuses a bad port or host, naming the variable', () => {
    expect(() => parseWorkerConfig({ FOS1_HEALTH_PORT: '70000' })).toThrow(/FOS1_HEALTH_PORT: FOS1_HEALTH_PORT must be a port 1-65535/);
    expect(() => parseWorkerConfig({ FOS1_HEALTH_PORT: '8081', FOS1_HEALTH_HOST: 'localhost; rm' })).toThrow(/FOS1_HEALTH_HOST: FOS1_HEALTH_HOST must be an IP address/);
  });

  it('runs the node worker by default, and refuses a process with neither worker', () => {
    expect(parseWorkerConfig({}).nodeWorker).toBe(true);
    expect(parseWorkerConfig({ FOS1_NODE_WORKER: 'false' }).nodeWorker).toBe(false);
    expect(() => parseWorkerConfig({ FOS1_NODE_WORKER: 'false', FOS1_CLUSTER_WORKER: 'false' })).toThrow(/at least one must be true/);
  });
});
