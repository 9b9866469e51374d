/**
 * Zones in the eBPF zone maps, the pure parts: a change's zones (and their policy) as map
 * state, a patch resolved against the node, the planner's diff in the words of the other
 * subsystems, and the subsystem's verbs against an in-memory store (the real maps, with
 * real traffic, run in test/integration/zone-datapath.privileged.test.ts), and zone membership
 * operations (`patch.zoneMembers`) through both zone subsystems.
 */
import { prepareSubsystem } from '../../activities/subsystems';
import { onceScope } from '../../activities/subsystems/table';
import { createZoneMapsSubsystem, type ZoneMapStore } from '../../activities/subsystems/zonemaps';
import { createZonesSubsystem } from '../../activities/subsystems/zones';
import type { NatTable } from '../../activities/system/nat-table';
import { nodePatchSchema, zoneMembersPatchSchema } from '../../model/change-request';
import { patchZoneMembers, patchZonesAndMembers, planZones, ZoneMembershipError } from '../../model/plan';
import { nodeStateSchema, type Zone, type ZoneInput, zoneSchema } from '../../model/node-state';
import { changeScope, subsystemIntents } from '../../model/subsystem';
import {
  applyZoneMapOperations,
  invertZoneMapOperation,
  patchZoneMaps,
  planZoneMaps,
  renderZoneMapOperation,
  ZoneMapResolveError,
  type ZoneMapState,
  withZoneMembers,
  zoneMapsOf,
} from '../../model/zone-maps';

const zones = (input: ZoneInput[]): Zone[] => nodeStateSchema.parse({ zones: input }).zones;
const lanDmz = (): Zone[] =>
  zones([
    { name: 'lan', id: 1, interfaces: ['lan0', 'lan1'], policy: { rules: [{ to: 'dmz', protocol: 'tcp', port: 443, action: 'allow', ruleId: 7 }, { to: 'host', action: 'log' }] } },
    { name: 'dmz', id: 2, interfaces: ['dmz0'], prefixes: ['10.2.0.0/24'], policy: { default: 'deny', defaultRuleId: 9 } },
  ]);

describe('a change\'s zones as zone maps', () => {
  test('members by interface, rules resolved to ids (host = 255), defaults only where not "allow, uncounted"', () => {
    expect(zoneMapsOf(lanDmz())).toEqual({
      members: [
        { interface: 'dmz0', zone: 2 },
        { interface: 'lan0', zone: 1 },
        { interface: 'lan1', zone: 1 },
      ],
      rules: [
        { src: 1, dst: 2, protocol: 6, port: 443, action: 'allow', ruleId: 7 },
        { src: 1, dst: 255, protocol: 0, port: 0, action: 'log', ruleId: 0 },
      ],
      defaults: [{ zone: 2, action: 'deny', ruleId: 9 }],
    });
  });

  test('the schema refuses a rule towards an unknown zone, a port without tcp/udp, duplicates and a zone named "host", naming the field', () => {
    const issues = (input: unknown) => {
      const r = nodeStateSchema.safeParse({ zones: input });
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues([{ name: 'lan', id: 1, policy: { rules: [{ to: 'wan', action: 'allow' }] } }])).toEqual(['zones.0.policy.rules.0.to: zone "wan" is not a zone of this state (known: lan, or "host")']);
    expect(issues([{ name: 'lan', id: 1, policy: { rules: [{ to: 'host', protocol: 'icmp', port: 22, action: 'allow' }] } }])).toEqual(['zones.0.policy.rules.0.port: a port needs protocol "tcp" or "udp" (got "icmp")']);
    expect(issues([{ name: 'lan', id: 1, policy: { rules: [{ to: 'host', action: 'allow' }, { to: 'host', action: 'deny' }] } }])).toEqual([expect.stringMatching(/^zones\.0\.policy\.rules(\.1)?: .*duplicate/i)]);
    expect(issues([{ name: 'host', id: 1 }])).toEqual(['zones.0.name: "host" is reserved: it names the router itself in zone rules']);
    expect(issues([{ name: 'lan', id: 1, policy: { default: 'reject' } }])).toEqual([expect.stringMatching(/^zones\.0\.policy\.default: /)]);
  });
});

describe('a patch against the node\'s zone maps', () => {
  const observed = (): ZoneMapState => zoneMapsOf(lanDmz());
  const known = [
    { name: 'lan', id: 1 },
    { name: 'dmz', id: 2 },
  ];

  test('an upserted zone replaces everything of its id; other zones keep theirs; an interface moves to the upserted zone', () => {
    const dmz = zoneSchema.parse({ name: 'dmz', id: 2, interfaces: ['dmz0', 'lan1'], policy: { default: 'allow', rules: [{ to: 'lan', protocol: 'udp', port: 53, action: 'allow' }] } });
    const next = patchZoneMaps(observed(), known, { upsert: [dmz], remove: [] });
    expect(next.members).toEqual([
      { interface: 'dmz0', zone: 2 },
      { interface: 'lan0', zone: 1 },
      { interface: 'lan1', zone: 2 },
    ]);
    expect(next.rules).toEqual([...observed().rules, { src: 2, dst: 1, protocol: 17, port: 53, action: 'allow', ruleId: 0 }]);
    expect(next.defaults).toEqual([]);
  });

  test('a removal by name clears its id, and rules towards it go too (a zone reusing the id must not inherit them)', () => {
    const next = patchZoneMaps(observed(), known, { upsert: [], remove: ['dmz', 'never-existed'] });
    expect(next).toEqual({ members: [{ interface: 'lan0', zone: 1 }, { interface: 'lan1', zone: 1 }], rules: [{ src: 1, dst: 255, protocol: 0, port: 0, action: 'log', ruleId: 0 }], defaults: [] });
  });

  test('a renumbered zone leaves nothing under its old id', () => {
    const [lan] = zones([{ name: 'lan', id: 5, interfaces: ['lan0'] }]);
    const next = patchZoneMaps(observed(), known, { upsert: [lan as Zone], remove: [] });
    expect(next.members.filter((m) => m.zone === 1)).toEqual([]);
    expect(next.rules.filter((r) => r.src === 1 || r.dst === 1)).toEqual([]);
  });

  test('a rule towards a zone neither the patch nor the node has is refused, naming the field', () => {
    const zone: Zone = { name: 'wan', id: 3, interfaces: [], prefixes: [], policy: { default: 'allow', rules: [{ to: 'guest', protocol: 'any', action: 'allow' }] } };
    expect(() => patchZoneMaps(observed(), known, { upsert: [zone], remove: [] })).toThrow(ZoneMapResolveError);
    expect(() => patchZoneMaps(observed(), known, { upsert: [zone], remove: [] })).toThrow('patch.zones.upsert[0].policy.rules[0].to: zone "guest" is not a zone of the change nor of the node');
  });
});

describe('the planner', () => {
  const before = zoneMapsOf(lanDmz());
  const after = zoneMapsOf(zones([{ name: 'lan', id: 1, interfaces: ['lan0'], policy: { default: 'deny', rules: [{ to: 'host', action: 'allow' }] } }]));

  test('diff lines in the other subsystems\' words: adds and changes first, deletes last, per map', () => {
    expect(planZoneMaps(before, after).map(renderZoneMapOperation)).toEqual([
      '- ebpf zone member dmz0 in zone 2',
      '- ebpf zone member lan1 in zone 1',
      '~ ebpf zone rule zone 1 -> host any log => zone 1 -> host any allow',
      '- ebpf zone rule zone 1 -> zone 2 tcp port 443 allow rule 7',
      '+ ebpf zone default zone 1 deny',
      '- ebpf zone default zone 2 deny rule 9',
    ]);
  });

  test('running a plan gives the desired state, running the inverses backwards gives the old one, and a converged state plans nothing', () => {
    const ops = planZoneMaps(before, after);
    expect(applyZoneMapOperations(before, ops)).toEqual(after);
    expect(applyZoneMapOperations(after, [...ops].reverse().map(invertZoneMapOperation))).toEqual(before);
    expect(planZoneMaps(after, after)).toEqual([]);
  });
});

describe('intents and scope', () => {
  test('a zones patch gives the zone maps the same patch without prefixes, in their own group', () => {
    const patch = nodePatchSchema.parse({ zones: { upsert: [{ name: 'lan', id: 1, interfaces: ['lan0'], prefixes: ['10.0.0.0/8'] }], remove: ['dmz'] } });
    const intents = subsystemIntents({ patch });
    expect(intents.zonemaps).toEqual({ mode: 'patch', patch: { upsert: [{ name: 'lan', id: 1, interfaces: ['lan0'], prefixes: [] }], remove: ['dmz'] } });
    expect(changeScope(intents)).toContain('zonemaps');
    expect(changeScope(intents)).toContain('zones');
    expect(changeScope(subsystemIntents({ patch: nodePatchSchema.parse({ routes: { upsert: [{ destination: '10.1.0.0/16', gateway: '10.0.0.1' }] } }) }))).not.toContain('zonemaps');
  });
});

describe('the subsystem against an in-memory store', () => {
  const store = (state: ZoneMapState) => {
    const s = { state, writes: 0 };
    const impl: ZoneMapStore = {
      read: () => structuredClone(s.state),
      apply: (ops) => {
        s.writes += ops.length;
        s.state = applyZoneMapOperations(s.state, ops);
      },
    };
    return { s, impl };
  };
  const nat = (names: { name: string; id: number }[]) => ({ readState: async () => ({ zones: names.map((n) => ({ ...n, interfaces: [], prefixes: [] })) }) }) as unknown as NatTable;

  test('prepare → apply → check verifies; restore of the snapshot → check(snapshot) verifies; apply is idempotent', async () => {
    const { s, impl } = store(zoneMapsOf(lanDmz()));
    const sub = createZoneMapsSubsystem(() => impl, nat([{ name: 'lan', id: 1 }, { name: 'dmz', id: 2 }]));
    const intent = subsystemIntents({ patch: nodePatchSchema.parse({ zones: { remove: ['dmz'] } }) }).zonemaps;
    const prepared = await prepareSubsystem(sub, intent, { dryRun: false, reads: onceScope() });
    expect(prepared.plan.counts).toEqual({ added: 0, changed: 0, removed: 3 });
    expect(prepared.summary).toBe('3 zoned interfaces, 2 zone rules, 1 zone defaults');
    await sub.apply(intent);
    expect(await sub.check(prepared.expected, onceScope())).toEqual([]);
    const writes = s.writes;
    expect((await sub.apply(intent)).operations).toEqual([]);
    expect(s.writes).toBe(writes);
    await sub.restore(prepared.snapshot!);
    expect(await sub.check(prepared.snapshot!.check, onceScope())).toEqual([]);
    expect(s.state).toEqual(zoneMapsOf(lanDmz()));
  });

  test('a check names what differs', async () => {
    const { impl } = store({ members: [], rules: [], defaults: [] });
    const sub = createZoneMapsSubsystem(() => impl, nat([]));
    expect(await sub.check({ kind: 'state', state: { members: [{ interface: 'lan0', zone: 1 }], rules: [], defaults: [] } }, onceScope())).toEqual(['missing change: + ebpf zone member lan0 in zone 1']);
  });

  test('an unresolvable rule target fails the prepare as ZoneApplyFailed', async () => {
    const { impl } = store({ members: [], rules: [], defaults: [] });
    const sub = createZoneMapsSubsystem(() => impl, nat([]));
    const intent = { mode: 'patch' as const, patch: { upsert: [{ name: 'lan', id: 1, interfaces: [], prefixes: [], policy: { default: 'allow' as const, rules: [{ to: 'wan', protocol: 'any' as const, action: 'allow' as const }] } }], remove: [] } };
    await expect(prepareSubsystem(sub, intent, { dryRun: true })).rejects.toMatchObject({ type: 'ZoneApplyFailed', message: expect.stringContaining('patch.zones.upsert[0].policy.rules[0].to') });
  });
});

describe('zone membership (patch.zoneMembers) against the node\'s zones', () => {
  const node = () => zones([
    { name: 'lan', id: 1, interfaces: ['lan0'], prefixes: ['10.1.0.0/16'], policy: { default: 'deny', rules: [{ to: 'host', action: 'allow' }] } },
    { name: 'dmz', id: 2, interfaces: ['dmz0'] },
  ]);
  const members = (m: object) => zoneMembersPatchSchema.parse(m);

  test('the schema names an interface given twice in one list, and a zone name nft cannot carry', () => {
    const issues = (m: object) => {
      const r = nodePatchSchema.safeParse({ zoneMembers: m });
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({ join: [{ zone: 'lan', interfaces: ['lan1'] }, { zone: 'dmz', interfaces: ['lan1'] }] })).toEqual(['zoneMembers.join.1.interfaces.0: interface lan1 is named twice (also in join[0]); an interface belongs to at most one zone']);
    expect(issues({ leave: [{ zone: 'LAN-1', interfaces: ['lan1'] }] })).toEqual([expect.stringMatching(/^zoneMembers\.leave\.0\.zone: must be a zone name/)]);
    expect(issues({ join: [{ zone: 'lan', interfaces: [] }] })).toEqual(['zoneMembers.join.0.interfaces: must name at least one interface']);
  });

  test('join adds to the zone and keeps its id, prefixes, policy and other members; leave takes out; a move is leave + join', () => {
    const joined = patchZoneMembers(node(), members({ join: [{ zone: 'lan', interfaces: ['lan1'] }] }));
    expect(joined[0]).toEqual({ ...node()[0], interfaces: ['lan0', 'lan1'] });
    expect(joined[1]).toEqual(node()[1]);
    expect(patchZoneMembers(joined, members({ leave: [{ zone: 'lan', interfaces: ['lan0'] }] }))[0]?.interfaces).toEqual(['lan1']);
    const moved = patchZoneMembers(node(), members({ leave: [{ zone: 'lan', interfaces: ['lan0'] }], join: [{ zone: 'dmz', interfaces: ['lan0'] }] }));
    expect(moved.map((z) => z.interfaces)).toEqual([[], ['dmz0', 'lan0']]);
  });

  test('idempotent: joining again, or leaving a zone the node does not have (or an interface not in it), changes nothing', () => {
    const once = patchZoneMembers(node(), members({ join: [{ zone: 'lan', interfaces: ['lan1'] }] }));
    expect(patchZoneMembers(once, members({ join: [{ zone: 'lan', interfaces: ['lan1'] }] }))).toEqual(once);
    expect(patchZoneMembers(node(), members({ leave: [{ zone: 'guest', interfaces: ['lan0'] }] }))).toEqual(node());
    expect(patchZoneMembers(node(), members({ leave: [{ zone: 'dmz', interfaces: ['lan0'] }] }))).toEqual(node());
  });

  test('a zone the node does not have, or an interface in another zone, is refused naming the field and the zone', () => {
    expect(() => patchZoneMembers(node(), members({ join: [{ zone: 'guest', interfaces: ['lan1'] }] }))).toThrow(
      new ZoneMembershipError('not-found', 'patch.zoneMembers.join[0].zone', 'zone "guest" is not a zone of the node nor of this patch (known: dmz, lan)'),
    );
    let error: unknown;
    try {
      patchZoneMembers(node(), members({ join: [{ zone: 'lan', interfaces: ['lan1', 'dmz0'] }] }));
    } catch (err) {
      error = err;
    }
    expect(error).toMatchObject({ reason: 'conflict', message: 'patch.zoneMembers.join[0].interfaces[1]: interface dmz0 is already in zone dmz; an interface belongs to at most one zone (to move it, also leave dmz in patch.zoneMembers.leave)' });
  });

  test('with zones in the same patch: whole zones first, then membership (a zone upserted by the patch can be joined)', () => {
    const patch = nodePatchSchema.parse({ zones: { upsert: [{ name: 'guest', id: 3 }], remove: ['dmz'] }, zoneMembers: { join: [{ zone: 'guest', interfaces: ['dmz0'] }] } });
    const resolved = patchZonesAndMembers(node(), { ...patch.zones, members: patch.zoneMembers });
    expect(resolved.map((z) => `${z.name}:${z.interfaces.join(',')}`)).toEqual(['lan:lan0', 'guest:dmz0']);
    expect(() => patchZonesAndMembers(node(), { remove: ['dmz'], members: members({ join: [{ zone: 'dmz', interfaces: ['lan1'] }] }) })).toThrow(/patch\.zoneMembers\.join\[0\]\.zone: zone "dmz" is not a zone/);
  });

  test('intents: a membership-only patch patches both zone subsystems and takes their groups into scope; other subsystems keep', () => {
    const patch = nodePatchSchema.parse({ zoneMembers: { join: [{ zone: 'lan', interfaces: ['lan1'] }] } });
    const intents = subsystemIntents({ patch });
    expect(intents.zones).toEqual({ mode: 'patch', patch: { upsert: [], remove: [], members: patch.zoneMembers } });
    expect(intents.zonemaps).toEqual({ mode: 'patch', patch: { upsert: [], remove: [], members: patch.zoneMembers } });
    expect(intents.routes).toEqual({ mode: 'keep' });
    expect(changeScope(intents)).toEqual(expect.arrayContaining(['zones', 'zonemaps']));
    expect(subsystemIntents({ patch: nodePatchSchema.parse({}) }).zones).toEqual({ mode: 'keep' });
  });

  test('the zone maps: a touched zone holds exactly its interfaces (a gone interface\'s entry goes too); rules, defaults and other zones stay', () => {
    const maps: ZoneMapState = { ...zoneMapsOf(node()), members: [...zoneMapsOf(node()).members, { interface: '#42', zone: 1 }] };
    const resolved = patchZoneMembers(node(), members({ join: [{ zone: 'lan', interfaces: ['lan1'] }], leave: [{ zone: 'lan', interfaces: ['lan0'] }] }));
    const next = withZoneMembers(maps, resolved, ['lan']);
    expect(next).toEqual({ ...maps, members: [{ interface: 'dmz0', zone: 2 }, { interface: 'lan1', zone: 1 }] });
    expect(withZoneMembers(maps, resolved, [])).toBe(maps);
  });
});

describe('zone membership through both zone subsystems, against in-memory stores', () => {
  /** The node's nft zones (a fake table holding zones only) and its zone maps. */
  const node = () => {
    let nft = zones([
      { name: 'lan', id: 1, interfaces: ['lan0'], prefixes: ['10.1.0.0/16'] },
      { name: 'dmz', id: 2, interfaces: ['dmz0'] },
    ]);
    let maps = zoneMapsOf(nft);
    const nat = {
      readState: async () => ({ zones: structuredClone(nft), nat: { sourceNat: [], portForwards: [] } }),
      syncZones: async (desired: Zone[]) => {
        const ops = planZones(nft, desired);
        nft = structuredClone(desired);
        return ops;
      },
    } as unknown as NatTable;
    const store: ZoneMapStore = { read: () => structuredClone(maps), apply: (ops) => (maps = applyZoneMapOperations(maps, ops)) };
    return { nat, store, state: () => ({ nft, maps }) };
  };
  const intents = (m: object) => subsystemIntents({ patch: nodePatchSchema.parse({ zoneMembers: m }) });

  test('join: planned as one zone replace (nft) and one member add (eBPF); applied, checked, restored and checked back', async () => {
    const n = node();
    const before = structuredClone(n.state());
    const zonesSub = createZonesSubsystem(n.nat);
    const mapsSub = createZoneMapsSubsystem(() => n.store, n.nat);
    const intent = intents({ join: [{ zone: 'lan', interfaces: ['lan1'] }] });
    const preparedMaps = await prepareSubsystem(mapsSub, intent.zonemaps, { dryRun: false, reads: onceScope() });
    const preparedZones = await prepareSubsystem(zonesSub, intent.zones, { dryRun: false, reads: onceScope() });
    expect(preparedMaps.plan.operations).toEqual(['+ ebpf zone member lan1 in zone 1']);
    expect(preparedZones.plan.operations).toEqual(['~ zone lan id 1 interfaces lan0 prefixes 10.1.0.0/16 => lan id 1 interfaces lan0,lan1 prefixes 10.1.0.0/16']);
    await mapsSub.apply(intent.zonemaps);
    await zonesSub.apply(intent.zones);
    expect(await mapsSub.check(preparedMaps.expected, onceScope())).toEqual([]);
    expect(await zonesSub.check(preparedZones.expected, onceScope())).toEqual([]);
    // A retried apply converges to the same state (the join is already there).
    expect((await mapsSub.apply(intent.zonemaps)).operations).toEqual([]);
    expect((await zonesSub.apply(intent.zones)).operations).toEqual([]);
    await zonesSub.restore(preparedZones.snapshot!);
    await mapsSub.restore(preparedMaps.snapshot!);
    expect(await zonesSub.check(preparedZones.snapshot!.check, onceScope())).toEqual([]);
    expect(await mapsSub.check(preparedMaps.snapshot!.check, onceScope())).toEqual([]);
    expect(n.state()).toEqual(before);
  });

  test('a zone the node does not have fails the prepare of both as ZoneNotFound; an interface in another zone as ZoneMembershipConflict', async () => {
    const n = node();
    const missing = intents({ join: [{ zone: 'guest', interfaces: ['lan1'] }] });
    for (const [sub, intent] of [
      [createZoneMapsSubsystem(() => n.store, n.nat), missing.zonemaps],
      [createZonesSubsystem(n.nat), missing.zones],
    ] as const) {
      await expect(prepareSubsystem(sub as never, intent as never, { dryRun: true })).rejects.toMatchObject({ type: 'ZoneNotFound', message: 'patch.zoneMembers.join[0].zone: zone "guest" is not a zone of the node nor of this patch (known: dmz, lan)' });
    }
    const conflict = intents({ join: [{ zone: 'lan', interfaces: ['dmz0'] }] });
    await expect(prepareSubsystem(createZonesSubsystem(n.nat), conflict.zones, { dryRun: true })).rejects.toMatchObject({ type: 'ZoneMembershipConflict', message: expect.stringContaining('interface dmz0 is already in zone dmz') });
  });
});
