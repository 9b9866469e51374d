/**
 * Rollback of multi-step network changes, through the real change workflow: the Temporal
 * dev server, the node worker acting on a network namespace, iproute2 and nftables.
 *
 * A fault is injected after each step k of one change (links, addresses, routes, rules,
 * zones, NAT) — in the activity, after it changed the kernel — and afterwards the namespace's
 * `ip -json` output and `nft -j list table` must equal what they were before the change,
 * exactly, for every k. The VLAN step is checked against this kernel's real capability:
 * without 802.1Q the change fails up front naming the feature and the links it had already
 * changed are rolled back; with 802.1Q the VLAN is created, verified and removed.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { InjectedFaultError } from '../../activities/failures';
import { createIpRunner } from '../../activities/system/ip-runner';
import { LinkTable } from '../../activities/system/link-table';
import { KernelFeatureMissingError } from '../../activities/system/network-errors';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { rmSync } from 'node:fs';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { ZoneMaps } from '../../bpf/zone-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import type { NodeStateInput } from '../../model/node-state';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import type { Subsystem } from '../../model/plan';
import { changeWorkflow, type ChangeStatus } from '../../workflows/change';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { testAuditStores } from '../helpers/audit-stores';
import { describePrivileged } from '../helpers/capabilities';
import { startTemporal, workflowBundle } from '../helpers/temporal';

const NODE = 'net-node';
const suffix = randomBytes(3).toString('hex');
const NETNS = `fos1rb-${suffix}`;
/** The node's neighbours (the gateways its routes point at) live in a second namespace. */
const PEER_NETNS = `fos1rbp-${suffix}`;
const NAT_TABLE = `fos1_rb${suffix}`;
const pinDir = `/sys/fs/bpf/fos1-rbtest-${suffix}`;

let zoneMapsHandle: ZoneMaps | undefined;
/** The node's eBPF zone maps, opened once (they are created by the first change that has zones). */
function zoneMaps(): ZoneMaps {
  return (zoneMapsHandle ??= ZoneMaps.open({ pinDir, netns: NETNS }));
}

function inNs(...args: string[]): string {
  return execFileSync('ip', ['-n', NETNS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** Everything fos1 may touch in the namespace, as the raw tools print it. */
function dump() {
  const json = (...args: string[]) => JSON.parse(inNs('-json', ...args) || '[]') as unknown;
  let nat: unknown;
  try {
    nat = JSON.parse(execFileSync('ip', ['netns', 'exec', NETNS, 'nft', '-j', 'list', 'table', 'inet', NAT_TABLE], { stdio: ['ignore', 'pipe', 'pipe'] }).toString());
  } catch {
    nat = 'absent';
  }
  return {
    links: json('-d', 'link', 'show'),
    addresses: json('address', 'show'),
    routes4: json('-4', 'route', 'show', 'table', 'all'),
    routes6: json('-6', 'route', 'show', 'table', 'all'),
    rules4: json('-4', 'rule', 'show'),
    rules6: json('-6', 'rule', 'show'),
    nat,
    // The zones in the eBPF zone maps (pinned in the node's folder, interfaces by name in its namespace).
    zoneMaps: zoneMaps().read(),
  };
}

/**
 * Whether this kernel makes 802.1Q VLANs, asked while jest collects the tests (so a test
 * that cannot run is reported as skipped, with the reason in its name): a VLAN on a
 * throwaway namespace's loopback, which a kernel with 802.1Q refuses for another reason.
 */
function kernelHasVlans(): boolean {
  const probe = `fos1vp-${suffix}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'ignore' });
  } catch {
    return false; // no namespaces here: the suite is skipped (or, under CI, failed) for that
  }
  try {
    execFileSync('ip', ['-n', probe, 'link', 'add', 'link', 'lo', 'name', 'vprobe', 'type', 'vlan', 'id', '10'], { stdio: ['ignore', 'pipe', 'pipe'] });
    return true;
  } catch (err) {
    return !/Unknown device type/.test(String((err as { stderr?: Buffer }).stderr ?? ''));
  } finally {
    execFileSync('ip', ['netns', 'del', probe]);
  }
}

describePrivileged('network change rollback on a real node (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli', 'iproute2'], () => {
  let env: TestWorkflowEnvironment;
  let stopWorkers: () => Promise<void>;
  let sequence = 0;
  /** The step after whose kernel change the next run fails. */
  let failAt: Subsystem | undefined;
  /** Runs in the worker just before the injected fault (the world changing under a change). */
  let beforeFault: (() => void) | undefined;
  const vlans = kernelHasVlans();
  const NO_VLANS = 'this kernel has no 802.1Q VLAN support (`ip link add … type vlan` answers "Unknown device type")';

  beforeAll(async () => {
    for (const ns of [NETNS, PEER_NETNS]) {
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    inNs('link', 'add', 'x1', 'type', 'veth', 'peer', 'name', 'x1p', 'netns', PEER_NETNS);
    inNs('link', 'add', 'x2', 'type', 'veth', 'peer', 'name', 'x2p', 'netns', PEER_NETNS);
    for (const dev of ['x1', 'x2']) {
      // First up attaches the default qdisc for good (see the traffic test); x2 then stays down.
      inNs('link', 'set', dev, 'up');
      if (dev === 'x2') inNs('link', 'set', dev, 'down');
    }
    const peer = (...args: string[]) => execFileSync('ip', ['-n', PEER_NETNS, ...args]);
    for (const [dev, v4, v6] of [
      ['x1p', '10.60.0.2/24', 'fd00:60::2/64'],
      ['x2p', '10.62.0.2/24', 'fd00:62::2/64'],
    ] as const) {
      peer('link', 'set', dev, 'up');
      peer('address', 'add', v4, 'dev', dev);
      peer('address', 'add', v6, 'dev', dev, 'nodad');
    }

    env = await startTemporal();
    const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
    const nodeDeps = createNodeDeps(
      { netns: NETNS, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 16, v6: 16 }, natTable: NAT_TABLE },
      logger,
    );
    const audit = testAuditStores();
    const workers = await createWorkers({
      audit,
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      nodeName: NODE,
      clusterWorker: true,
      nodeDeps: {
        ...nodeDeps,
        faults: (subsystem) => {
          if (subsystem !== failAt) return;
          beforeFault?.();
          throw new InjectedFaultError(`injected fault after the ${subsystem} step changed the kernel`);
        },
      },
      logger,
      workflowBundle: await workflowBundle(),
    });
    const running = Promise.all(workers.map((w) => w.run()));
    stopWorkers = async () => {
      workers.forEach((w) => w.shutdown());
      await running;
      await audit.close();
    };
  });

  afterAll(async () => {
    await stopWorkers?.();
    await env?.teardown();
    for (const ns of [NETNS, PEER_NETNS]) {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        // never created
      }
    }
    zoneMapsHandle?.close();
    removePinnedBlocklist(pinDir);
    // The zone maps the change created live in the same folder.
    rmSync(pinDir, { recursive: true, force: true });
  });

  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `net-${sequence}-${randomBytes(2).toString('hex')}`, author: 'carol', reason: 'network rollback test', targets: [NODE], ...overrides } as ChangeRequestInput;
  }

  async function run(req: ChangeRequestInput): Promise<{ status: ChangeStatus; failureType?: string }> {
    const handle = await env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
    try {
      return { status: await handle.result() };
    } catch (err) {
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const cause = (err as WorkflowFailedError).cause as { type?: string; details?: unknown[] };
      return { status: cause.details?.[0] as ChangeStatus, failureType: cause.type };
    }
  }

  /** The node before each test: addressed, routed, with rules and NAT, so a rollback has something to restore. */
  const baseline: NodeStateInput = {
    interfaces: [
      { name: 'x1', up: true, mtu: 1500, addresses: ['10.60.0.1/24', 'fd00:60::1/64'] },
      { name: 'x2', up: false, addresses: [] },
    ],
    routes: [
      { destination: '10.10.0.0/16', gateway: '10.60.0.2', table: 100 },
      { destination: '10.11.0.0/24', gateway: '10.60.0.2' },
      { destination: '2001:db8:10::/48', gateway: 'fd00:60::2' },
    ],
    rules: [
      { priority: 900, from: '10.60.0.0/24', table: 100 },
      { priority: 901, family: 6, fwmark: 1, table: 100 },
    ],
    zones: [{ name: 'lan', id: 1, interfaces: ['x1'], prefixes: ['10.60.0.0/24'] }],
    nat: {
      sourceNat: [{ source: '10.60.0.0/24', outInterface: 'x2' }],
      portForwards: [{ protocol: 'tcp', port: 2222, inInterface: 'x2', to: '10.60.0.9', toPort: 22 }],
    },
  };

  /** A change touching every step: links, addresses, routes (replace, ECMP, delete, IPv6), rules, zones, NAT66 and a port forward. */
  const change: NodeStateInput = {
    interfaces: [
      { name: 'x1', up: true, mtu: 1400, addresses: ['10.60.0.1/24', '10.61.0.1/24', 'fd00:60::1/64'] },
      { name: 'x2', up: true, addresses: ['10.62.0.1/24', 'fd00:62::1/64'] },
    ],
    routes: [
      { destination: '10.10.0.0/16', gateway: '10.62.0.2', table: 100 },
      { destination: '10.12.0.0/24', table: 200, nexthops: [{ gateway: '10.60.0.2' }, { gateway: '10.62.0.2', weight: 3 }] },
      { destination: '2001:db8:10::/48', gateway: 'fd00:60::2' },
      { destination: 'fd00:99::/64', gateway: 'fd00:62::2', table: 200 },
    ],
    rules: [
      { priority: 901, family: 6, fwmark: 1, table: 100 },
      { priority: 1000, from: '10.62.0.0/24', iif: 'x2', table: 200 },
      { priority: 1001, from: 'fd00:62::/64', table: 200 },
    ],
    zones: [
      { name: 'lan', id: 1, interfaces: ['x1'], prefixes: ['10.60.0.0/24', 'fd00:60::/64'] },
      { name: 'dmz', id: 3, interfaces: ['x2'], prefixes: ['10.62.0.0/24'] },
    ],
    nat: {
      sourceNat: [
        { source: '10.60.0.0/24', outInterface: 'x2' },
        { source: 'fd00:60::/64', outInterface: 'x2' },
      ],
      portForwards: [
        { protocol: 'tcp', port: 2222, inInterface: 'x2', to: '10.60.0.9', toPort: 22 },
        { protocol: 'udp', port: 5353, destination: 'fd00:62::1', to: 'fd00:60::9' },
      ],
    },
  };
  const STEPS: Subsystem[] = ['links', 'addresses', 'routes', 'rules', 'zonemaps', 'zones', 'nat'];

  beforeEach(async () => {
    failAt = undefined;
    beforeFault = undefined;
    const { status } = await run(request({ desired: baseline }));
    expect({ phase: status.phase, error: status.nodes[NODE]?.error }).toEqual({ phase: expect.stringMatching(/^(applied|unchanged)$/), error: undefined });
  });

  test('the change applies every step and reads back (the dumps below can tell the states apart)', async () => {
    const before = dump();
    const { status } = await run(request({ desired: change }));
    expect(status.phase).toBe('applied');
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(['snapshot:ok', 'plan:ok', ...STEPS.map((s) => `${s}:ok`), 'verify:ok']);
    expect(dump()).not.toEqual(before);
    expect(JSON.stringify(dump().nat)).toContain('fd00:60::');
  });

  test.each(STEPS)('a fault after the %s step changed the kernel: ip -json and nft -j equal the snapshot exactly', async (step) => {
    const before = dump();
    failAt = step;
    const { status, failureType } = await run(request({ desired: change }));
    expect(failureType).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.error?.type).toBe('InjectedFault');
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    const k = STEPS.indexOf(step);
    expect(steps.slice(0, k + 3)).toEqual(['snapshot:ok', 'plan:ok', ...STEPS.slice(0, k).map((s) => `${s}:ok`), `${step}:failed`]);
    expect(steps).toContain('verify rollback:ok');
    expect(dump()).toEqual(before);
  });

  test('a real kernel refusal in the middle of a step (an address on a missing interface) rolls back the part already applied', async () => {
    const before = dump();
    const { status, failureType } = await run(
      request({
        patch: {
          interfaces: {
            upsert: [
              { name: 'x1', mtu: 1400, addresses: ['10.60.0.1/24', '10.61.0.1/24', 'fd00:60::1/64'] }, // applies first…
              { name: 'zz9', addresses: ['10.63.0.1/24'] }, // …then the kernel has no such device
            ],
          },
        },
      }),
    );
    expect(failureType).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.error).toEqual({ type: 'AddressApplyFailed', message: expect.stringMatching(/\+ address 10\.63\.0\.1\/24 dev zz9.*(Cannot find device|does not exist)/) });
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps.slice(0, 4)).toEqual(['snapshot:ok', 'plan:ok', 'links:ok', 'addresses:failed']);
    expect(dump()).toEqual(before);
  });

  test('a foreign interface that vanishes during the change (a pod veth) does not fail the rollback', async () => {
    inNs('link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'pod1');
    inNs('link', 'set', 'pod0', 'up');
    inNs('link', 'set', 'pod0', 'down');
    const before = dump();
    failAt = 'routes';
    beforeFault = () => inNs('link', 'del', 'pod0'); // the pod goes away mid-change
    const { status, failureType } = await run(request({ desired: change }));
    expect(failureType).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.outcome).toBe('rolled-back'); // not rollback-failed
    // Everything but the vanished pair is exactly as before.
    const withoutPod = (d: ReturnType<typeof dump>) => ({
      ...d,
      links: (d.links as { ifname: string }[]).filter((l) => !l.ifname.startsWith('pod')),
      addresses: (d.addresses as { ifname: string }[]).filter((l) => !l.ifname.startsWith('pod')),
    });
    expect(dump()).toEqual(withoutPod(before));
  });

  test('dry run: the diff names every operation, in apply order, and nothing changes', async () => {
    const before = dump();
    const { status } = await run(request({ desired: change, options: { dryRun: true } }));
    expect(status.phase).toBe('planned');
    expect(status.nodes[NODE]?.diff).toEqual([
      '~ link x1 mtu 1500 => mtu 1400',
      '~ link x2 down => up',
      '+ address 10.61.0.1/24 dev x1',
      '+ address 10.62.0.1/24 dev x2',
      '+ address fd00:62::1/64 dev x2',
      '~ route 10.10.0.0/16 via 10.60.0.2 dev x1 table 100 metric 0 => 10.10.0.0/16 via 10.62.0.2 table 100 metric 0',
      '+ route 10.12.0.0/24 nexthop via 10.60.0.2 weight 1 nexthop via 10.62.0.2 weight 3 table 200 metric 0',
      '+ route fd00:99::/64 via fd00:62::2 table 200 metric 1024',
      '- route 10.11.0.0/24 via 10.60.0.2 dev x1 table 254 metric 0',
      '+ rule -4 priority 1000 from 10.62.0.0/24 iif x2 table 200',
      '+ rule -6 priority 1001 from fd00:62::/64 table 200',
      '- rule -4 priority 900 from 10.60.0.0/24 table 100',
      '+ ebpf zone member x2 in zone 3',
      '+ zone dmz id 3 interfaces x2 prefixes 10.62.0.0/24',
      '~ zone lan id 1 interfaces x1 prefixes 10.60.0.0/24 => lan id 1 interfaces x1 prefixes 10.60.0.0/24,fd00:60::/64',
      '+ nat masquerade fd00:60::/64 out x2',
      '+ nat forward udp/5353 in any to fd00:62::1 => [fd00:60::9]:5353',
    ]);
    expect(dump()).toEqual(before);
  });

  (vlans ? test.skip : test)(
    `VLAN: on a kernel without 802.1Q the change fails up front naming the feature, and the links already changed roll back exactly${vlans ? ' (skipped: this kernel has 802.1Q, the next test covers it)' : ''}`,
    async () => {
      await expect(new LinkTable(createIpRunner({ netns: NETNS })).checkVlanSupport()).rejects.toThrow(KernelFeatureMissingError);
      const before = dump();
      const { status, failureType } = await run(
        request({
          patch: { interfaces: { upsert: [{ name: 'x1', mtu: 1400 }, { name: 'x1.10', vlan: { parent: 'x1', id: 10 }, up: true, addresses: ['10.70.0.1/24'] }] } },
        }),
      );
      expect(failureType).toBe('ChangeRolledBack');
      expect(status.nodes[NODE]?.error?.type).toBe('KernelFeatureMissing');
      expect(status.nodes[NODE]?.error?.message).toMatch(/802\.1Q VLAN .*8021q.*Unknown device type/);
      const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
      expect(steps.slice(0, 4)).toEqual(['snapshot:ok', 'plan:ok', 'links:ok', 'vlans:failed']); // the MTU had changed
      expect(steps).toContain('verify rollback:ok');
      expect(dump()).toEqual(before);
    },
  );

  // Said plainly rather than passed silently: on a kernel without 802.1Q this cannot run.
  if (!vlans) console.warn(`SKIPPED VLAN create/verify/remove: ${NO_VLANS}`);
  (vlans ? test : test.skip)(`VLAN: where the kernel has 802.1Q, a VLAN sub-interface is created, read back and removed${vlans ? '' : ` (skipped: ${NO_VLANS})`}`, async () => {
    const before = dump();
    const { status } = await run(request({ patch: { interfaces: { upsert: [{ name: 'x1.10', vlan: { parent: 'x1', id: 10 }, up: true, addresses: ['10.70.0.1/24'] }] } } }));
    expect(status.phase).toBe('applied');
    const [link] = JSON.parse(inNs('-d', '-json', 'link', 'show', 'x1.10')) as { linkinfo: { info_kind: string; info_data: { id: number } }; ifalias?: string }[];
    expect(link?.linkinfo.info_kind).toBe('vlan');
    expect(link?.linkinfo.info_data.id).toBe(10);
    const removed = await run(request({ patch: { interfaces: { remove: ['x1.10'] } } }));
    expect(removed.status.phase).toBe('applied');
    expect(dump()).toEqual(before);
  });
});
