/**
 * The network parts of the config model and planner (interfaces, VLANs, addresses,
 * policy rules, ECMP routes, NAT): validation names the field and the rule, every plan
 * is ordered and every operation has an exact inverse. Pure logic, no privileges.
 */
import { portForwardExpr, sourceNatExpr } from '../../activities/system/nat-table';
import { formatIssues, validateChangeRequest } from '../../model/change-request';
import { nodeStateSchema, type NodeStateInput, type ObservedInterface, type ObservedNodeState } from '../../model/node-state';
import {
  inverseOf,
  planAddresses,
  planLinks,
  planNat,
  planNodeChange,
  planRoutes,
  planRules,
  planVlans,
  planZones,
  restorableInterfaces,
  renderPlan,
  resolveDesired,
  stateDifferences,
} from '../../model/plan';

const NOW = Date.parse('2026-11-22T00:00:00Z');
const parse = (state: NodeStateInput) => nodeStateSchema.parse(state);

function refusal(desired: unknown): string {
  const result = validateChangeRequest({ id: 'net', author: 'alice', reason: 'test', targets: ['router-1'], desired }, NOW);
  expect(result.ok).toBe(false);
  return result.ok ? '' : formatIssues(result.issues);
}

describe('network validation names the field and the rule', () => {
  test.each<[string, unknown, string]>([
    ['a VLAN id out of range', { interfaces: [{ name: 'eth0.5000', vlan: { parent: 'eth0', id: 5000 } }] }, 'desired.interfaces[0].vlan.id: must be a VLAN id 1–4094'],
    ['VLAN id 0', { interfaces: [{ name: 'eth0.0', vlan: { parent: 'eth0', id: 0 } }] }, 'desired.interfaces[0].vlan.id: must be a VLAN id 1–4094'],
    ['a VLAN parent that is not an interface name', { interfaces: [{ name: 'v5', vlan: { parent: 'eth0 type', id: 5 } }] }, 'desired.interfaces[0].vlan.parent: must be an interface name'],
    ['an interface name too long for the kernel', { interfaces: [{ name: 'a-very-long-name0', mtu: 1500 }] }, 'desired.interfaces[0].name: must be an interface name'],
    ['two VLANs with one parent and id', { interfaces: [{ name: 'a', vlan: { parent: 'eth0', id: 5 } }, { name: 'b', vlan: { parent: 'eth0', id: 5 } }] }, 'desired.interfaces[1]: duplicate VLAN (parent, id) "eth0.5"'],
    ['an MTU below 68', { interfaces: [{ name: 'eth0', mtu: 60 }] }, 'desired.interfaces[0].mtu: must be an MTU of 68 or more'],
    ['IPv6 with an MTU below 1280', { interfaces: [{ name: 'eth0', mtu: 1000, addresses: ['2001:db8::1/64'] }] }, 'desired.interfaces[0].mtu: IPv6 needs an MTU of at least 1280'],
    ['a bad interface address', { interfaces: [{ name: 'eth0', addresses: ['10.0.0.300/24'] }] }, 'desired.interfaces[0].addresses[0]: "10.0.0.300/24" is not an interface address'],
    ['the same address twice in two spellings', { interfaces: [{ name: 'eth0', addresses: ['2001:db8::1/64', '2001:DB8:0::1/64'] }] }, 'desired.interfaces[0].addresses[1]: duplicate address "2001:db8::1/64"'],
    ['a rule priority of the kernel', { rules: [{ priority: 32766, from: '10.0.0.0/8', table: 100 }] }, 'desired.rules[0].priority: must be 1–32765'],
    ['a rule without a family', { rules: [{ priority: 100, fwmark: 1, table: 100 }] }, 'desired.rules[0].family: give "family" (4 or 6) when neither "from" nor "to" is given'],
    ['a rule mixing families', { rules: [{ priority: 100, from: '10.0.0.0/8', to: '2001:db8::/32', table: 100 }] }, 'desired.rules[0].to: "from", "to" and "family" must all be of one IP family'],
    ['a rule prefix with host bits', { rules: [{ priority: 100, from: '10.0.0.1/8', table: 100 }] }, 'desired.rules[0].from: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?'],
    ['an ECMP route with one next hop', { routes: [{ destination: '10.0.0.0/8', nexthops: [{ gateway: '192.0.2.1' }] }] }, 'desired.routes[0].nexthops: an ECMP route needs at least 2 next hops'],
    ['an ECMP next hop of the other family', { routes: [{ destination: '10.0.0.0/8', nexthops: [{ gateway: '192.0.2.1' }, { gateway: '2001:db8::1' }] }] }, 'desired.routes[0].nexthops[1].gateway: gateway 2001:db8::1 is IPv6 but destination 10.0.0.0/8 is IPv4'],
    ['ECMP and a gateway at once', { routes: [{ destination: '10.0.0.0/8', gateway: '192.0.2.9', nexthops: [{ gateway: '192.0.2.1' }, { gateway: '192.0.2.2' }] }] }, 'desired.routes[0].nexthops: give either "nexthops" (ECMP) or "gateway"/"device", not both'],
    ['a weight above 256', { routes: [{ destination: '10.0.0.0/8', nexthops: [{ gateway: '192.0.2.1', weight: 300 }, { gateway: '192.0.2.2' }] }] }, 'desired.routes[0].nexthops[0].weight: must be 1–256'],
    ['SNAT to the other family', { nat: { sourceNat: [{ source: '10.0.0.0/8', outInterface: 'wan0', to: '2001:db8::1' }] } }, 'desired.nat.sourceNat[0].to: "to" 2001:db8::1 and "source" 10.0.0.0/8 are of different IP families'],
    ['a port forward to port 0', { nat: { portForwards: [{ protocol: 'tcp', port: 0, to: '10.0.0.2' }] } }, 'desired.nat.portForwards[0].port: must be a port 1–65535'],
    ['a port forward of an unknown protocol', { nat: { portForwards: [{ protocol: 'sctp', port: 80, to: '10.0.0.2' }] } }, 'desired.nat.portForwards[0].protocol'],
    ['two forwards of one port', { nat: { portForwards: [{ protocol: 'tcp', port: 80, to: '10.0.0.2' }, { protocol: 'tcp', port: 80, to: '10.0.0.3' }] } }, 'desired.nat.portForwards[1]: duplicate port forward "ipv4 tcp/80 in any to any"'],
    ['a zone id of the router itself', { zones: [{ name: 'lan', id: 255 }] }, 'desired.zones[0].id: must be a zone id 1–254'],
    ['a zone name nft cannot carry', { zones: [{ name: 'LAN-1', id: 1 }] }, 'desired.zones[0].name: must be a zone name'],
    ['an interface in two zones', { zones: [{ name: 'lan', id: 1, interfaces: ['eth1'] }, { name: 'dmz', id: 2, interfaces: ['eth1'] }] }, 'desired.zones[1].interfaces: interface eth1 is already in zone lan'],
    ['two zones with one id', { zones: [{ name: 'lan', id: 1 }, { name: 'dmz', id: 1 }] }, 'desired.zones[1]: duplicate zone id "1"'],
    ['overlapping prefixes in a zone', { zones: [{ name: 'lan', id: 1, prefixes: ['10.0.0.0/8', '10.1.0.0/16'] }] }, 'desired.zones[0].prefixes[1]: 10.1.0.0/16 overlaps 10.0.0.0/8 (index 0) of the same zone'],
    ['an outgoing interface that could carry an option', { nat: { sourceNat: [{ source: '10.0.0.0/8', outInterface: '-x' }] } }, 'desired.nat.sourceNat[0].outInterface: must be an interface name'],
  ])('refuses %s', (_what, desired, message) => {
    expect(refusal(desired)).toContain(message);
  });

  test('parsing canonicalises: addresses sorted, ECMP next hops sorted, port forward target port filled, rule family derived', () => {
    const state = parse({
      interfaces: [{ name: 'lan0', addresses: ['2001:DB8::1/64', '10.0.0.1/24'] }],
      routes: [{ destination: '10.9.0.0/24', nexthops: [{ gateway: '10.0.0.9' }, { gateway: '10.0.0.2', weight: 2 }] }],
      rules: [{ priority: 10, to: '2001:db8::/32', fwmark: 16, table: 'main' }],
      nat: { portForwards: [{ protocol: 'udp', port: 53, to: '10.0.0.53' }] },
    });
    expect(state.interfaces[0]?.addresses).toEqual(['10.0.0.1/24', '2001:db8::1/64']);
    expect(state.routes[0]?.nexthops?.map((h) => h.gateway)).toEqual(['10.0.0.2', '10.0.0.9']);
    expect(state.rules[0]).toEqual({ family: 6, priority: 10, to: '2001:db8::/32', fwmark: 16, fwmask: 0xffffffff, table: 254 });
    expect(state.nat.portForwards[0]?.toPort).toBe(53);
  });
});

describe('network planner', () => {
  const lan: ObservedInterface = { name: 'lan0', mtu: 1500, up: true, addresses: ['10.0.0.1/24', 'fd00::1/64'] };
  const wan: ObservedInterface = { name: 'wan0', mtu: 1500, up: false, addresses: [] };
  const ownVlan: ObservedInterface = { name: 'lan0.7', vlan: { parent: 'lan0', id: 7 }, mtu: 1500, up: true, addresses: ['10.7.0.1/24'] };
  const foreignVlan: ObservedInterface = { name: 'lan0.8', mtu: 1500, up: true, addresses: [] }; // not marked as fos1's

  test('links: only named interfaces and only named fields change; inverses restore the previous values', () => {
    const ops = planLinks([lan, wan], [{ name: 'wan0', up: true, mtu: 9000 }, { name: 'lan0', addresses: [] }]);
    expect(ops).toEqual([{ subsystem: 'links', action: 'set', name: 'wan0', settings: { mtu: 9000, up: true }, previous: { mtu: 1500, up: false } }]);
    expect(inverseOf(ops[0]!)).toEqual({ subsystem: 'links', action: 'set', name: 'wan0', settings: { mtu: 1500, up: false }, previous: { mtu: 9000, up: true } });
  });

  test('VLANs: fos1 deletes only its own, unnamed VLANs; a moved VLAN is deleted before it is re-created', () => {
    expect(planVlans([lan, ownVlan, foreignVlan], [{ name: 'lan0' }]).map((o) => `${o.action} ${o.vlan.name}`)).toEqual(['delete lan0.7']);
    const moved = planVlans([lan, ownVlan], [{ name: 'lan0.7', vlan: { parent: 'lan0', id: 9 }, up: true }]);
    expect(moved.map((o) => `${o.action} ${o.vlan.name} id ${o.vlan.id}`)).toEqual(['delete lan0.7 id 7', 'add lan0.7 id 9']);
    // The inverse of a delete re-creates the VLAN as it was (MTU and state included).
    expect(inverseOf(moved[0]!)).toEqual({ subsystem: 'vlans', action: 'add', vlan: { name: 'lan0.7', parent: 'lan0', id: 7, mtu: 1500, up: true } });
    expect(planVlans([lan, ownVlan], [{ name: 'lan0.7', vlan: { parent: 'lan0', id: 7 } }])).toEqual([]);
  });

  test('addresses: adds before deletes, only on interfaces whose list is given; a re-created VLAN starts empty', () => {
    const ops = planAddresses([lan, wan, ownVlan], [
      { name: 'lan0', addresses: ['10.0.0.1/24', '10.0.1.1/24'] },
      { name: 'wan0' },
      { name: 'lan0.7', vlan: { parent: 'lan0', id: 9 }, addresses: ['10.7.0.1/24'] },
    ]);
    expect(ops.map((o) => `${o.action} ${o.address} ${o.device}`)).toEqual(['add 10.0.1.1/24 lan0', 'add 10.7.0.1/24 lan0.7', 'delete fd00::1/64 lan0']);
  });

  test('rules: identity is the whole rule; adds before deletes', () => {
    const [a, b] = parse({ rules: [{ priority: 100, from: '10.0.0.0/8', table: 100 }, { priority: 100, from: '10.0.0.0/8', table: 200 }] }).rules;
    const ops = planRules([a!], [b!]);
    expect(ops.map((o) => o.action)).toEqual(['add', 'delete']);
    expect(renderPlan({ ...planNodeChange({ routes: [] }, { routes: [] }), rules: ops })).toEqual([
      '+ rule -4 priority 100 from 10.0.0.0/8 table 200',
      '- rule -4 priority 100 from 10.0.0.0/8 table 100',
    ]);
  });

  test('ECMP: a changed weight replaces the route; the same hops in another order are no change', () => {
    const [have] = parse({ routes: [{ destination: '10.9.0.0/24', nexthops: [{ gateway: '10.0.0.2' }, { gateway: '10.0.0.3' }] }] }).routes;
    const [reordered] = parse({ routes: [{ destination: '10.9.0.0/24', nexthops: [{ gateway: '10.0.0.3' }, { gateway: '10.0.0.2' }] }] }).routes;
    const [weighted] = parse({ routes: [{ destination: '10.9.0.0/24', nexthops: [{ gateway: '10.0.0.3', weight: 5 }, { gateway: '10.0.0.2' }] }] }).routes;
    expect(planRoutes([have!], [reordered!])).toEqual([]);
    expect(planRoutes([have!], [weighted!]).map((o) => o.action)).toEqual(['replace']);
  });

  test('zones: changed members replace the zone (with an exact inverse); adds before deletes', () => {
    const zones = (list: NodeStateInput['zones']) => parse({ zones: list }).zones;
    const have = zones([{ name: 'lan', id: 1, interfaces: ['lan0'] }, { name: 'old', id: 9 }]);
    const want = zones([{ name: 'lan', id: 1, interfaces: ['lan0', 'lan1'], prefixes: ['10.0.0.0/8'] }, { name: 'dmz', id: 2 }]);
    const ops = planZones(have, want);
    expect(ops.map((o) => `${o.action} ${o.zone.name}`)).toEqual(['add dmz', 'replace lan', 'delete old']);
    expect(inverseOf(ops[1]!)).toEqual({ subsystem: 'zones', action: 'replace', zone: have[0], previous: want[0] });
    expect(planZones(want, want)).toEqual([]);
  });

  test('NAT: the common head of a chain stays, the new tail is appended before the old one goes', () => {
    const nat = (sources: string[]) => parse({ nat: { sourceNat: sources.map((source) => ({ source, outInterface: 'wan0' })) } }).nat;
    const ops = planNat(nat(['10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/16']), nat(['10.1.0.0/16', '10.4.0.0/16']));
    expect(ops.map((o) => `${o.action} ${o.index} ${o.chain === 'postrouting' ? o.rule.source : ''}`)).toEqual([
      'add 3 10.4.0.0/16',
      'delete 2 10.3.0.0/16',
      'delete 1 10.2.0.0/16',
    ]);
    // A reorder is a change (first match wins), not a no-op.
    expect(planNat(nat(['10.1.0.0/16', '10.2.0.0/16']), nat(['10.2.0.0/16', '10.1.0.0/16']))).toHaveLength(4);
    expect(planNat(nat(['10.1.0.0/16']), nat(['10.1.0.0/16']))).toEqual([]);
  });

  test('NAT rules are written as nft JSON, never nft syntax, with the family made explicit', () => {
    const [masq, snat66] = parse({ nat: { sourceNat: [{ source: '0.0.0.0/0', outInterface: 'wan0' }, { source: 'fd00::/64', outInterface: 'wan0', to: '2001:db8::1' }] } }).nat.sourceNat;
    expect(sourceNatExpr(masq!)).toEqual([
      { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv4' } },
      { match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'wan0' } },
      { masquerade: null },
    ]);
    expect(sourceNatExpr(snat66!)[2]).toEqual({ snat: { family: 'ip6', addr: '2001:db8::1' } });
    const [forward] = parse({ nat: { portForwards: [{ protocol: 'tcp', port: 443, destination: '192.0.2.1', to: '10.0.0.5', toPort: 8443 }] } }).nat.portForwards;
    expect(portForwardExpr(forward!)).toEqual([
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '192.0.2.1' } },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 443 } },
      { dnat: { family: 'ip', addr: '10.0.0.5', port: 8443 } },
    ]);
  });

  test('a restore brings back fos1\'s VLANs and interfaces still present, not foreign ones that vanished', () => {
    const snapshot = [lan, wan, ownVlan];
    expect(restorableInterfaces(snapshot, [lan]).map((i) => i.name)).toEqual(['lan0', 'lan0.7']);
  });

  test('a patch upserts interfaces and rules on the snapshot and leaves NAT alone unless given', () => {
    const snapshot: ObservedNodeState = {
      interfaces: [lan, wan],
      routes: [],
      rules: parse({ rules: [{ priority: 100, from: '10.0.0.0/8', table: 100 }] }).rules,
      zones: [],
      nat: parse({ nat: { sourceNat: [{ source: '10.0.0.0/8', outInterface: 'wan0' }] } }).nat,
      rateLimits: [],
      blocklist: [],
    };
    const result = validateChangeRequest(
      {
        id: 'p',
        author: 'a',
        reason: 'r',
        targets: ['n'],
        patch: { interfaces: { upsert: [{ name: 'wan0', up: true }] }, rules: { remove: [{ priority: 100, from: '10.0.0.0/8', table: 100 }] } },
      },
      NOW,
    );
    if (!result.ok) throw new Error(formatIssues(result.issues));
    const desired = resolveDesired(snapshot, result.request);
    expect(desired.interfaces).toEqual([lan, { name: 'wan0', up: true }]);
    expect(desired.rules).toEqual([]);
    expect(desired.nat).toEqual(snapshot.nat);
    expect(renderPlan(planNodeChange(snapshot, desired))).toEqual(['~ link wan0 down => up', '- rule -4 priority 100 from 10.0.0.0/8 table 100']);
    // The snapshot compared with itself has no differences; with the desired state it has.
    expect(stateDifferences(snapshot, snapshot)).toEqual([]);
    expect(stateDifferences(snapshot, desired)).toHaveLength(2);
  });
});
