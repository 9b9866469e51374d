/**
 * No authority from a request, node side: a node workflow started directly on a node's
 * task queue — not by a change workflow, so nothing validated its input — validates it
 * itself, and an `ip -batch` injection through a device name never reaches the kernel.
 * Real parts: the Temporal dev server, a network namespace for the node.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { nodeTaskQueue } from '../../model/naming';
import { describePrivileged } from '../helpers/capabilities';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-direct';
const INJECTION = 'lan0\nlink add evil type bridge';

describePrivileged('node workflow started directly on the node queue (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let workers: RunningWorkers;
  const pinDir = `/sys/fs/bpf/fos1-test-direct-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create('fos1dir');
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });
  });

  afterAll(async () => {
    await workers?.stop();
    removePinnedBlocklist(pinDir);
    ns?.destroy();
    await env?.teardown();
  });

  const links = () => execFileSync('ip', ['-n', ns.name, '-o', 'link', 'show']).toString().replace(/\s+\d+ bytes.*$/gm, '');
  const routes = () => ns.routesJson(DEFAULT_ROUTE_PROTOCOL);

  /** Starts the node workflow by its type name, as anyone with access to the queue could. */
  async function startDirect(input: unknown): Promise<{ type?: string; message?: string }> {
    const handle = await env.client.workflow.start('nodeChangeWorkflow', { taskQueue: nodeTaskQueue(NODE), workflowId: `direct-${randomBytes(3).toString('hex')}`, args: [input] });
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    return (err as WorkflowFailedError).cause as { type?: string; message?: string };
  }

  test('a newline in a device name fails validation, and ip link shows nothing new', async () => {
    const linksBefore = links();
    const routesBefore = routes();
    const cause = await startDirect({
      changeId: 'direct-1',
      author: 'mallory',
      node: NODE,
      dryRun: false,
      patch: { interfaces: { upsert: [{ name: INJECTION, mtu: 1400 }] }, routes: { upsert: [{ destination: '10.66.0.0/24', gateway: LAN_GATEWAY_V4, device: INJECTION }] } },
    });
    expect(cause.type).toBe('InvalidNodeChangeInput');
    expect(cause.message).toContain('patch.interfaces.upsert[0].name: must be an interface name');
    expect(cause.message).toContain('patch.routes.upsert[0].device: must be an interface name');
    expect(links()).toBe(linksBefore);
    expect(links()).not.toContain('evil');
    expect(routes()).toEqual(routesBefore);
  });

  test('an input with a bad node name or unknown fields is refused before anything is read', async () => {
    const other = await startDirect({ changeId: 'direct-2', author: 'mallory', node: 'Router 9', dryRun: false, patch: {} });
    expect(other).toMatchObject({ type: 'InvalidNodeChangeInput', message: expect.stringContaining('node: must be a node name') });
    const extra = await startDirect({ changeId: 'direct-3', author: 'mallory', node: NODE, dryRun: true, desired: {}, guard: { minPrefixLengthV4: 0 } });
    expect(extra).toMatchObject({ type: 'InvalidNodeChangeInput', message: expect.stringContaining('Unrecognized key: "guard"') });
  });

  test('a valid input started directly still runs (the check refuses only what is invalid)', async () => {
    const handle = await env.client.workflow.start('nodeChangeWorkflow', {
      taskQueue: nodeTaskQueue(NODE),
      workflowId: `direct-${randomBytes(3).toString('hex')}`,
      args: [{ changeId: 'direct-4', author: 'alice', node: NODE, dryRun: true, patch: { routes: { upsert: [{ destination: '10.66.0.0/24', gateway: LAN_GATEWAY_V4 }] } } }],
    });
    const result = (await handle.result()) as { outcome: string; diff: string[] };
    expect(result.outcome).toBe('planned');
    expect(result.diff).toEqual([expect.stringContaining('+ route 10.66.0.0/24 via 10.77.0.1')]);
  });
});
