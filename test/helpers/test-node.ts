/**
 * The start-up most integration tests share: a Temporal dev server, a network namespace
 * standing in for the node, a bpffs folder for its maps, and the cluster and node workers
 * acting on them; `stop()` takes it all down again (in the reverse order).
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { NodeTarget } from '../../workers/fos1-worker';
import { TestNamespace } from './netns';
import { startTemporal, startWorkers, type RunningWorkers } from './temporal';

/** What {@link startTestNode} started. */
export interface TestNode {
  env: TestWorkflowEnvironment;
  /** The node's namespace, when this helper made it (not with `netns`). */
  ns?: TestNamespace;
  /** The namespace the node worker acts on. */
  netns: string;
  pinDir: string;
  /** The running workers (replaced by {@link TestNode.startWorkers}). */
  workers: RunningWorkers;
  /** The node's blocklist maps, opened by the test's side too, when asked for (`openMaps`). */
  maps?: BlocklistMaps;
  /** Starts the workers again with the same options, after the test stopped them (a worker restart). */
  startWorkers(): Promise<RunningWorkers>;
  /** Stops the workers, closes the maps, removes what this helper made (pins, namespace), stops the server. */
  stop(): Promise<void>;
}

/** Options of {@link startTestNode}. */
export interface TestNodeOptions {
  node: string;
  /** Prefix of the namespace's name (TestNamespace.create). */
  nsPrefix?: string;
  /** A namespace the test made (a veth pair's end, say): used as is, and left to the test. */
  netns?: string;
  /** Prefix of the bpffs folder, under /sys/fs/bpf (a random suffix is added). */
  pinPrefix?: string;
  /** A bpffs folder the test made (a datapath pinned there first): used as is, and left to the test. */
  pinDir?: string;
  /** Blocklist capacities (default 64 and 64). */
  blocklist?: { v4: number; v6: number };
  /** Open the node's blocklist maps on the test's side too (read what the node wrote). */
  openMaps?: boolean;
  /** More of the node target (a resolv.conf, say). */
  target?: Partial<NodeTarget>;
  /** startWorkers' options (identity key, approval policy, Cilium, guard…). */
  workers?: Parameters<typeof startWorkers>[3];
  /** startTemporal's options. */
  temporal?: Parameters<typeof startTemporal>[0];
}

/** Starts a Temporal server, a namespace, and the workers for one node acting on them. */
export async function startTestNode(options: TestNodeOptions): Promise<TestNode> {
  const env = await startTemporal(options.temporal);
  const ns = options.netns === undefined ? TestNamespace.create(options.nsPrefix) : undefined;
  const netns = options.netns ?? (ns as TestNamespace).name;
  const pinDir = options.pinDir ?? `/sys/fs/bpf/${options.pinPrefix ?? 'fos1-test'}-${randomBytes(4).toString('hex')}`;
  const { v4, v6 } = options.blocklist ?? { v4: 64, v6: 64 };
  const target: NodeTarget = { netns, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4, v6 }, ...options.target };
  const start = () => startWorkers(env, options.node, target, options.workers);
  let stopped = false;
  const node: TestNode = {
    env,
    ...(ns ? { ns } : {}),
    netns,
    pinDir,
    workers: await start(),
    async startWorkers() {
      node.workers = await start();
      return node.workers;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await node.workers.stop();
      node.maps?.close();
      if (options.pinDir === undefined) {
        removePinnedBlocklist(pinDir);
        // The node's other pins (rate-limit maps) and the folder itself.
        rmSync(pinDir, { recursive: true, force: true });
      }
      ns?.destroy();
      await env.teardown();
    },
  };
  if (options.openMaps) node.maps = BlocklistMaps.open({ pinDir, maxEntriesV4: v4, maxEntriesV6: v6, hostMaps: { maxEntriesV4: v4, maxEntriesV6: v6 } });
  return node;
}
