/**
 * Stateful zones through NAT, with real traffic through a real router namespace:
 *
 *   netns c: c0 10.72.1.2/24 ── rl 10.72.1.1/24  netns r (the fos1 node)  rw 10.72.2.1/24 ── s0 10.72.2.2/24 :netns s
 *
 * `rl` is in zone `lan`, `rw` in zone `wan`; fos1's TC programs are on both. The zones and
 * the NAT (nftables, fos1's table) come from one change through the real change workflow.
 * netfilter rewrites a NATed connection between fos1's hooks (TC ingress runs before
 * prerouting's DNAT, TC egress after postrouting's SNAT), so the replies reach fos1 under
 * a tuple the opening packet did not have at ingress; these tests show they still pass a
 * default deny, and that the deny side still cannot open anything:
 *
 * - masquerade: lan may go to wan; wan's default is deny. c's connections to s are
 *   answered (the replies arrive addressed to the router), s cannot reach c or the router.
 * - port forward: wan's tcp/8080 on the router goes to c's server; wan may reach the
 *   router's 8080 and c's server port, lan's default is deny. s's connections through the
 *   forward are answered; c cannot open anything towards s.
 *
 * Privileged: root, netns, bpffs, iproute2, nftables and the Temporal CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { ZONE_HOST, type DropEvent } from '../../bpf/datapath-codec';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import type { NatConfig, ZoneInput } from '../../model/node-state';
import { cacheDir } from '../../scripts/paths';
import { changeWorkflow } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';
import { echo, EchoServers, ip, ping } from '../helpers/netns-traffic';

const NODE = 'node-zone-nat';
const SIZES = { blocklistV4: 64, blocklistV6: 64, hostsV4: 64, hostsV6: 64, conntrack: 1024 };
const tag = randomBytes(3).toString('hex');
const NS = { c: `fos1n-c-${tag}`, r: `fos1n-r-${tag}`, s: `fos1n-s-${tag}` };
const ADDR = { c: '10.72.1.2', routerLan: '10.72.1.1', routerWan: '10.72.2.1', s: '10.72.2.2' };
const ADDR6 = { c: 'fd72:1::2', routerLan: 'fd72:1::1', routerWan: 'fd72:2::1', s: 'fd72:2::2' };
const LAN = 31;
const WAN = 32;
const TCP = 6;
const UDP = 17;
const FORWARDED_PORT = 8080;

const servers = new EchoServers();

describePrivileged('stateful eBPF zones through nftables NAT: replies of allowed connections pass a default deny (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let pinDir: string;
  let datapath: Datapath;
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let serverC: { tcp: number; udp: number };
  let serverS: { tcp: number; udp: number };
  let sequence = 0;

  beforeAll(async () => {
    for (const ns of Object.values(NS)) ip('netns', 'add', ns);
    ip('-n', NS.c, 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'rl', 'netns', NS.r);
    ip('-n', NS.s, 'link', 'add', 's0', 'type', 'veth', 'peer', 'name', 'rw', 'netns', NS.r);
    for (const [ns, dev, addr, addr6] of [
      [NS.c, 'c0', `${ADDR.c}/24`, `${ADDR6.c}/64`],
      [NS.r, 'rl', `${ADDR.routerLan}/24`, `${ADDR6.routerLan}/64`],
      [NS.r, 'rw', `${ADDR.routerWan}/24`, `${ADDR6.routerWan}/64`],
      [NS.s, 's0', `${ADDR.s}/24`, `${ADDR6.s}/64`],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', addr, 'dev', dev);
      ip('-n', ns, 'addr', 'add', addr6, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    ip('-n', NS.c, 'route', 'add', 'default', 'via', ADDR.routerLan);
    ip('-n', NS.c, '-6', 'route', 'add', 'default', 'via', ADDR6.routerLan);
    // s can route to the LAN itself: what keeps it out is the zone policy, not a missing route.
    ip('-n', NS.s, 'route', 'add', '10.72.1.0/24', 'via', ADDR.routerWan);
    ip('-n', NS.s, '-6', 'route', 'add', 'fd72:1::/64', 'via', ADDR6.routerWan);
    execFileSync('ip', ['netns', 'exec', NS.r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    await eventually(() => ping(NS.c, ADDR.s) && ping(NS.c, ADDR6.s), (ok) => ok, 'the router to forward between c and s (IPv4 and IPv6)');

    pinDir = `/sys/fs/bpf/fos1-zone-nat-${tag}`;
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: SIZES });
    for (const dev of ['rl', 'rw']) datapath.attach({ interface: dev, netns: NS.r });
    serverC = await servers.start(NS.c);
    serverS = await servers.start(NS.s);
    env = await startTemporal();
    workers = await startWorkers(env, NODE, {
      netns: NS.r,
      routeProtocol: DEFAULT_ROUTE_PROTOCOL,
      bpfPinDir: pinDir,
      blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 },
    });
  });

  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
    servers.stopAll();
    datapath?.unpin();
    datapath?.close();
    for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  /** Applies zones and NAT through the change workflow (the NAT config replaces the previous one). */
  async function change(zones: ZoneInput[], nat: NatConfig): Promise<string[]> {
    sequence++;
    const req = { id: `zone-nat-${sequence}-${randomBytes(2).toString('hex')}`, author: 'zone-nat-test', reason: 'zones through NAT', targets: [NODE], patch: { zones: { upsert: zones }, nat } } as ChangeRequestInput;
    const result = await (await env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] })).result();
    expect(result.phase).toBe('applied');
    datapath.flushConntrack();
    return result.nodes[NODE]?.diff ?? [];
  }

  /** Whether a drop event is about the endpoint `addr`:`port` (either direction). */
const touches = (e: DropEvent, addr: string, port: number): boolean => (e.source === addr && e.sport === port) || (e.destination === addr && e.dport === port);

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

  test('masquerade: lan → wan connections are answered through wan\'s default deny (IPv4 and IPv6); wan opens nothing towards lan or the router', async () => {
    // Without zones everything passes, both ways (s routes to the LAN directly).
    expect({ cs: echo(NS.c, 'tcp', ADDR.s, serverS.tcp), sc: echo(NS.s, 'tcp', ADDR.c, serverC.tcp), sr: ping(NS.s, ADDR.routerWan) }).toEqual({ cs: true, sc: true, sr: true });

    const diff = await change(
      [
        { name: 'lan', id: LAN, interfaces: ['rl'], policy: { rules: [{ to: 'wan', action: 'allow', ruleId: 41 }], default: 'deny', defaultRuleId: 42 } },
        { name: 'wan', id: WAN, interfaces: ['rw'], policy: { default: 'deny', defaultRuleId: 44 } },
      ],
      {
        sourceNat: [
          { source: '10.72.1.0/24', outInterface: 'rw' },
          { source: 'fd72:1::/64', outInterface: 'rw' },
        ],
        portForwards: [],
      },
    );
    expect(diff).toEqual(expect.arrayContaining(['+ ebpf zone rule zone 31 -> zone 32 any allow rule 41', '+ ebpf zone default zone 32 deny rule 44']));
    expect(diff.some((l) => l.includes('masquerade'))).toBe(true);

    const during = eventsDuring(() => {
      expect({ tcp: echo(NS.c, 'tcp', ADDR.s, serverS.tcp), udp: echo(NS.c, 'udp', ADDR.s, serverS.udp), ping: ping(NS.c, ADDR.s) }).toEqual({ tcp: true, udp: true, ping: true });
    });
    const tracked = datapath.conntrackEntries();
    // Each connection is tracked on both links: as c sent it (lan side, at TC ingress)…
    for (const [protocol, dport] of [
      [TCP, serverS.tcp],
      [UDP, serverS.udp],
    ] as const) {
      expect(tracked).toContainEqual(expect.objectContaining({ protocol, source: ADDR.c, destination: ADDR.s, dport, srcZone: LAN, dstZone: WAN, ruleId: 41 }));
      // …and as masquerade rewrote it (wan side, at TC egress): the tuple s answers to.
      expect(tracked).toContainEqual(expect.objectContaining({ protocol, source: ADDR.routerWan, destination: ADDR.s, dport, srcZone: LAN, dstZone: WAN, ruleId: 41 }));
    }
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: 1, source: ADDR.routerWan, destination: ADDR.s, state: 'open' }));
    // NAT66 the same way: both tuples tracked, the answer comes back through wan's default deny.
    const during6 = eventsDuring(() => expect(echo(NS.c, 'tcp', ADDR6.s, serverS.tcp)).toBe(true));
    const tracked6 = datapath.conntrackEntries().filter((e) => e.family === 6 && e.protocol === TCP && e.dport === serverS.tcp);
    expect(tracked6.map((e) => e.source).sort()).toEqual([ADDR6.c, ADDR6.routerWan].sort());
    expect(during6.filter((e) => e.source === ADDR6.s || e.destination === ADDR6.s)).toEqual([]);
    // No reply met wan's default.
    expect(during.filter((e) => e.source === ADDR.s || e.destination === ADDR.s)).toEqual([]);

    // s opens nothing: not towards c (routed, wan → lan), not towards the router (wan → host).
    const events = eventsDuring(() => {
      expect({ sc: echo(NS.s, 'tcp', ADDR.c, serverC.tcp, 800), pingC: ping(NS.s, ADDR.c), pingR: ping(NS.s, ADDR.routerWan) }).toEqual({ sc: false, pingC: false, pingR: false });
    });
    expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-default', hook: 'tc-ingress', protocol: TCP, source: ADDR.s, destination: ADDR.c, dport: serverC.tcp, srcZone: WAN, dstZone: LAN, ruleId: 44 }));
    expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-default', hook: 'tc-ingress', protocol: 1, source: ADDR.s, destination: ADDR.routerWan, srcZone: WAN, dstZone: ZONE_HOST, ruleId: 44 }));
    expect(datapath.conntrackEntries().filter((e) => e.source === ADDR.s)).toEqual([]);

    // Stateless, the same replies meet wan's default: it is the tracking that lets them through.
    datapath.setConntrack(false);
    try {
      expect(echo(NS.c, 'tcp', ADDR.s, serverS.tcp, 800)).toBe(false);
    } finally {
      datapath.setConntrack(true);
    }
    expect(echo(NS.c, 'tcp', ADDR.s, serverS.tcp)).toBe(true);
  });

  test('port forward: wan → the router\'s 8080 → c\'s server is answered through lan\'s default deny; lan opens nothing towards wan', async () => {
    const forward = { sourceNat: [], portForwards: [{ protocol: 'tcp' as const, port: FORWARDED_PORT, inInterface: 'rw', to: ADDR.c, toPort: serverC.tcp }] };
    const lan: ZoneInput = { name: 'lan', id: LAN, interfaces: ['rl'], policy: { default: 'deny', defaultRuleId: 42 } };
    // The forward crosses two decisions: at TC ingress (before DNAT) it is a connection to the
    // router's 8080; at TC egress (after DNAT) one from wan into lan on the server's port.
    const toHost = { to: 'host', protocol: 'tcp' as const, port: FORWARDED_PORT, action: 'allow' as const, ruleId: 45 };
    const toLan = { to: 'lan', protocol: 'tcp' as const, port: serverC.tcp, action: 'allow' as const, ruleId: 46 };

    // Only the router's port open: the forwarded packet is dropped at egress by wan's default (wan → lan).
    await change([lan, { name: 'wan', id: WAN, interfaces: ['rw'], policy: { rules: [toHost], default: 'deny', defaultRuleId: 44 } }], forward);
    const refused = eventsDuring(() => expect(echo(NS.s, 'tcp', ADDR.routerWan, FORWARDED_PORT, 800)).toBe(false));
    expect(refused).toContainEqual(expect.objectContaining({ reason: 'zone-default', hook: 'tc-egress', protocol: TCP, source: ADDR.s, destination: ADDR.c, dport: serverC.tcp, srcZone: WAN, dstZone: LAN, ruleId: 44 }));

    // Both open: the forward works, and c's answers pass lan's default deny.
    await change([lan, { name: 'wan', id: WAN, interfaces: ['rw'], policy: { rules: [toHost, toLan], default: 'deny', defaultRuleId: 44 } }], forward);
    const during = eventsDuring(() => expect(echo(NS.s, 'tcp', ADDR.routerWan, FORWARDED_PORT)).toBe(true));
    const tracked = datapath.conntrackEntries();
    // As s sent it (wan side, to the router) and as DNAT rewrote it (lan side, to c): the tuple c answers from.
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: TCP, source: ADDR.s, destination: ADDR.routerWan, dport: FORWARDED_PORT, srcZone: WAN, dstZone: ZONE_HOST, ruleId: 45 }));
    expect(tracked).toContainEqual(expect.objectContaining({ protocol: TCP, source: ADDR.s, destination: ADDR.c, dport: serverC.tcp, srcZone: WAN, dstZone: LAN, ruleId: 46 }));
    // Nothing of it met a zone's deny (c's answers included).
    expect(during.filter((e) => e.protocol === TCP && (e.dport === FORWARDED_PORT || touches(e, ADDR.c, serverC.tcp)))).toEqual([]);

    // c opens nothing towards wan (nor towards the router): lan's default.
    const events = eventsDuring(() => {
      expect({ tcp: echo(NS.c, 'tcp', ADDR.s, serverS.tcp, 800), udp: echo(NS.c, 'udp', ADDR.s, serverS.udp, 800), pingS: ping(NS.c, ADDR.s), pingR: ping(NS.c, ADDR.routerLan) }).toEqual({
        tcp: false,
        udp: false,
        pingS: false,
        pingR: false,
      });
    });
    expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-default', hook: 'tc-ingress', protocol: TCP, source: ADDR.c, destination: ADDR.s, dport: serverS.tcp, srcZone: LAN, dstZone: WAN, ruleId: 42 }));
    expect(datapath.conntrackEntries().filter((e) => e.source === ADDR.c)).toEqual([]);
    // The forwarded port only: s still cannot reach c's UDP server, forwarded or not.
    expect(echo(NS.s, 'udp', ADDR.c, serverC.udp, 800)).toBe(false);
  });

  test('removing the zones and the NAT opens the path both ways again, without translation', async () => {
    sequence++;
    const req = { id: `zone-nat-${sequence}-${randomBytes(2).toString('hex')}`, author: 'zone-nat-test', reason: 'clean up', targets: [NODE], patch: { zones: { remove: ['lan', 'wan'] }, nat: { sourceNat: [], portForwards: [] } } } as ChangeRequestInput;
    const result = await (await env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] })).result();
    expect(result.phase).toBe('applied');
    datapath.flushConntrack();
    expect({ cs: echo(NS.c, 'tcp', ADDR.s, serverS.tcp), sc: echo(NS.s, 'tcp', ADDR.c, serverC.tcp), forward: echo(NS.s, 'tcp', ADDR.routerWan, FORWARDED_PORT, 800) }).toEqual({ cs: true, sc: true, forward: false });
    expect(datapath.conntrackEntries()).toEqual([]);
  });
});
