/**
 * fos1's eBPF firewall with real traffic: two network namespaces joined by a veth
 * pair, the programs attached to the server side (TC ingress + egress, and XDP in its
 * own test), ping / TCP / UDP from the client. Maps are pinned under a private folder
 * in /sys/fs/bpf and everything is removed afterwards.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { queryTc, queryXdp } from '../../bpf/attach';
import { BlocklistMaps } from '../../bpf/blocklist-maps';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import type { DropEvent } from '../../bpf/datapath-codec';
import { ifindexOf, inNetns } from '../../bpf/netns';
import { cacheDir } from '../../scripts/paths';
import { ADDR, type EchoServer, NetnsPair } from '../../bench/datapath/netns-pair';
import { describePrivileged } from '../helpers/capabilities';

const SIZES = { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024 };
const TCP = 6;
const UDP = 17;

describePrivileged('eBPF datapath with real traffic between two namespaces', ['root', 'netns', 'bpffs', 'iproute2'], () => {
  let pair: NetnsPair;
  let pinDir: string;
  let datapath: Datapath;
  let blocklist: BlocklistMaps;
  let server: EchoServer;
  let ifindexB: number;

  beforeAll(async () => {
    const objects = buildDatapath({ cacheDir: cacheDir() });
    pair = NetnsPair.create();
    pinDir = `/sys/fs/bpf/fos1-dp-${randomBytes(4).toString('hex')}`;
    datapath = Datapath.load({ pinDir, objects, sizes: SIZES });
    blocklist = BlocklistMaps.open({ pinDir, maxEntriesV4: SIZES.blocklistV4, maxEntriesV6: SIZES.blocklistV6, hostMaps: { maxEntriesV4: SIZES.hostsV4, maxEntriesV6: SIZES.hostsV6 } });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    server = await pair.startEchoServer(2);
    ifindexB = inNetns(pair.b, () => ifindexOf(pair.ifB));
  });

  afterAll(() => {
    blocklist?.close();
    datapath?.unpin();
    datapath?.close();
    pair?.destroy();
    if (pinDir) {
      expect(existsSync(`${pinDir}/blocklist_v4`)).toBe(false);
      rmSync(pinDir, { recursive: true, force: true });
    }
  });

  afterEach(() => {
    blocklist.remove(blocklist.readAll().map((e) => e.cidr));
  });

  function reachable() {
    return {
      ping4: pair.ping(ADDR.b4),
      ping6: pair.ping(ADDR.b6),
      tcp4: pair.echo('tcp', ADDR.b4, server.tcp[0]!).ok,
      udp4: pair.echo('udp', ADDR.b4, server.udp[0]!).ok,
      tcp6: pair.echo('tcp', ADDR.b6, server.tcp[0]!).ok,
      udp6: pair.echo('udp', ADDR.b6, server.udp[0]!).ok,
    };
  }
  const ALL_UP = { ping4: true, ping6: true, tcp4: true, udp4: true, tcp6: true, udp6: true };

  it('pins every map and attaches at TC ingress and egress; attaching again is a no-op that keeps one filter', () => {
    for (const name of ['blocklist_v4', 'blocklist_v6', 'blockhost_v4', 'blockhost_v6', 'zone_policy', 'zone_default', 'zone_ifaces', 'rule_stats', 'entry_stats', 'drop_events', 'last_drop', 'drop_stats']) {
      expect(existsSync(`${pinDir}/${name}`)).toBe(true);
    }
    const ingress = queryTc({ interface: pair.ifB, netns: pair.b, direction: 'ingress' });
    expect(ingress).toBeGreaterThan(0);
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    expect(queryTc({ interface: pair.ifB, netns: pair.b, direction: 'ingress' })).toBeGreaterThan(0);
    expect(queryTc({ interface: pair.ifB, netns: pair.b, direction: 'egress' })).toBeGreaterThan(0);
  });

  it('reads the zone policy back through the typed map view', () => {
    datapath.setZoneRule({ srcZone: 9, dstZone: 255, protocol: 17, dport: 53 }, { action: 'log', ruleId: 42 });
    try {
      expect(datapath.zonePolicy.get({ srcZone: 9, dstZone: 255, protocol: 17, dport: 53 })).toEqual({ action: 'log', ruleId: 42 });
      expect(datapath.zonePolicy.entries()).toEqual([[{ srcZone: 9, dstZone: 255, protocol: 17, dport: 53 }, { action: 'log', ruleId: 42 }]]);
    } finally {
      expect(datapath.removeZoneRule({ srcZone: 9, dstZone: 255, protocol: 17, dport: 53 })).toBe(true);
    }
    expect(datapath.zonePolicy.entries()).toEqual([]);
  });

  it('passes ping, TCP and UDP over IPv4 and IPv6 with an empty blocklist', () => {
    expect(reachable()).toEqual(ALL_UP);
  });

  it.each([
    ['IPv4 host', `${ADDR.a4}/32`, ['ping4', 'tcp4', 'udp4']],
    ['IPv4 prefix', '10.99.0.0/28', ['ping4', 'tcp4', 'udp4']],
    ['IPv6 host', `${ADDR.a6}/128`, ['ping6', 'tcp6', 'udp6']],
    ['IPv6 prefix', 'fd00:99::/120', ['ping6', 'tcp6', 'udp6']],
  ])('a blocklist %s entry stops that family, its removal restores it', (_what, cidr, blocked) => {
    blocklist.upsert([{ cidr }]);
    const expected = { ...ALL_UP, ...Object.fromEntries(blocked.map((k) => [k, false])) };
    expect(reachable()).toEqual(expected);
    blocklist.remove([cidr]);
    expect(reachable()).toEqual(ALL_UP);
  });

  it('blocks by destination too: a blocked server address is not reachable', () => {
    blocklist.upsert([{ cidr: `${ADDR.b4}/32` }]);
    expect(pair.ping(ADDR.b4)).toBe(false);
    expect(pair.ping(ADDR.b6)).toBe(true);
  });

  it('ignores an expired entry and enforces one that expires in the future', () => {
    const now = Math.floor(Date.now() / 1000);
    blocklist.upsert([{ cidr: `${ADDR.a4}/32`, expiresAt: now - 120 }]);
    expect(pair.ping(ADDR.b4)).toBe(true);
    blocklist.upsert([{ cidr: `${ADDR.a4}/32`, expiresAt: now + 3600 }]);
    expect(pair.ping(ADDR.b4)).toBe(false);
  });

  it('reports each drop on the ring buffer with 5-tuple, interface, hook and the matching entry, and counts it', () => {
    const events: DropEvent[] = [];
    const consumer = datapath.events((e) => events.push(e));
    try {
      consumer.consume(); // drain events of earlier tests
      events.length = 0;
      const before = datapath.entryCounter(`${ADDR.a4}/32`);
      const dropsBefore = datapath.dropCounts();
      blocklist.upsert([{ cidr: `${ADDR.a4}/32` }, { cidr: 'fd00:99::/120' }]);
      expect(pair.echo('udp', ADDR.b4, server.udp[1]!, 300).ok).toBe(false);
      expect(pair.echo('tcp', ADDR.b6, server.tcp[1]!, 300).ok).toBe(false);
      expect(consumer.consume()).toBeGreaterThan(0);

      const udp = events.find((e) => e.protocol === UDP);
      expect(udp).toMatchObject({
        family: 4,
        source: ADDR.a4,
        destination: ADDR.b4,
        dport: server.udp[1],
        ifindex: ifindexB,
        hook: 'tc-ingress',
        reason: 'blocklist-host',
        action: 'deny',
        matched: `${ADDR.a4}/32`,
      });
      expect(udp!.sport).toBeGreaterThan(0);
      const tcp = events.find((e) => e.protocol === TCP);
      expect(tcp).toMatchObject({
        family: 6,
        source: ADDR.a6,
        destination: ADDR.b6,
        dport: server.tcp[1],
        hook: 'tc-ingress',
        reason: 'blocklist-prefix',
        matched: 'fd00:99::/120', // the trie entry, found by the program's prefix-length search
      });
      expect(datapath.entryCounter('fd00:99::/120').packets).toBeGreaterThanOrEqual(1n);
      const after = datapath.entryCounter(`${ADDR.a4}/32`);
      expect(after.packets - before.packets).toBeGreaterThanOrEqual(1n);
      expect(after.bytes).toBeGreaterThan(before.bytes);
      // drop_stats counts the same drops per reason (what a rollout's datapath gate reads).
      const drops = datapath.dropCounts();
      expect(drops['blocklist-host'] - dropsBefore['blocklist-host']).toBeGreaterThanOrEqual(1n);
      expect(drops['blocklist-prefix'] - dropsBefore['blocklist-prefix']).toBeGreaterThanOrEqual(1n);
      expect(drops['zone-rule']).toBe(dropsBefore['zone-rule']);
    } finally {
      consumer.close();
    }
  });

  describe('zone policy', () => {
    const ZONE_LAN = 7;
    const key = (protocol: number, dport: number) => ({ srcZone: ZONE_LAN, dstZone: 255, protocol, dport });

    beforeAll(() => {
      datapath.setInterfaceZone({ interface: pair.ifB, netns: pair.b }, ZONE_LAN);
    });
    afterAll(() => {
      datapath.setInterfaceZone({ interface: pair.ifB, netns: pair.b }, 0);
      datapath.setZoneDefault(ZONE_LAN, { action: 'allow', ruleId: 0 });
    });

    it('allows and denies per protocol and port, and counts per rule', () => {
      const [tcpOpen, tcpShut] = server.tcp as [number, number];
      const [udpOpen, udpShut] = server.udp as [number, number];
      datapath.setZoneRule(key(TCP, tcpShut), { action: 'deny', ruleId: 101 });
      datapath.setZoneRule(key(UDP, udpShut), { action: 'deny', ruleId: 102 });
      datapath.setZoneRule(key(TCP, tcpOpen), { action: 'allow', ruleId: 103 });
      try {
        const drops0 = datapath.dropCounts();
        const denied0 = datapath.ruleCounter(101);
        const allowed0 = datapath.ruleCounter(103);
        expect(pair.echo('tcp', ADDR.b4, tcpOpen).ok).toBe(true);
        expect(pair.echo('tcp', ADDR.b4, tcpShut, 300).ok).toBe(false);
        expect(pair.echo('udp', ADDR.b6, udpOpen).ok).toBe(true);
        expect(pair.echo('udp', ADDR.b6, udpShut, 300).ok).toBe(false);
        expect(pair.echo('tcp', ADDR.b6, tcpShut, 300).ok).toBe(false);
        expect(pair.ping(ADDR.b4)).toBe(true); // zone default is still allow
        // A TCP connect is retried (SYN retransmits) while the client waits: ≥ 2 SYNs.
        expect(datapath.ruleCounter(101).packets - denied0.packets).toBeGreaterThanOrEqual(2n);
        // The allowed exchange meets the rule once, with its SYN: the rest of it is tracked (conntrack).
        expect(datapath.ruleCounter(103).packets - allowed0.packets).toBeGreaterThanOrEqual(1n);
        // Every deny above (two TCP connects, one UDP datagram) counted under zone-rule; allowed packets are not drops.
        expect(datapath.dropCounts()['zone-rule'] - drops0['zone-rule']).toBeGreaterThanOrEqual(3n);
      } finally {
        for (const k of [key(TCP, tcpShut), key(UDP, udpShut), key(TCP, tcpOpen)]) datapath.removeZoneRule(k);
      }
      expect(pair.echo('tcp', ADDR.b4, tcpShut).ok).toBe(true);
    });

    it('applies the zone default (deny) with explicit allows as exceptions, and logs on a log rule', () => {
      const [tcpOpen, tcpOther] = server.tcp as [number, number];
      const events: DropEvent[] = [];
      const consumer = datapath.events((e) => events.push(e));
      datapath.setZoneDefault(ZONE_LAN, { action: 'deny', ruleId: 110 });
      datapath.setZoneRule(key(TCP, tcpOpen), { action: 'log', ruleId: 111 });
      try {
        consumer.consume();
        events.length = 0;
        const drops0 = datapath.dropCounts();
        expect(pair.ping(ADDR.b4)).toBe(false);
        expect(pair.echo('tcp', ADDR.b4, tcpOther, 300).ok).toBe(false);
        expect(pair.echo('tcp', ADDR.b4, tcpOpen).ok).toBe(true); // log = allow and report
        // IPv6 still resolves neighbours: NDP is exempt from zone policy.
        expect(pair.echo('tcp', ADDR.b6, tcpOpen).ok).toBe(true);
        consumer.consume();
        expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-default', action: 'deny', protocol: 1, srcZone: ZONE_LAN, dstZone: 255, ruleId: 110 }));
        expect(events).toContainEqual(expect.objectContaining({ reason: 'zone-rule', action: 'log', protocol: TCP, dport: tcpOpen, ruleId: 111 }));
        expect(datapath.ruleCounter(110).packets).toBeGreaterThan(0n);
        // The default's denies are drops; the log rule's packets passed, so zone-rule stays.
        const drops = datapath.dropCounts();
        expect(drops['zone-default'] - drops0['zone-default']).toBeGreaterThanOrEqual(2n);
        expect(drops['zone-rule']).toBe(drops0['zone-rule']);
      } finally {
        consumer.close();
        datapath.removeZoneRule(key(TCP, tcpOpen));
        datapath.setZoneDefault(ZONE_LAN, { action: 'allow', ruleId: 0 });
      }
      expect(pair.ping(ADDR.b4)).toBe(true);
    });
  });

  describe('XDP', () => {
    afterAll(() => {
      Datapath.detach({ interface: pair.ifB, netns: pair.b });
      datapath.attach({ interface: pair.ifB, netns: pair.b });
    });

    it('drops blocked traffic before the stack, in native mode on veth; detach is idempotent', () => {
      // Only XDP: take the TC filters off so a pass proves the XDP program decided.
      Datapath.detach({ interface: pair.ifB, netns: pair.b });
      expect(queryTc({ interface: pair.ifB, netns: pair.b, direction: 'ingress' })).toBeNull();
      const { xdpMode } = datapath.attach({ interface: pair.ifB, netns: pair.b, tc: [], xdp: 'auto' });
      expect(xdpMode).toBe('native');
      expect(queryXdp({ interface: pair.ifB, netns: pair.b })).toBeGreaterThan(0);
      expect(pair.ping(ADDR.b4)).toBe(true);

      const events: DropEvent[] = [];
      const consumer = datapath.events((e) => events.push(e));
      try {
        consumer.consume();
        events.length = 0;
        // Nested prefixes: the event names the longest one, as the trie matched it.
        blocklist.upsert([{ cidr: '10.0.0.0/8' }, { cidr: '10.99.0.0/24' }, { cidr: '10.99.0.0/30' }]);
        expect(pair.ping(ADDR.b4)).toBe(false);
        expect(pair.ping(ADDR.b6)).toBe(true);
        consumer.consume();
        expect(events).toContainEqual(expect.objectContaining({ hook: 'xdp', reason: 'blocklist-prefix', source: ADDR.a4, protocol: 1, matched: '10.99.0.0/30' }));
      } finally {
        consumer.close();
      }
      Datapath.detach({ interface: pair.ifB, netns: pair.b });
      Datapath.detach({ interface: pair.ifB, netns: pair.b });
      expect(queryXdp({ interface: pair.ifB, netns: pair.b })).toBeNull();
      expect(pair.ping(ADDR.b4)).toBe(true); // nothing attached any more
    });
  });
});
