/**
 * The worker process's readiness endpoint (`FOS1_HEALTH_PORT`): `GET /readyz` answers 200 only
 * when every worker of the process is `RUNNING` *and* Temporal's DescribeTaskQueue lists that
 * worker's identity among the pollers of its task queue (workflow and activity tasks), else 503
 * with the reasons. "Running" alone is not enough for the node DaemonSet's rolling update: a
 * worker can be RUNNING while its polls do not reach the server (wrong namespace, TLS, network),
 * and the update must not move to the next node until this one takes work again.
 *
 * Anything else (`/`, other methods) is 404/405; the body never carries configuration.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { temporal } from '@temporalio/proto';

/** What readiness needs of a worker (a `@temporalio/worker` Worker has it). */
export interface PolledWorker {
  getState(): string;
  readonly options: { readonly taskQueue: string; readonly identity: string; readonly namespace: string };
}

/** The one Temporal call readiness makes (a NativeConnection's or Connection's `workflowService`). */
export interface TaskQueueDescriber {
  describeTaskQueue(request: temporal.api.workflowservice.v1.IDescribeTaskQueueRequest): Promise<temporal.api.workflowservice.v1.IDescribeTaskQueueResponse>;
}

/** The verdict of one readiness check. */
export interface Readiness {
  ready: boolean;
  /** Why not, one line per unready worker and task type (empty when ready). */
  reasons: string[];
}

const TASK_TYPES = [
  ['workflow', temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW],
  ['activity', temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY],
] as const;

/** Checks every worker: RUNNING, and listed as a poller of its queue for both task types. */
export async function checkReadiness(workers: readonly PolledWorker[], service: TaskQueueDescriber): Promise<Readiness> {
  if (workers.length === 0) return { ready: false, reasons: ['no worker in this process'] };
  const reasons: string[] = [];
  for (const worker of workers) {
    const { taskQueue, identity, namespace } = worker.options;
    const state = worker.getState();
    if (state !== 'RUNNING') {
      // Not polling yet (or any more); the poller list may still show a stopped worker for a
      // few minutes, so the state is checked first and alone decides in that case.
      reasons.push(`${taskQueue}: worker is ${state}`);
      continue;
    }
    for (const [name, taskQueueType] of TASK_TYPES) {
      try {
        const response = await service.describeTaskQueue({ namespace, taskQueue: { name: taskQueue }, taskQueueType });
        if (!(response.pollers ?? []).some((p) => p.identity === identity)) reasons.push(`${taskQueue}: ${identity} is not yet polling its ${name} tasks`);
      } catch (err) {
        reasons.push(`${taskQueue}: DescribeTaskQueue failed (${err instanceof Error ? err.message : String(err)})`);
      }
    }
  }
  return { ready: reasons.length === 0, reasons };
}

/** Options of {@link startReadinessServer}. */
export interface ReadinessServerOptions {
  port: number;
  host: string;
  check: () => Promise<Readiness>;
}

/** Serves `GET /readyz` (200 `ok`, or 503 with the reasons); resolves once it listens. */
export async function startReadinessServer(options: ReadinessServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/readyz') return void res.writeHead(404).end();
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    options.check().then(
      (r) => res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' }).end(r.ready ? 'ok\n' : `${r.reasons.join('\n')}\n`),
      () => res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end('readiness check failed\n'),
    );
  });
  // A probe that hangs would hold a socket; the kubelet's own timeout is shorter anyway.
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** The port a server listens on (for port 0). */
export function listeningPort(server: Server): number {
  return (server.address() as AddressInfo).port;
}
