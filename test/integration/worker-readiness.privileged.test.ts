/**
 * The worker's readiness endpoint (workers/readiness.ts) against a real Temporal dev server:
 * 503 before the worker runs, 200 once Temporal lists it as a poller of its queue, 503 again
 * once it shuts down. Then the entry point
 * itself (workers/main.ts, configured as the Helm chart's DaemonSet configures it) answers
 * 200 on FOS1_HEALTH_PORT once it polls.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import pino from 'pino';
import { nodeTaskQueue } from '../../model/naming';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { checkReadiness, listeningPort, startReadinessServer } from '../../workers/readiness';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { startTemporal, workflowBundle } from '../helpers/temporal';

const REPO = resolve(__dirname, '../..');
const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });

async function readyz(port: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.text() };
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

describePrivileged('worker readiness (GET /readyz) on a real Temporal server', ['temporal-cli'], () => {
  let env: TestWorkflowEnvironment;

  beforeAll(async () => {
    env = await startTemporal();
  }, 120_000);
  afterAll(async () => {
    await env?.teardown();
  });

  describe('the endpoint over createWorkers', () => {
    const nodeName = `ready-${process.pid}`;
    let worker: Worker;
    let server: Server;
    let port: number;
    let running: Promise<void> | undefined;

    beforeAll(async () => {
      const workers = await createWorkers({
        connection: env.nativeConnection,
        namespace: env.namespace ?? 'default',
        nodeName,
        clusterWorker: false,
        // Never called here: no activity is scheduled on this queue.
        nodeDeps: createNodeDeps({ netns: `fos1-unused-${process.pid}`, routeProtocol: 241, bpfPinDir: `/sys/fs/bpf/fos1-unused-${process.pid}`, blocklistMaxEntries: { v4: 16, v6: 16 } }, logger),
        logger,
        workflowBundle: await workflowBundle(),
      });
      expect(workers).toHaveLength(1);
      worker = workers[0] as Worker;
      server = await startReadinessServer({ port: 0, host: '127.0.0.1', check: () => checkReadiness([worker], env.nativeConnection.workflowService) });
      port = listeningPort(server);
    }, 180_000);
    afterAll(async () => {
      if (worker?.getState() === 'RUNNING') worker.shutdown();
      await running;
      server?.close();
    });

    it('is not ready before the worker runs', async () => {
      expect(worker.getState()).toBe('INITIALIZED');
      expect(await readyz(port)).toEqual({ status: 503, body: `${nodeTaskQueue(nodeName)}: worker is INITIALIZED\n` });
    });

    it('is ready once Temporal lists the worker as a poller of its queue', async () => {
      running = worker.run();
      const ready = await eventually(() => readyz(port), (r) => r.status === 200, '/readyz to answer 200', 60_000, 100);
      expect(ready.body).toBe('ok\n');
      // What 200 stands for, read back from the server independently of the endpoint.
      const described = await env.nativeConnection.workflowService.describeTaskQueue({
        namespace: env.namespace ?? 'default',
        taskQueue: { name: nodeTaskQueue(nodeName) },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
      expect((described.pollers ?? []).map((p) => p.identity)).toContain(worker.options.identity);
    });

    it('answers 404 for other paths and 405 for other methods', async () => {
      expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`, { method: 'POST' })).status).toBe(405);
    });

    it('is not ready again once the worker shuts down (the state decides, whatever the poller list says)', async () => {
      worker.shutdown();
      await running;
      const r = await readyz(port);
      expect(r.status).toBe(503);
      expect(r.body).toMatch(/worker is (STOPPED|DRAINED)/);
    });
  });

  describe('the entry point (workers/main.ts) as the DaemonSet runs it', () => {
    let child: ChildProcess | undefined;
    let storeDir: string;
    let output = '';

    afterAll(async () => {
      if (child && child.exitCode === null) {
        const exited = new Promise((r) => child?.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (storeDir) rmSync(storeDir, { recursive: true, force: true });
    });

    it('answers 200 on FOS1_HEALTH_PORT once it polls its node queue', async () => {
      const port = await freePort();
      storeDir = mkdtempSync(join(tmpdir(), 'fos1-ready-store-'));
      child = spawn(join(REPO, 'node_modules/.bin/tsx'), ['workers/main.ts'], {
        cwd: REPO,
        env: {
          PATH: process.env.PATH,
          TEMPORAL_ADDRESS: env.address,
          TEMPORAL_NAMESPACE: env.namespace ?? 'default',
          FOS1_NODE_NAME: `ready-main-${process.pid}`,
          FOS1_CLUSTER_WORKER: 'false',
          FOS1_HEALTH_PORT: String(port),
          FOS1_BPF_PIN_DIR: `/sys/fs/bpf/fos1-ready-${process.pid}`,
          FOS1_BLOCKLIST_STORE_DIR: storeDir,
          LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      // Workflow bundling at start takes a while on a busy machine; the probe says "no" meanwhile
      // (connection refused before the endpoint listens, 503 before the worker polls).
      const probe = async () => {
        if (child?.exitCode !== null) throw new Error(`worker exited (${child?.exitCode}): ${output}`);
        return readyz(port).catch(() => ({ status: 0, body: 'not listening' }));
      };
      const ready = await eventually(probe, (r) => r.status === 200, `workers/main.ts /readyz 200 (output: ${output.slice(-500)})`, 150_000, 250);
      expect(ready.body).toBe('ok\n');
      expect(output).toContain('readiness endpoint listening (GET /readyz)');
    }, 180_000);
  });
});
