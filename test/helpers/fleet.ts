/**
 * A sandbox fleet for tests (scripts/sandbox-netns.ts): `router-1..N` namespaces wired to an
 * upstream bridge with its TCP service, a private bpffs folder per node, and node workers on
 * a real Temporal server, one per node task queue (several in this one process, as `npm start`
 * runs them).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker, WorkflowBundle } from '@temporalio/worker';
import pino from 'pino';
import { ensureSandboxFleet, removeSandboxFleet, sandboxFleetLayout, startUpstreamService, type SandboxFleet, type SandboxFleetNode } from '../../scripts/sandbox-netns';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import type { InventorySource } from '../../activities/inventory';
import { testAuditStores } from './audit-stores';
import { workflowBundle as defaultBundle } from './temporal';

/** A fleet created for one test file; `destroy()` removes its namespaces and pin folders. */
export interface TestFleet extends SandboxFleet {
  /** The bpffs folder of a node (not created until something pins there). */
  pinDir(node: SandboxFleetNode): string;
  /** The node's blocklist store folder. */
  storeDir(node: SandboxFleetNode): string;
  destroy(): void;
}

/** Creates a fleet of `size` nodes with unique namespace names, and starts the upstream's TCP service. */
export async function createTestFleet(size: number): Promise<TestFleet> {
  const id = randomBytes(3).toString('hex');
  const layout = sandboxFleetLayout({ prefix: `ft${id}`, size });
  ensureSandboxFleet(layout);
  let service: ChildProcess | undefined;
  try {
    service = await startUpstreamService(layout);
  } catch (err) {
    removeSandboxFleet(layout);
    throw err;
  }
  const pinDir = (node: SandboxFleetNode) => `/sys/fs/bpf/fos1-ft${id}-${node.index}`;
  const storeDir = (node: SandboxFleetNode) => join(tmpdir(), `fos1-ft${id}-store-${node.index}`);
  return {
    ...layout,
    pinDir,
    storeDir,
    destroy() {
      service?.kill('SIGTERM');
      removeSandboxFleet(layout);
      for (const node of layout.nodes) {
        rmSync(pinDir(node), { recursive: true, force: true });
        rmSync(storeDir(node), { recursive: true, force: true });
      }
    },
  };
}

/** Workers of a fleet: per node, and stop one node's or all. */
export interface FleetWorkers {
  byNode: Map<string, Worker[]>;
  /** Stops one node's workers (its queue then has no poller). */
  stopNode(name: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a node worker per fleet node (or per listed node) on `env`, and the cluster worker
 * with router-1's unless `clusterWorker` is false; `inventory` goes to the cluster worker.
 */
export async function startFleetWorkers(
  env: TestWorkflowEnvironment,
  fleet: TestFleet,
  options: { nodes?: string[]; clusterWorker?: boolean; inventory?: InventorySource; workflowBundle?: WorkflowBundle; identityKeys?: { api?: Buffer; controller?: Buffer } } = {},
): Promise<FleetWorkers> {
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  const bundle = options.workflowBundle ?? (await defaultBundle());
  const byNode = new Map<string, Worker[]>();
  const running = new Map<string, Promise<unknown>>();
  const nodes = fleet.nodes.filter((n) => !options.nodes || options.nodes.includes(n.name));
  // The cluster worker appends every workflow's audit records: a fresh file store per fleet.
  const audit = options.clusterWorker ?? true ? testAuditStores() : undefined;
  for (const [i, node] of nodes.entries()) {
    const clusterWorker = i === 0 && (options.clusterWorker ?? true);
    const workers = await createWorkers({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      nodeName: node.name,
      clusterWorker,
      ...(clusterWorker && audit ? { audit } : {}),
      // The identity keys the cluster worker verifies assertions with (the API's, the controllers').
      ...(clusterWorker && options.identityKeys?.api ? { identityKey: options.identityKeys.api } : {}),
      ...(clusterWorker && options.identityKeys?.controller ? { controllerIdentityKey: options.identityKeys.controller } : {}),
      ...(options.inventory ? { inventory: options.inventory } : {}),
      nodeDeps: createNodeDeps(
        { netns: node.netns, routeProtocol: 241, bpfPinDir: fleet.pinDir(node), blocklistMaxEntries: { v4: 64, v6: 64 }, blocklistStoreDir: fleet.storeDir(node) },
        logger.child({ node: node.name }),
      ),
      logger,
      workflowBundle: bundle,
    });
    byNode.set(node.name, workers);
    running.set(node.name, Promise.all(workers.map((w) => w.run())));
  }
  const stopNode = async (name: string) => {
    byNode.get(name)?.forEach((w) => w.shutdown());
    await running.get(name);
    byNode.delete(name);
    running.delete(name);
  };
  return {
    byNode,
    stopNode,
    async stop() {
      await Promise.all([...byNode.keys()].map(stopNode));
      await audit?.close();
    },
  };
}
