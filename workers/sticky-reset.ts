/**
 * A restarted worker's first act: tell the server to stop routing the running workflows of
 * its task queues to the sticky queue of the process it replaces.
 *
 * Why: a worker caches the workflows it ran and the server sends their next workflow task to
 * that worker's own sticky queue. A worker that was SIGKILLed never says goodbye, so for every
 * such workflow the server waits `stickyQueueScheduleToStartTimeout` (3 s, WORKER_RECOVERY_OPTIONS)
 * before it tries the normal queue — and a change is a chain of workflows (change → wave → node)
 * that each wait in turn: the chaos harness measured two sequential 3 s waits in most
 * cluster-worker cells (test/chaos/RESULTS.md). `ResetStickyTaskQueue` is the API for exactly
 * this ("for workers to perform if … the worker is restarted"); the server's own detection of
 * a gone sticky poller takes 10 s and is not configurable.
 *
 * Cost: one visibility list per task queue and one call per running workflow (at most
 * {@link MAX_RESETS} per queue, a few at a time). A workflow whose sticky worker is alive
 * (another replica) only loses its cache once: its next task is replayed from history on
 * whichever worker polls the normal queue. Never fatal: a failure is logged and start-up goes on.
 */
import type { NativeConnection } from '@temporalio/worker';
import type { Logger } from 'pino';

/** At most this many workflows per task queue are reset (the rest wait out the sticky time-out). */
export const MAX_RESETS = 1000;
const CONCURRENCY = 8;

/** Resets the sticky queue of every running workflow of `taskQueues`; returns how many were reset. */
export async function resetStickyQueues(connection: NativeConnection, namespace: string, taskQueues: string[], logger: Logger): Promise<number> {
  const service = connection.workflowService;
  let reset = 0;
  for (const taskQueue of taskQueues) {
    const executions: { workflowId: string; runId: string }[] = [];
    try {
      let nextPageToken: Uint8Array | undefined;
      do {
        const page = await service.listWorkflowExecutions({ namespace, query: `TaskQueue = "${taskQueue}" AND ExecutionStatus = "Running"`, pageSize: 200, ...(nextPageToken ? { nextPageToken } : {}) });
        for (const e of page.executions ?? []) if (e.execution?.workflowId && e.execution.runId) executions.push({ workflowId: e.execution.workflowId, runId: e.execution.runId });
        nextPageToken = page.nextPageToken && page.nextPageToken.length > 0 ? page.nextPageToken : undefined;
      } while (nextPageToken && executions.length < MAX_RESETS);
    } catch (err) {
      logger.warn({ taskQueue, err: err instanceof Error ? err.message : String(err) }, 'could not list running workflows to reset their sticky queue (their next task may wait for the sticky time-out)');
      continue;
    }
    const queue = executions.slice(0, MAX_RESETS);
    const workers = Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
      for (let execution = queue.shift(); execution !== undefined; execution = queue.shift()) {
        try {
          await service.resetStickyTaskQueue({ namespace, execution });
          reset++;
        } catch {
          // Finished in the meantime, or not ours to reset: nothing to do.
        }
      }
    });
    await Promise.all(workers);
  }
  if (reset > 0) logger.info({ taskQueues, reset }, 'reset the sticky queue of running workflows (a restarted worker picks their next task up at once)');
  return reset;
}
