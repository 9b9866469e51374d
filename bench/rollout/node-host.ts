/**
 * One process of simulated router nodes for bench/rollout/run.ts: a node worker (one `Worker`,
 * one node task queue) for each node it is given, acting on that node's network namespace and
 * pinned maps — what N router machines would each run, packed N to a process to fit memory.
 *
 * Kept apart from the cluster worker on purpose: on a real fleet the node workers run on other
 * machines, and sharing one event loop with them would charge their workflow tasks to fos1's
 * cluster-side overhead (the first layout did: 33 node workflows starting on the main thread
 * delayed the wave's own workflow task by over a second).
 *
 * Reads one JSON line from stdin (the {@link NodeHostConfig}), prints `ready` once every worker
 * polls, and shuts its workers down on SIGTERM or when stdin closes.
 */
import { createInterface } from 'node:readline';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import pino from 'pino';
import { createNodeGateActivities } from '../../activities/gates';
import { createNodeActivities } from '../../activities/node-activities';
import { nodeTaskQueue } from '../../model/naming';
import { auditSinks, createNodeDeps, type NodeTarget } from '../../workers/fos1-worker';

/** What the bench hands a host. */
export interface NodeHostConfig {
  address: string;
  namespace: string;
  /** A workflow bundle the bench built once (`bundleWorkflowCode`), written to a file. */
  workflowBundlePath: string;
  nodes: { name: string; target: NodeTarget }[];
  /** Workflows on the host's main thread (`debugMode`) instead of a worker thread per node worker. */
  mainThreadWorkflows?: boolean;
  /** With `mainThreadWorkflows`: keep the SDK's stack-trace promise hook on (see stopStackTraceHook). */
  keepStackTraceHook?: boolean;
}

async function main(): Promise<void> {
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    rl.once('line', (l) => {
      resolve(l);
      rl.close();
    });
    rl.once('close', () => reject(new Error('node host: stdin closed before the config line')));
  });
  const config = JSON.parse(line) as NodeHostConfig;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const logger = pino({ level: 'silent' });
  const connection = await NativeConnection.connect({ address: config.address });
  const workers: Worker[] = [];
  for (const node of config.nodes) {
    const deps = createNodeDeps(node.target, logger);
    workers.push(
      await Worker.create({
        connection,
        namespace: config.namespace,
        taskQueue: nodeTaskQueue(node.name),
        workflowBundle: { codePath: config.workflowBundlePath },
        activities: { ...createNodeActivities(deps), ...createNodeGateActivities(deps.gates ?? { netns: node.target.netns, bpfPinDir: node.target.bpfPinDir }) },
        sinks: auditSinks(logger),
        maxConcurrentActivityTaskExecutions: 1,
        ...(config.mainThreadWorkflows ? { debugMode: true } : { workflowThreadPoolSize: 1 }),
        maxConcurrentWorkflowTaskPolls: 2,
        maxConcurrentActivityTaskPolls: 2,
      }),
    );
  }
  if (config.mainThreadWorkflows && !config.keepStackTraceHook) stopStackTraceHook();
  const running = Promise.all(workers.map((w) => w.run()));
  const stop = () => workers.forEach((w) => w.shutdown());
  process.once('SIGTERM', stop);
  process.stdin.once('close', stop);
  process.stdout.write('ready\n');
  await running;
  await connection.close();
}

/**
 * Removes the SDK's stack-trace promise hook from this process. With `debugMode` the SDK
 * installs it on the main thread, where it runs for every promise of every node worker's
 * pollers and activities — compiling a function per promise to find its workflow — ~20 % of a
 * host's CPU in a V8 profile. A real node worker runs its workflows in a worker thread, where
 * the hook sees only workflow promises; the simulated nodes should not cost more than real ones
 * on the cores the bench shares with the server. Only the `__stack_trace` query loses detail.
 */
function stopStackTraceHook(): void {
  // Internal to the SDK (1.24): checked, so a newer SDK only loses the saving, with a note.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const shared = require('@temporalio/worker/lib/workflow/vm-shared') as { globalHandlers?: { stopPromiseHook?: () => void; promiseHookInstalled?: boolean } };
  const handlers = shared.globalHandlers;
  if (typeof handlers?.stopPromiseHook !== 'function') {
    console.error('node host: the SDK has no globalHandlers.stopPromiseHook; the stack-trace hook stays on');
    return;
  }
  handlers.stopPromiseHook();
  handlers.promiseHookInstalled = false;
}

void main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
