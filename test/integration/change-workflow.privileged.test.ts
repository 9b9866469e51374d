/**
 * The change workflow end to end on real parts: the Temporal dev server, a network
 * namespace standing in for the node, and blocklist maps pinned in bpffs.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { BlocklistMaps } from '../../bpf/blocklist-maps';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId, SearchAttributes } from '../../model/naming';
import { changeWorkflow, confirmUpdate, type ChangeStatus } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure, waitForPhase } from '../helpers/change-client';
import { LAN_GATEWAY_V4, LAN_GATEWAY_V6, type TestNamespace } from '../helpers/netns';
import { startTestNode, type TestNode } from '../helpers/test-node';

const NODE = 'node-a';
/** Small on purpose: test (b) overflows it through the real kernel. */
const MAP_CAPACITY_V4 = 8;

describePrivileged('change workflow on a real node (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let node: TestNode;
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let maps: BlocklistMaps;
  let sequence = 0;

  beforeAll(async () => {
    node = await startTestNode({ node: NODE, blocklist: { v4: MAP_CAPACITY_V4, v6: 64 }, openMaps: true });
    ({ env } = node);
    ns = node.ns!;
    maps = node.maps!;
  });

  afterAll(async () => {
    await node?.stop();
  });

  /** A fresh change id for each request, so workflow ids never collide. */
  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `test-${sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'integration test', targets: [NODE], ...overrides } as ChangeRequestInput;
  }

  function start(req: ChangeRequestInput): Promise<WorkflowHandle<typeof changeWorkflow>> {
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }

  async function run(req: ChangeRequestInput): Promise<ChangeStatus> {
    return (await start(req)).result();
  }

  /** Runs a change that must fail; returns the workflow's status from the failure details. */
  async function runFailing(req: ChangeRequestInput): Promise<{ type: string | undefined; status: ChangeStatus }> {
    return changeFailure(await start(req));
  }

  /** Kernel state as raw tools see it: `ip -json` routes with fos1's protocol, and the maps' entries. */
  function kernelState() {
    return { routes: ns.routesJson(DEFAULT_ROUTE_PROTOCOL), blocklist: maps.readAll() };
  }

  /** A baseline every test starts from (applied, so snapshots are not trivially empty). */
  const baseline = {
    routes: [
      { destination: '10.10.0.0/16', gateway: LAN_GATEWAY_V4, table: 100, metric: 10 },
      { destination: '2001:db8:10::/48', gateway: LAN_GATEWAY_V6 },
    ],
    blocklist: [{ cidr: '203.0.113.0/24', reason: 'baseline block' }],
  };

  beforeEach(async () => {
    await run(request({ desired: baseline }));
  });

  test('(a) a change applies: routes in the namespace and the maps read back as desired', async () => {
    const status = await run(
      request({
        desired: {
          routes: [
            { destination: '10.10.0.0/16', gateway: LAN_GATEWAY_V4, table: 100, metric: 10 },
            { destination: '10.20.0.0/24', gateway: LAN_GATEWAY_V4 },
            { destination: '10.30.0.1/32', device: 'lan0', table: 200 },
            { destination: '2001:db8:20::/48', gateway: LAN_GATEWAY_V6, metric: 5 },
          ],
          blocklist: [
            { cidr: '198.51.100.7', reason: 'scanner', expiresAt: '2099-01-01T00:00:00Z' },
            { cidr: '2001:db8:bad::/48', reason: 'abuse' },
          ],
        },
      }),
    );
    expect(status.phase).toBe('applied');
    expect(status.nodes[NODE]?.outcome).toBe('applied');

    const [v4, v6] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as Record<string, unknown>[][];
    expect(v4).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ dst: '10.10.0.0/16', gateway: LAN_GATEWAY_V4, table: '100', metric: 10 }),
        expect.objectContaining({ dst: '10.20.0.0/24', gateway: LAN_GATEWAY_V4, dev: 'lan0' }),
        expect.objectContaining({ dst: '10.30.0.1', dev: 'lan0', table: '200' }),
      ]),
    );
    expect(v4).toHaveLength(3);
    expect(v6).toEqual([expect.objectContaining({ dst: '2001:db8:20::/48', gateway: LAN_GATEWAY_V6, metric: 5 })]);
    expect(maps.readAll()).toEqual([
      { cidr: '198.51.100.7/32', expiresAt: Date.parse('2099-01-01T00:00:00Z') / 1000 },
      { cidr: '2001:db8:bad::/48' },
    ]);
    // The audit trail covers every step on the node, with who and how long.
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(['snapshot:ok', 'plan:ok', 'routes:ok', 'blocklist:ok', 'verify:ok']);
    expect(status.audit.every((r) => r.actor === 'alice' && r.durationMs >= 0)).toBe(true);
  });

  test('(a) the workflow carries its search attributes', async () => {
    const req = request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.99', reason: 'sa check' }] } } });
    await run(req);
    const description = await env.client.workflow.getHandle(changeWorkflowId(req.id)).describe();
    expect(description.typedSearchAttributes.get(SearchAttributes.changeId)).toBe(req.id);
    expect(description.typedSearchAttributes.get(SearchAttributes.author)).toBe('alice');
    expect(description.typedSearchAttributes.get(SearchAttributes.targetNodes)).toEqual([NODE]);
    expect(description.typedSearchAttributes.get(SearchAttributes.status)).toBe('applied');
  });

  test('(b) a route via an unreachable gateway fails in the kernel and everything rolls back exactly', async () => {
    const before = kernelState();
    const { type, status } = await runFailing(
      request({
        desired: {
          routes: [
            { destination: '10.40.0.0/24', gateway: LAN_GATEWAY_V4 }, // applies first…
            { destination: '10.41.0.0/24', gateway: '192.0.2.1' }, // …then the kernel refuses this one
          ],
          blocklist: [{ cidr: '198.51.100.0/24', reason: 'never applied' }],
        },
      }),
    );
    expect(type).toBe('ChangeRolledBack');
    expect(status.phase).toBe('rolled-back');
    expect(status.nodes[NODE]?.error?.type).toBe('RouteApplyFailed');
    expect(status.nodes[NODE]?.error?.message).toMatch(/10\.41\.0\.0\/24 via 192\.0\.2\.1.*Nexthop has invalid gateway/);
    expect(kernelState()).toEqual(before);
  });

  test('(b) more blocklist entries than the map holds: the map refuses, routes and map roll back exactly', async () => {
    const before = kernelState();
    const blocklist = Array.from({ length: MAP_CAPACITY_V4 + 2 }, (_, i) => ({ cidr: `198.51.100.${i + 1}`, reason: 'flood' }));
    const { type, status } = await runFailing(
      request({ patch: { routes: { upsert: [{ destination: '10.50.0.0/24', gateway: LAN_GATEWAY_V4 }] }, blocklist: { upsert: blocklist } } }),
    );
    expect(type).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.error?.type).toBe('BlocklistMapFull');
    expect(status.nodes[NODE]?.error?.message).toMatch(/blockhost_v4.*8/);
    // Routes had been applied before the map filled up; both are back to the snapshot.
    const steps = status.audit.map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining(['routes:ok', 'blocklist:failed', 'restore blocklist:ok', 'restore routes:ok', 'verify rollback:ok']));
    expect(kernelState()).toEqual(before);
  });

  test('(c) dry run changes nothing and returns the plan as a diff', async () => {
    const before = kernelState();
    const status = await run(
      request({
        patch: {
          routes: { upsert: [{ destination: '10.60.0.0/24', gateway: LAN_GATEWAY_V4 }], remove: [{ destination: '10.10.0.0/16', table: 100, metric: 10 }] },
          blocklist: { upsert: [{ cidr: '192.0.2.0/25', reason: 'planned' }] },
        },
        options: { dryRun: true },
      }),
    );
    expect(status.phase).toBe('planned');
    expect(status.nodes[NODE]?.diff).toEqual([
      `+ route 10.60.0.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`,
      `- route 10.10.0.0/16 via ${LAN_GATEWAY_V4} dev lan0 table 100 metric 10`,
      '+ block 192.0.2.0/25 (no expiry)',
    ]);
    expect(kernelState()).toEqual(before);
  });

  test('(d) an unconfirmed change reverts by itself after confirmTimeout', async () => {
    const before = kernelState();
    const handle = await start(request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.128/25', reason: 'provisional' }] } }, options: { confirmTimeout: '2s' } }));
    await waitForPhase(handle, 'awaiting-confirmation');
    expect(maps.readAll().map((e) => e.cidr)).toContain('192.0.2.128/25'); // applied while provisional
    const status = await handle.result();
    expect(status.phase).toBe('reverted');
    expect(status.nodes[NODE]?.outcome).toBe('restored');
    expect(kernelState()).toEqual(before);
  });

  test('(d) a confirmed change stays', async () => {
    const handle = await start(request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.128/25', reason: 'confirmed' }] } }, options: { confirmTimeout: '10s' } }));
    await waitForPhase(handle, 'awaiting-confirmation');
    const afterApply = kernelState();
    await handle.executeUpdate(confirmUpdate, { args: [{ by: 'bob', reason: 'looks good' }] });
    const status = await handle.result();
    expect(status.phase).toBe('applied');
    expect(status.audit).toEqual(expect.arrayContaining([expect.objectContaining({ step: 'confirm', result: 'ok', detail: 'confirmed by bob: looks good' })]));
    expect(kernelState()).toEqual(afterApply);
    expect(afterApply.blocklist.map((e) => e.cidr)).toContain('192.0.2.128/25');
  });

  test('(d) confirm is refused when nothing awaits confirmation', async () => {
    const req = request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.200', reason: 'x' }] } } });
    const handle = await start(req);
    await handle.result();
    await expect(handle.executeUpdate(confirmUpdate, { args: [{ by: 'bob' }] })).rejects.toThrow();
  });

  test('(e) a change carrying cluster policy on a cluster worker without Kubernetes is refused, nothing applied', async () => {
    const before = kernelState();
    const handle = await start(
      request({
        patch: { blocklist: { upsert: [{ cidr: '192.0.2.77', reason: 'never applied' }] } },
        clusterPolicy: { cilium: [{ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'p' }, spec: { endpointSelector: {} } }] },
      }),
    );
    const { type, status } = await changeFailure(handle);
    expect(type).toBe('ClusterPolicyUnavailable');
    expect(status.phase).toBe('rejected');
    expect(status.message).toMatch(/carries cluster policy \(clusterPolicy\) but the cluster worker cannot reach Kubernetes: this cluster worker has no kubeconfig \(FOS1_KUBECONFIG unset\); nothing was applied/);
    const history = await handle.fetchHistory();
    const kinds = (history.events ?? []).map((e) => Object.keys(e).find((k) => k.endsWith('EventAttributes')));
    expect(kinds).not.toContain('startChildWorkflowExecutionInitiatedEventAttributes');
    expect(kernelState()).toEqual(before);
  });

  test('(e) invalid input never reaches an apply activity, and the error names the field and the rule', async () => {
    const before = kernelState();
    const handle = await start(
      request({ desired: { routes: [{ destination: '10.70.0.1/24', gateway: LAN_GATEWAY_V4 }], blocklist: [{ cidr: '192.0.2.0/24', reason: '' }] } }),
    );
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as { type?: string; message: string };
    expect(cause.type).toBe('InvalidChangeRequest');
    expect(cause.message).toContain('desired.routes[0].destination: "10.70.0.1/24" has host bits set; did you mean 10.70.0.0/24?');
    expect(cause.message).toContain('desired.blocklist[0].reason: must say why the range is blocked');
    // No child workflow, so no node activity, ran: the history has no child-workflow events,
    // and the only activity is the one that stores the refusal in the durable audit.
    const history = await handle.fetchHistory();
    const kinds = (history.events ?? []).map((e) => Object.keys(e).find((k) => k.endsWith('EventAttributes')));
    expect(kinds).not.toContain('startChildWorkflowExecutionInitiatedEventAttributes');
    const activities = (history.events ?? []).flatMap((e) => (e.activityTaskScheduledEventAttributes ? [e.activityTaskScheduledEventAttributes.activityType?.name] : []));
    expect(activities).toEqual(['appendAudit']);
    expect(kernelState()).toEqual(before);
  });

});
