/**
 * Zones in fos1's eBPF datapath, with real traffic through a real router namespace:
 *
 *   netns a: a0 10.71.1.2/24 ── ra 10.71.1.1/24  netns r (the fos1 node)  rb 10.71.2.1/24 ── b0 10.71.2.2/24 :netns b
 *
 * fos1's TC programs are attached to both router interfaces. A change through the real
 * change workflow (Temporal, the node worker in namespace r) puts `ra` in zone `za` and
 * `rb` in zone `zb`: traffic from za may go to zb, zb's default is deny. Connection
 * tracking in the programs lets the replies of a connection opened from A through,
 * while a new connection from B is dropped and counted as `zone-default`. A change that
 * fails after the zone maps changed rolls them back, read back byte for byte. Membership
 * operations (`patch.zoneMembers`) move one interface in and out of a zone without resending it.
 *
 * Privileged: root, netns, bpffs, iproute2, nftables and the Temporal CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { InjectedFaultError } from '../../activities/failures';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import type { DropEvent } from '../../bpf/datapath-codec';
import { ifindexOf, inNetns } from '../../bpf/netns';
import { ZONE_DEFAULT_MAP, ZONE_IFACES_MAP, ZONE_POLICY_MAP, ZoneMaps } from '../../bpf/zone-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import type { ZoneInput } from '../../model/node-state';
import type { ZoneMapState } from '../../model/zone-maps';
import type { Subsystem } from '../../model/subsystem';
import { cacheDir } from '../../scripts/paths';
import { changeWorkflow } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure } from '../helpers/change-client';
import { eventually } from '../helpers/eventually';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';
import { echo, EchoServers, ip, ping } from '../helpers/netns-traffic';

const NODE = 'node-zones';
const SIZES = { blocklistV4: 64, blocklistV6: 64, hostsV4: 64, hostsV6: 64, conntrack: 1024 };
const tag = randomBytes(3).toString('hex');
const NS = { a: `fos1z-a-${tag}`, r: `fos1z-r-${tag}`, b: `fos1z-b-${tag}` };
const ADDR = { a: '10.71.1.2', b: '10.71.2.2' };
const TCP = 6;

/** za → zb allowed (counted as rule 21); zb's default is deny (rule 22): it may open nothing towards za. */
const ZONES: ZoneInput[] = [
  { name: 'za', id: 11, interfaces: ['ra'], prefixes: ['10.71.1.0/24'], policy: { rules: [{ to: 'zb', action: 'allow', ruleId: 21 }] } },
  { name: 'zb', id: 12, interfaces: ['rb'], prefixes: ['10.71.2.0/24'], policy: { default: 'deny', defaultRuleId: 22 } },
];

const servers = new EchoServers();

describePrivileged('zones through the change workflow into the eBPF zone maps, with stateful traffic between zones (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let pinDir: string;
  let datapath: Datapath;
  let zoneMaps: ZoneMaps;
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let serverA: { tcp: number; udp: number };
  let serverB: { tcp: number; udp: number };
  let sequence = 0;
  let failAt: Subsystem | undefined;
  /** The zone maps as the fault found them (the change applied, not yet rolled back). */
  let atFault: ZoneMapState | undefined;

  beforeAll(async () => {
    for (const ns of Object.values(NS)) ip('netns', 'add', ns);
    ip('-n', NS.a, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'ra', 'netns', NS.r);
    ip('-n', NS.b, 'link', 'add', 'b0', 'type', 'veth', 'peer', 'name', 'rb', 'netns', NS.r);
    for (const [ns, dev, addr] of [
      [NS.a, 'a0', `${ADDR.a}/24`],
      [NS.r, 'ra', '10.71.1.1/24'],
      [NS.r, 'rb', '10.71.2.1/24'],
      [NS.b, 'b0', `${ADDR.b}/24`],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', addr, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    ip('-n', NS.a, 'route', 'add', 'default', 'via', '10.71.1.1');
    ip('-n', NS.b, 'route', 'add', 'default', 'via', '10.71.2.1');
    execFileSync('ip', ['netns', 'exec', NS.r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await eventually(() => ping(NS.a, ADDR.b), (ok) => ok, 'the router to forward between a and b');

    pinDir = `/sys/fs/bpf/fos1-zones-${tag}`;
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: SIZES });
    for (const dev of ['ra', 'rb']) datapath.attach({ interface: dev, netns: NS.r });
    zoneMaps = ZoneMaps.open({ pinDir, netns: NS.r });
    serverA = await servers.start(NS.a);
    serverB = await servers.start(NS.b);
    env = await startTemporal();
    workers = await startWorkers(
      env,
      NODE,
      { netns: NS.r, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 } },
      {
        faults: (subsystem) => {
          if (subsystem !== failAt) return;
          atFault = zoneMaps.read();
          throw new InjectedFaultError(`injected fault after the ${subsystem} step changed the node`);
        },
      },
    );
  });

  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
    servers.stopAll();
    zoneMaps?.close();
    datapath?.unpin();
    datapath?.close();
    for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `zones-${sequence}-${randomBytes(2).toString('hex')}`, author: 'zone-test', reason: 'zones in the datapath', targets: [NODE], ...overrides } as ChangeRequestInput;
  }
  const start = (req: ChangeRequestInput): Promise<WorkflowHandle<typeof changeWorkflow>> =>
    env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });

  /** The three zone maps as the kernel holds them, raw (hex key → hex value), for exact comparisons. */
  const rawZoneMaps = () =>
    Object.fromEntries(
      [ZONE_IFACES_MAP, ZONE_POLICY_MAP, ZONE_DEFAULT_MAP].map((name) => [
        name,
        Object.fromEntries(
          datapath
            .map(name)
            .lookupBatch()
            .map(([k, v]) => [k.toString('hex'), v.toString('hex')])
            .sort(),
        ),
      ]),
    );

  /** fos1's zone sets in the router's nft table: set name → its elements (as nft lists them). */
  const zoneSets = (): Record<string, unknown[]> => {
    const listed = JSON.parse(execFileSync('ip', ['netns', 'exec', NS.r, 'nft', '-j', 'list', 'sets']).toString()) as { nftables: { set?: { name: string; elem?: unknown[] } }[] };
    return Object.fromEntries(listed.nftables.flatMap((e) => (e.set && e.set.name.startsWith('zone') ? [[e.set.name, e.set.elem ?? []]] : [])).sort());
  };

  /** Drop events emitted while `fn` runs. */
  const eventsDuring = (fn: () => void): DropEvent[] => {
    const events: DropEvent[] = [];
    const consumer = datapath.events((e) => events.push(e));
    try {
      consumer.consume();
      events.length = 0;
      fn();
      consumer.consume();
    } finally {
      consumer.close();
    }
    return events;
  };

  test('a change puts the zones into the maps; a connection from za to zb works (its replies pass zb\'s default deny), a new one from zb is dropped as zone-default', async () => {
    // Unzoned, everything passes both ways.
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp)]).toEqual([true, true]);

    const applied = await (await start(request({ patch: { zones: { upsert: ZONES } } }))).result();
    expect(applied.phase).toBe('applied');
    const diff = applied.nodes[NODE]?.diff ?? [];
    expect(diff).toEqual(
      expect.arrayContaining([
        '+ ebpf zone member ra in zone 11',
        '+ ebpf zone member rb in zone 12',
        '+ ebpf zone rule zone 11 -> zone 12 any allow rule 21',
        '+ ebpf zone default zone 12 deny rule 22',
      ]),
    );
    // The eBPF lines come before the nftables zone sets (apply order).
    expect(diff.findIndex((l) => l.includes('ebpf'))).toBeLessThan(diff.findIndex((l) => l.startsWith('+ zone ')));
    // Membership is by ifindex in the router's namespace.
    const [ra, rb] = inNetns(NS.r, () => [ifindexOf('ra'), ifindexOf('rb')]);
    expect(zoneMaps.read()).toEqual({
      members: [
        { interface: 'ra', zone: 11 },
        { interface: 'rb', zone: 12 },
      ],
      rules: [{ src: 11, dst: 12, protocol: 0, port: 0, action: 'allow', ruleId: 21 }],
      defaults: [{ zone: 12, action: 'deny', ruleId: 22 }],
    });
    const le = (n: number) => Buffer.from(new Uint32Array([n]).buffer).toString('hex');
    expect(rawZoneMaps()[ZONE_IFACES_MAP]).toEqual({ [le(ra as number)]: le(11), [le(rb as number)]: le(12) });

    datapath.flushConntrack();
    const drops0 = datapath.dropCounts();
    const allowed0 = datapath.ruleCounter(21).packets;
    // A → B: TCP, UDP and ping all get their answers back through zb's default deny.
    expect({ tcp: echo(NS.a, 'tcp', ADDR.b, serverB.tcp), udp: echo(NS.a, 'udp', ADDR.b, serverB.udp), ping: ping(NS.a, ADDR.b) }).toEqual({ tcp: true, udp: true, ping: true });
    const tracked = datapath.conntrackEntries();
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: TCP, source: ADDR.a, destination: ADDR.b, dport: serverB.tcp, srcZone: 11, dstZone: 12, ruleId: 21 }));
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: 17, source: ADDR.a, destination: ADDR.b, dport: serverB.udp, state: 'open' }));
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: 1, source: ADDR.a, destination: ADDR.b, state: 'open' }));
    // Only the opening packet of each connection needed the rule: the rest were tracked.
    expect(datapath.ruleCounter(21).packets - allowed0).toBe(3n);

    // B → A: a new connection is dropped by zb's default, and the drop says so.
    const events = eventsDuring(() => {
      expect({ tcp: echo(NS.b, 'tcp', ADDR.a, serverA.tcp, 800), ping: ping(NS.b, ADDR.a) }).toEqual({ tcp: false, ping: false });
    });
    const drops = datapath.dropCounts();
    expect(drops['zone-default'] - drops0['zone-default']).toBeGreaterThanOrEqual(2n);
    expect(drops['zone-rule']).toBe(drops0['zone-rule']);
    expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-default', action: 'deny', hook: 'tc-ingress', protocol: TCP, source: ADDR.b, destination: ADDR.a, dport: serverA.tcp, srcZone: 12, dstZone: 11, ruleId: 22 }));
    // …and no entry was made for it.
    expect(datapath.conntrackEntries().filter((e) => e.source === ADDR.b)).toEqual([]);
  });

  test('the TCP state machine: established while open, closing after FIN both ways; stateless mode drops the replies', async () => {
    datapath.flushConntrack();
    expect(echo(NS.a, 'tcp', ADDR.b, serverB.tcp)).toBe(true);
    // The client closed its socket and the server answered with its own FIN: closing (10 s, then gone).
    const closed = await eventually(
      () => datapath.conntrackEntries().find((e) => e.protocol === TCP && e.dport === serverB.tcp),
      (e) => e?.state === 'closing',
      'the connection to be closing after FIN both ways',
      5000,
    );
    expect(closed?.fin).toBe(3);

    // Without conntrack the zone policy sees every packet: zb's replies meet zb's default deny.
    datapath.setConntrack(false);
    try {
      expect(datapath.conntrackEnabled()).toBe(false);
      expect(echo(NS.a, 'tcp', ADDR.b, serverB.tcp, 800)).toBe(false);
    } finally {
      datapath.setConntrack(true);
    }
    expect(echo(NS.a, 'tcp', ADDR.b, serverB.tcp)).toBe(true);
  });

  test.each(['zonemaps', 'zones'] as const)('a change failing after the %s step restores the zone maps exactly (read back)', async (step) => {
    // The zones of the first test (a no-op when it ran): the state the rollback must return to.
    expect((await (await start(request({ patch: { zones: { upsert: ZONES } } }))).result()).phase).toMatch(/^(applied|unchanged)$/);
    const before = rawZoneMaps();
    const modelBefore = zoneMaps.read();
    expect(modelBefore.members).toHaveLength(2);
    failAt = step;
    atFault = undefined;
    let result;
    try {
      // Takes ra out of za, opens zb towards za and drops za's rule: all for the rollback to undo.
      result = await changeFailure(
        await start(
          request({
            patch: {
              zones: {
                upsert: [
                  { name: 'za', id: 11, interfaces: [] },
                  { name: 'zb', id: 12, interfaces: ['rb'], policy: { default: 'allow', rules: [{ to: 'za', protocol: 'tcp', port: serverA.tcp, action: 'log', ruleId: 23 }] } },
                ],
              },
            },
          }),
        ),
      );
    } finally {
      failAt = undefined;
    }
    expect(result.type).toBe('ChangeRolledBack');
    expect(result.status.nodes[NODE]?.error?.type).toBe('InjectedFault');
    const steps = result.status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining([step === 'zonemaps' ? 'zonemaps:failed' : 'zonemaps:ok', 'restore zonemaps:ok', 'verify rollback:ok']));
    // The change had reached the maps when it failed…
    expect(atFault).toEqual({
      members: [{ interface: 'rb', zone: 12 }],
      rules: [{ src: 12, dst: 11, protocol: TCP, port: serverA.tcp, action: 'log', ruleId: 23 }],
      defaults: [],
    });
    // …and the rollback put back every byte.
    expect(rawZoneMaps()).toEqual(before);
    expect(zoneMaps.read()).toEqual(modelBefore);
    // And the datapath behaves as before: zb still cannot open a connection to za.
    datapath.flushConntrack();
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp, 800)]).toEqual([true, false]);
  });

  test('a zone naming an interface the node does not have fails the change before the maps change', async () => {
    const before = rawZoneMaps();
    const { type, status } = await changeFailure(await start(request({ patch: { zones: { upsert: [{ name: 'zc', id: 13, interfaces: ['nosuch0'] }] } } })));
    expect(type).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.error).toMatchObject({ type: 'ZoneApplyFailed', message: expect.stringContaining('interface nosuch0 (zone 13) does not exist on this node') });
    expect(rawZoneMaps()).toEqual(before);
  });

  test('membership (patch.zoneMembers): rb leaves zb and B may open connections again; it joins back and zb\'s default deny decides again; a move failing after the zones step is rolled back exactly', async () => {
    expect((await (await start(request({ patch: { zones: { upsert: ZONES } } }))).result()).phase).toMatch(/^(applied|unchanged)$/);
    const before = rawZoneMaps();
    const nftBefore = zoneSets();
    const policy = { rules: zoneMaps.read().rules, defaults: zoneMaps.read().defaults };

    // Leave: the zone keeps its id, prefixes and policy; only rb is out (in nft and in the eBPF maps).
    const left = await (await start(request({ patch: { zoneMembers: { leave: [{ zone: 'zb', interfaces: ['rb'] }] } } }))).result();
    expect(left.phase).toBe('applied');
    expect(left.nodes[NODE]?.diff).toEqual(['- ebpf zone member rb in zone 12', '~ zone zb id 12 interfaces rb prefixes 10.71.2.0/24 => zb id 12 interfaces (none) prefixes 10.71.2.0/24']);
    expect(zoneMaps.read()).toEqual({ members: [{ interface: 'ra', zone: 11 }], ...policy });
    expect(zoneSets().zone12_zb_if).toEqual([]);
    expect(zoneSets().zone12_zb_v4).toEqual(nftBefore.zone12_zb_v4);
    datapath.flushConntrack();
    // From an interface in no zone nothing is decided by zones: B reaches A.
    expect(echo(NS.b, 'tcp', ADDR.a, serverA.tcp)).toBe(true);

    // Join: back to exactly the maps and sets of before, and B is dropped by zb's default again.
    const joined = await (await start(request({ patch: { zoneMembers: { join: [{ zone: 'zb', interfaces: ['rb'] }] } } }))).result();
    expect(joined.phase).toBe('applied');
    expect(joined.nodes[NODE]?.diff).toEqual(['+ ebpf zone member rb in zone 12', '~ zone zb id 12 interfaces (none) prefixes 10.71.2.0/24 => zb id 12 interfaces rb prefixes 10.71.2.0/24']);
    expect(rawZoneMaps()).toEqual(before);
    expect(zoneSets()).toEqual(nftBefore);
    datapath.flushConntrack();
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp, 800)]).toEqual([true, false]);
    // Joining again is no change.
    expect((await (await start(request({ patch: { zoneMembers: { join: [{ zone: 'zb', interfaces: ['rb'] }] } } }))).result()).phase).toBe('unchanged');

    // Refused before anything changes: a zone the node does not have, an interface already in another zone.
    const missing = await changeFailure(await start(request({ patch: { zoneMembers: { join: [{ zone: 'zc', interfaces: ['rb'] }] } } })));
    expect(missing.status.nodes[NODE]?.error).toEqual({ type: 'ZoneNotFound', message: 'patch.zoneMembers.join[0].zone: zone "zc" is not a zone of the node nor of this patch (known: za, zb)' });
    const conflict = await changeFailure(await start(request({ patch: { zoneMembers: { join: [{ zone: 'za', interfaces: ['rb'] }] } } })));
    expect(conflict.status.nodes[NODE]?.error).toMatchObject({ type: 'ZoneMembershipConflict', message: expect.stringContaining('patch.zoneMembers.join[0].interfaces[0]: interface rb is already in zone zb') });
    expect(rawZoneMaps()).toEqual(before);

    // A move (leave zb + join za) that fails after the zones step: both zone subsystems restored and read back.
    failAt = 'zones';
    let moved;
    try {
      moved = await changeFailure(await start(request({ patch: { zoneMembers: { leave: [{ zone: 'zb', interfaces: ['rb'] }], join: [{ zone: 'za', interfaces: ['rb'] }] } } })));
    } finally {
      failAt = undefined;
    }
    expect(moved.type).toBe('ChangeRolledBack');
    expect(atFault?.members).toEqual([
      { interface: 'ra', zone: 11 },
      { interface: 'rb', zone: 11 },
    ]);
    const steps = moved.status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining(['zonemaps:ok', 'restore zonemaps:ok', 'restore zones:ok', 'verify rollback:ok']));
    expect(rawZoneMaps()).toEqual(before);
    expect(zoneSets()).toEqual(nftBefore);
  });

  test('removing the zones empties the maps and opens the path both ways again', async () => {
    const removed = await (await start(request({ patch: { zones: { remove: ['za', 'zb'] } } }))).result();
    expect(removed.phase).toBe('applied');
    expect(zoneMaps.read()).toEqual({ members: [], rules: [], defaults: [] });
    datapath.flushConntrack();
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp)]).toEqual([true, true]);
  });
});
