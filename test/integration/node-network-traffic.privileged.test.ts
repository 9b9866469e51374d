/**
 * Node network configuration on real kernel state, proven with real packets.
 *
 * Four network namespaces: host A (a LAN client), the router (the fos1 node), and two
 * upstreams B and C. B and C both answer on 10.99.0.1 / fd00:99::1 and have no route back
 * to the LAN, so an answer at all proves source NAT, and *who* answers proves which
 * routing table the router used. The node activities run exactly as the worker runs them
 * (iproute2 and nft in the router namespace); the test only cables the namespaces.
 *
 * Privileged: needs root, network namespaces, bpffs (the node state includes the blocklist
 * maps), iproute2 and nftables.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import pino from 'pino';
import { createNodeActivities, type NodeActivities } from '../../activities/node-activities';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { nodeStateSchema, type NodeState, type NodeStateInput, type ObservedInterface } from '../../model/node-state';
import { NETWORK_SUBSYSTEMS, type NetworkSubsystem, type ResolvedNetwork, stateDifferences } from '../../model/plan';
import type { IntentOf, StateCheck } from '../../model/subsystem';
import { createNodeDeps } from '../../workers/fos1-worker';
import { describePrivileged } from '../helpers/capabilities';

const suffix = randomBytes(3).toString('hex');
const NS = { a: `fos1n-a-${suffix}`, router: `fos1n-r-${suffix}`, b: `fos1n-b-${suffix}`, c: `fos1n-c-${suffix}` };
const NAT_TABLE = `fos1_t${suffix}`;

/** Runs `ip` (or, with `exec`, any command) in a namespace; test cabling only. */
function inNs(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['-n', ns, ...args]).toString();
}
function execIn(ns: string, ...argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** A TCP server in a namespace that answers every connection with `NAME <client address>`. */
const SERVER = `
const net = require('net');
const [name, port] = process.argv.slice(1);
const server = net.createServer((s) => s.end(name + ' ' + s.remoteAddress.replace(/^::ffff:/, '')));
server.listen(Number(port), '::', () => console.log(server.address().port));
`;
const CLIENT = `
const net = require('net');
const [host, port] = process.argv.slice(1);
let data = '';
const s = net.connect({ host, port: Number(port), timeout: 1500 });
s.on('data', (c) => (data += c));
s.on('end', () => process.stdout.write(data));
s.on('timeout', () => { process.stdout.write('TIMEOUT'); s.destroy(); });
s.on('error', (e) => process.stdout.write('ERROR ' + e.code));
`;

const servers: ChildProcess[] = [];
function startServer(ns: string, name: string, port = 0): Promise<number> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', SERVER, name, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`server in ${ns} exited with ${code}`)));
  });
}

/** Connects from a namespace; returns the server's answer (`B 10.2.0.1`), or TIMEOUT / ERROR code. */
function connectFrom(ns: string, host: string, port: number): string {
  return execIn(ns, process.execPath, '-e', CLIENT, host, String(port)).trim();
}

/** Everything fos1 may touch in the router namespace, as the raw tools print it. */
function routerDump() {
  const json = (...args: string[]) => JSON.parse(inNs(NS.router, '-json', ...args) || '[]') as unknown;
  let nat: unknown = null;
  try {
    nat = JSON.parse(execIn(NS.router, 'nft', '-j', 'list', 'table', 'inet', NAT_TABLE));
  } catch {
    nat = 'absent';
  }
  return {
    links: json('link', 'show'),
    addresses: json('address', 'show'),
    routes4: json('-4', 'route', 'show', 'table', 'all'),
    routes6: json('-6', 'route', 'show', 'table', 'all'),
    rules4: json('-4', 'rule', 'show'),
    rules6: json('-6', 'rule', 'show'),
    nat,
    foreignNat: JSON.parse(execIn(NS.router, 'nft', '-j', 'list', 'table', 'inet', 'foreign')) as unknown,
  };
}

describePrivileged('node network configuration with real traffic (privileged)', ['root', 'netns', 'bpffs', 'iproute2'], () => {
  const pinDir = `/sys/fs/bpf/fos1-nettest-${suffix}`;
  let activities: NodeActivities;
  let snapshot: ResolvedNetwork;
  let before: ReturnType<typeof routerDump>;
  let port: number;
  let forwardPort: number;

  beforeAll(async () => {
    for (const ns of Object.values(NS)) {
      execFileSync('ip', ['netns', 'add', ns]);
      // Planned addresses: no duplicate address detection, so IPv6 is usable at once.
      execIn(ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0');
      inNs(ns, 'link', 'set', 'lo', 'up');
    }
    execIn(NS.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1');
    // Cabling: router interfaces stay down and unaddressed — configuring them is fos1's job.
    inNs(NS.router, 'link', 'add', 'r-lan', 'type', 'veth', 'peer', 'name', 'a0', 'netns', NS.a);
    inNs(NS.router, 'link', 'add', 'r-wan', 'type', 'veth', 'peer', 'name', 'b0', 'netns', NS.b);
    inNs(NS.router, 'link', 'add', 'r-wan2', 'type', 'veth', 'peer', 'name', 'c0', 'netns', NS.c);
    for (const dev of ['r-lan', 'r-wan', 'r-wan2']) {
      // The kernel attaches a device's default qdisc (noop → noqueue) the first time it comes
      // up and keeps it when it goes down: not state fos1 sets, and no rollback can undo it.
      // Up and down once, so the snapshot is of an interface as a router has it.
      inNs(NS.router, 'link', 'set', dev, 'up');
      inNs(NS.router, 'link', 'set', dev, 'down');
    }
    const host = (ns: string, dev: string, v4: string, v6: string, gw4: string, gw6: string) => {
      inNs(ns, 'link', 'set', dev, 'up');
      inNs(ns, 'address', 'add', v4, 'dev', dev);
      inNs(ns, 'address', 'add', v6, 'dev', dev, 'nodad');
      return { gw4, gw6 };
    };
    const a = host(NS.a, 'a0', '10.1.0.2/24', 'fd00:1::2/64', '10.1.0.1', 'fd00:1::1');
    inNs(NS.a, 'route', 'add', 'default', 'via', a.gw4);
    inNs(NS.a, '-6', 'route', 'add', 'default', 'via', a.gw6);
    host(NS.b, 'b0', '10.2.0.2/24', 'fd00:2::2/64', '', '');
    host(NS.c, 'c0', '10.3.0.2/24', 'fd00:3::2/64', '', '');
    for (const ns of [NS.b, NS.c]) {
      // The "internet" destination both upstreams answer on; neither knows the LAN.
      inNs(ns, 'address', 'add', '10.99.0.1/32', 'dev', 'lo');
      inNs(ns, 'address', 'add', 'fd00:99::1/128', 'dev', 'lo');
    }
    port = await startServer(NS.b, 'B');
    await startServer(NS.c, 'C', port);
    forwardPort = await startServer(NS.a, 'A');

    // State fos1 does not own, which it must never touch: a rule and a route without its
    // protocol number, and another nftables table with a NAT chain.
    inNs(NS.router, 'rule', 'add', 'priority', '500', 'from', '10.50.0.0/16', 'table', '100');
    inNs(NS.router, 'route', 'add', 'blackhole', '10.51.0.0/24', 'table', '100');
    execIn(NS.router, 'nft', 'add', 'table', 'inet', 'foreign');
    execIn(NS.router, 'nft', 'add', 'chain', 'inet', 'foreign', 'post', '{ type nat hook postrouting priority 50 ; }');
    execIn(NS.router, 'nft', 'add', 'rule', 'inet', 'foreign', 'post', 'ip', 'saddr', '10.52.0.0/16', 'masquerade');

    const logger = pino({ level: 'silent' });
    activities = createNodeActivities(
      createNodeDeps({ netns: NS.router, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 16, v6: 16 }, natTable: NAT_TABLE }, logger),
    );
    before = routerDump();
    snapshot = await readNetworkState();
  });

  /** The network tables as the node reads them: the by-value snapshots of a dry-run prepare. */
  async function readNetworkState(): Promise<ResolvedNetwork & { interfaces: ObservedInterface[] }> {
    const prepared = await activities.prepareSubsystems({ intents: Object.fromEntries(NETWORK_SUBSYSTEMS.map((s) => [s, { mode: 'keep' }])), dryRun: true });
    const state = <T>(s: NetworkSubsystem) => (prepared[s]?.snapshot?.check as StateCheck<T>).state;
    return { interfaces: state('links'), routes: state('routes'), rules: state('rules'), zones: state('zones'), nat: state('nat') };
  }

  /** Converges one table to `desired` through the node's apply activity. */
  function apply<S extends NetworkSubsystem>(subsystem: S, desired: Extract<IntentOf<S>, { mode: 'replace' }>['desired']) {
    return activities.applySubsystem({ subsystem, intent: { mode: 'replace', desired } as IntentOf<S> });
  }

  afterAll(() => {
    for (const s of servers) s.kill();
    for (const ns of Object.values(NS)) {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
    removePinnedBlocklist(pinDir);
  });

  /** Applies a whole desired state the way nodeChangeWorkflow does: each subsystem in order. */
  async function converge(state: NodeState | ResolvedNetwork): Promise<void> {
    await apply('links', state.interfaces);
    await apply('vlans', state.interfaces);
    await apply('addresses', state.interfaces);
    await apply('routes', state.routes);
    await apply('rules', state.rules);
    await apply('zones', state.zones);
    await apply('nat', state.nat);
  }

  const base: NodeStateInput = {
    interfaces: [
      { name: 'r-lan', up: true, addresses: ['10.1.0.1/24', 'fd00:1::1/64'] },
      { name: 'r-wan', up: true, addresses: ['10.2.0.1/24', 'fd00:2::1/64'] },
      { name: 'r-wan2', up: true, mtu: 1400, addresses: ['10.3.0.1/24', 'fd00:3::1/64'] },
    ],
    routes: [
      { destination: '10.99.0.0/24', gateway: '10.2.0.2' },
      { destination: '10.99.0.0/24', gateway: '10.3.0.2', table: 100 },
      { destination: 'fd00:99::/64', gateway: 'fd00:2::2' },
      { destination: 'fd00:99::/64', gateway: 'fd00:3::2', table: 100 },
      { destination: '10.98.0.0/24', table: 200, nexthops: [{ gateway: '10.3.0.2', weight: 2 }, { gateway: '10.2.0.2' }] },
      { destination: 'fd00:98::/64', table: 200, nexthops: [{ gateway: 'fd00:2::2' }, { gateway: 'fd00:3::2', weight: 3 }] },
    ],
    zones: [
      { name: 'lan', id: 1, interfaces: ['r-lan'], prefixes: ['10.1.0.0/24', 'fd00:1::/64'] },
      { name: 'wan', id: 2, interfaces: ['r-wan2', 'r-wan'] },
    ],
    nat: {
      sourceNat: [
        { source: '10.1.0.0/24', outInterface: 'r-wan' },
        { source: '10.1.0.0/24', outInterface: 'r-wan2' },
        { source: 'fd00:1::/64', outInterface: 'r-wan' },
        { source: 'fd00:1::/64', outInterface: 'r-wan2', to: 'fd00:3::1' },
      ],
      portForwards: [],
    },
  };
  const desired = (extra: Partial<NodeStateInput> = {}): NodeState => nodeStateSchema.parse({ ...base, ...extra });

  test('interfaces, addresses, multi-table and ECMP routes read back exactly as desired (dual stack)', async () => {
    const want = desired();
    await converge(want);
    const observed = await readNetworkState();
    expect(stateDifferences(observed, want)).toEqual([]);
    const wan2 = observed.interfaces.find((i) => i.name === 'r-wan2');
    expect(wan2).toEqual({ name: 'r-wan2', mtu: 1400, up: true, addresses: ['10.3.0.1/24', 'fd00:3::1/64'] });
    // ECMP: both families, weights as asked, next hops in a stable order.
    const ecmp = (dst: string) => observed.routes.find((r) => r.destination === dst);
    expect(ecmp('10.98.0.0/24')).toEqual({
      destination: '10.98.0.0/24',
      table: 200,
      metric: 0,
      nexthops: [
        { gateway: '10.2.0.2', device: 'r-wan', weight: 1 },
        { gateway: '10.3.0.2', device: 'r-wan2', weight: 2 },
      ],
    });
    expect(ecmp('fd00:98::/64')?.nexthops?.map((h) => [h.gateway, h.weight])).toEqual([
      ['fd00:2::2', 1],
      ['fd00:3::2', 3],
    ]);
    // Zones are named sets in fos1's table, for firewall rules to refer to.
    expect(observed.zones).toEqual(want.zones);
    const sets = (JSON.parse(execIn(NS.router, 'nft', '-j', 'list', 'sets', 'table', 'inet', NAT_TABLE)) as { nftables: { set?: { name: string; elem?: unknown[] } }[] }).nftables
      .flatMap((i) => (i.set ? [[i.set.name, i.set.elem ?? []]] : []));
    expect(Object.fromEntries(sets)).toEqual({
      zone1_lan_if: ['r-lan'],
      zone1_lan_v4: [{ prefix: { addr: '10.1.0.0', len: 24 } }],
      zone1_lan_v6: [{ prefix: { addr: 'fd00:1::', len: 64 } }],
      zone2_wan_if: expect.arrayContaining(['r-wan', 'r-wan2']),
      zone2_wan_v4: [],
      zone2_wan_v6: [],
    });
    // A second converge has nothing to do: every operation is idempotent.
    expect((await apply('routes', want.routes)).operations).toEqual([]);
    expect((await apply('nat', want.nat)).operations).toEqual([]);
    expect((await apply('addresses', want.interfaces)).operations).toEqual([]);
  });

  test('masquerade: host A reaches upstream B through the router, and B sees the router (IPv4 and IPv6)', async () => {
    await converge(desired());
    expect(connectFrom(NS.a, '10.99.0.1', port)).toBe('B 10.2.0.1');
    expect(connectFrom(NS.a, 'fd00:99::1', port)).toBe('B fd00:2::1');
  });

  test('without source NAT the upstream cannot answer (it has no route to the LAN)', async () => {
    await converge(desired({ nat: { sourceNat: [], portForwards: [] } }));
    expect(connectFrom(NS.a, '10.99.0.1', port)).toBe('TIMEOUT');
    // The zones keep fos1's table; with neither zones nor NAT desired fos1 removes it.
    expect(routerDump().nat).not.toBe('absent');
    await apply('zones', []);
    expect(routerDump().nat).toBe('absent');
  });

  test('policy rules steer the LAN into table 100 (upstream C); a rule for another source does not', async () => {
    await converge(
      desired({
        rules: [
          { priority: 1000, from: '10.1.0.0/24', iif: 'r-lan', table: 100 },
          { priority: 1000, from: 'fd00:1::/64', table: 100 },
          { priority: 1001, from: '10.7.0.0/16', table: 200 },
        ],
      }),
    );
    expect(connectFrom(NS.a, '10.99.0.1', port)).toBe('C 10.3.0.1');
    expect(connectFrom(NS.a, 'fd00:99::1', port)).toBe('C fd00:3::1'); // NAT66 to the explicit address
    const rules = JSON.parse(inNs(NS.router, '-4', '-json', 'rule', 'show')) as { priority: number; protocol?: string }[];
    expect(rules.filter((r) => r.protocol === String(DEFAULT_ROUTE_PROTOCOL)).map((r) => r.priority)).toEqual([1000, 1001]);
    expect(rules.map((r) => r.priority)).toContain(500); // the foreign rule stays
    expect((await readNetworkState()).rules.map((r) => `${r.family}:${r.priority}`)).toEqual(['4:1000', '4:1001', '6:1000']); // and is not read as fos1's
    // Dropping the rules steers traffic back to the main table (upstream B).
    await converge(desired({ rules: [] }));
    expect(connectFrom(NS.a, '10.99.0.1', port)).toBe('B 10.2.0.1');
  });

  test('a port forward on the router reaches the server in host A (IPv4 and IPv6)', async () => {
    await converge(
      desired({
        nat: {
          ...base.nat!,
          portForwards: [
            { protocol: 'tcp', port: 8080, inInterface: 'r-wan', destination: '10.2.0.1', to: '10.1.0.2', toPort: forwardPort },
            { protocol: 'tcp', port: 8080, inInterface: 'r-wan', to: 'fd00:1::2', toPort: forwardPort },
          ],
        },
      }),
    );
    // B connects to the router's WAN address; A's server answers and sees B (no source NAT inbound).
    expect(connectFrom(NS.b, '10.2.0.1', 8080)).toBe('A 10.2.0.2');
    expect(connectFrom(NS.b, 'fd00:2::1', 8080)).toBe('A fd00:2::2');
    // From C (not the forward's inbound interface) nothing is forwarded.
    expect(connectFrom(NS.c, '10.3.0.1', 8080)).toMatch(/ERROR|TIMEOUT/);
  });

  test('restoring the snapshot brings the router back exactly: ip -json and nft -j equal the first read', async () => {
    await converge(desired({ rules: [{ priority: 1000, from: '10.1.0.0/24', table: 100 }] }));
    expect(routerDump()).not.toEqual(before);
    await converge(snapshot);
    expect(stateDifferences(await readNetworkState(), snapshot)).toEqual([]);
    expect(routerDump()).toEqual(before); // foreign rule, route and nft table included, untouched
    expect(JSON.stringify(before.rules4)).toContain('"priority":500');
    expect(JSON.stringify(before.routes4)).toContain('10.51.0.0/24');
    expect(JSON.stringify(before.foreignNat)).toContain('masquerade');
    expect(connectFrom(NS.a, '10.99.0.1', port)).toMatch(/ERROR|TIMEOUT/);
  });
});
