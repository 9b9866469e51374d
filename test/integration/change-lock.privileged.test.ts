/**
 * One change at a time per node, and multi-node all-or-nothing, on real parts: the Temporal
 * dev server, two network namespaces standing in for two nodes, pinned maps for each.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { changeWorkflow, confirmUpdate } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure, waitForPhase } from '../helpers/change-client';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

describePrivileged('change lock and multi-node rollback (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let nsA: TestNamespace;
  let nsB: string;
  const pinA = `/sys/fs/bpf/fos1-test-lock-a-${randomBytes(4).toString('hex')}`;
  const pinB = `/sys/fs/bpf/fos1-test-lock-b-${randomBytes(4).toString('hex')}`;
  let workers: RunningWorkers[] = [];
  let mapsA: BlocklistMaps;

  beforeAll(async () => {
    env = await startTemporal();
    nsA = TestNamespace.create('fos1lka');
    // Node B has loopback only: a route via the LAN gateway is refused there by the kernel.
    nsB = `fos1lkb-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', nsB]);
    execFileSync('ip', ['-n', nsB, 'link', 'set', 'lo', 'up']);
    const target = (netns: string, bpfPinDir: string) => ({ netns, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });
    workers = [await startWorkers(env, 'node-a', target(nsA.name, pinA)), await startWorkers(env, 'node-b', target(nsB, pinB), { clusterWorker: false })];
    mapsA = BlocklistMaps.open({ pinDir: pinA, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 64, maxEntriesV6: 64 } });
  });

  afterAll(async () => {
    for (const w of workers) await w.stop();
    mapsA?.close();
    removePinnedBlocklist(pinA);
    removePinnedBlocklist(pinB);
    nsA?.destroy();
    if (nsB) execFileSync('ip', ['netns', 'del', nsB]);
    await env?.teardown();
  });

  let sequence = 0;
  function start(overrides: Partial<ChangeRequestInput>): Promise<WorkflowHandle<typeof changeWorkflow>> {
    const req = { id: `lock-${++sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'lock test', targets: ['node-a'], ...overrides } as ChangeRequestInput;
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }
  const block = (cidr: string) => ({ patch: { blocklist: { upsert: [{ cidr, reason: 'lock test' }] } } });
  const blockedA = () => mapsA.readAll().map((e) => e.cidr);

  test('a second change waits while a provisional one holds the node, then lands on top of it once confirmed', async () => {
    const first = await start({ ...block('192.0.2.1'), options: { confirmTimeout: '30s' } });
    await waitForPhase(first, 'awaiting-confirmation');
    const second = await start(block('192.0.2.2'));
    const waiting = await waitForPhase(second, 'waiting-for-node');
    expect(waiting.message).toContain('waiting for node node-a: another change holds it (workflow node-change/node-a)');
    expect(blockedA()).not.toContain('192.0.2.2/32');

    await first.executeUpdate(confirmUpdate, { args: [{ by: 'bob' }] });
    expect((await first.result()).phase).toBe('applied');
    expect((await second.result()).phase).toBe('applied');
    expect(blockedA()).toEqual(expect.arrayContaining(['192.0.2.1/32', '192.0.2.2/32']));
  });

  test('a provisional change that reverts does not wipe the change that waited for it', async () => {
    const before = blockedA();
    const first = await start({ ...block('192.0.2.11'), options: { confirmTimeout: '2s' } });
    await waitForPhase(first, 'awaiting-confirmation');
    const second = await start(block('192.0.2.12'));
    await waitForPhase(second, 'waiting-for-node');

    expect((await first.result()).phase).toBe('reverted'); // not confirmed in time
    expect((await second.result()).phase).toBe('applied');
    // The revert restored the first change's snapshot *before* the second one read its own:
    // the second change's block stays, the first one's is gone.
    expect(blockedA().sort()).toEqual([...before, '192.0.2.12/32'].sort());
  });

  test('a node that stays busy past lockTimeout fails the change with NodeBusy and changes nothing', async () => {
    const first = await start({ ...block('192.0.2.21'), options: { confirmTimeout: '30s' } });
    await waitForPhase(first, 'awaiting-confirmation');
    const afterFirst = blockedA();
    const second = await start({ ...block('192.0.2.22'), options: { lockTimeout: '2s' } });
    const { type, status } = await changeFailure(second);
    expect(type).toBe('NodeBusy');
    expect(status.message).toContain('node node-a stayed busy with another change for 2s');
    expect(blockedA()).toEqual(afterFirst);
    await first.executeUpdate(confirmUpdate, { args: [{ by: 'bob' }] });
    await first.result();
  });

  test('when the second node refuses the change, the first node (holding) is restored exactly', async () => {
    const routesBefore = nsA.routesJson(DEFAULT_ROUTE_PROTOCOL);
    const blocksBefore = blockedA();
    const handle = await start({
      targets: ['node-a', 'node-b'],
      patch: { routes: { upsert: [{ destination: '10.88.0.0/24', gateway: LAN_GATEWAY_V4 }] }, blocklist: { upsert: [{ cidr: '192.0.2.31', reason: 'multi' }] } },
    });
    const { type, status } = await changeFailure(handle);
    expect(type).toBe('ChangeRolledBack');
    expect(status.nodes['node-b']).toMatchObject({ outcome: 'rolled-back', error: { type: 'RouteApplyFailed' } });
    expect(status.nodes['node-a']?.outcome).toBe('restored');
    // node-a had applied and verified before node-b failed; it is back to its snapshot.
    expect(status.audit.filter((r) => r.node === 'node-a').map((r) => `${r.step}:${r.result}`)).toEqual(
      expect.arrayContaining(['routes:ok', 'blocklist:ok', 'verify:ok', 'restore requested:ok', 'verify rollback:ok']),
    );
    expect(nsA.routesJson(DEFAULT_ROUTE_PROTOCOL)).toEqual(routesBefore);
    expect(blockedA()).toEqual(blocksBefore);
  });

  test('a multi-node change that succeeds commits every node and frees their locks', async () => {
    const handle = await start({ targets: ['node-a', 'node-b'], ...block('192.0.2.41') });
    const status = await handle.result();
    expect(status.phase).toBe('applied');
    expect(status.nodes['node-a']?.outcome).toBe('applied');
    expect(status.nodes['node-b']?.outcome).toBe('applied');
    expect(blockedA()).toContain('192.0.2.41/32');
    // The locks are free again: a follow-up change on both nodes does not wait.
    const next = await start({ targets: ['node-a', 'node-b'], patch: { blocklist: { remove: ['192.0.2.41'] } }, options: { lockTimeout: '2s' } });
    expect((await next.result()).phase).toBe('applied');
    expect(blockedA()).not.toContain('192.0.2.41/32');
  });
});
