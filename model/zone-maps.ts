/**
 * Zones as fos1's eBPF datapath holds them (the pinned maps `zone_ifaces`, `zone_policy`
 * and `zone_default`, bpf/include/fos1-datapath.h), and the planner that turns one such
 * state into another. Pure code: bundled into workflows, unit-tested without a kernel.
 *
 * The maps know zones by id only (1–254; 255 is the router itself), so this state is in
 * ids too. A change's zones (model/node-state.ts) become it by {@link zoneMapsOf}:
 *
 *   membership  interface name → zone id    (the node resolves names to ifindexes at apply time)
 *   rules       (src, dst, protocol, port) → verdict + rule id
 *   defaults    src zone → verdict + rule id (only those that are not "allow, uncounted":
 *               the array map's zero value, what a zone without policy has)
 *
 * A patch is resolved against what the node has: the zones it upserts replace everything
 * of their id, the zones it removes (by name, resolved through the node's zone names)
 * lose everything, rules towards a removed zone go with it (a later zone reusing the id
 * must not inherit them).
 */
import { HOST_ZONE, type Zone, type ZoneRule } from './node-state';

/** The router itself (`FOS1_ZONE_HOST`). */
export const HOST_ZONE_ID = 255;

/** IP protocol numbers of a zone rule's `protocol` (0 = any). */
export const ZONE_RULE_PROTOCOL: Record<ZoneRule['protocol'], number> = { any: 0, icmp: 1, tcp: 6, udp: 17, icmpv6: 58 };

export type ZoneMapAction = 'allow' | 'deny' | 'log';

/** An interface in a zone. `interface` is a name, or `#<ifindex>` for an entry whose interface is gone. */
export interface ZoneMapMember {
  interface: string;
  zone: number;
}

/** One `zone_policy` entry. */
export interface ZoneMapRule {
  src: number;
  dst: number;
  /** IP protocol number, 0 = any. */
  protocol: number;
  /** Destination port, 0 = any. */
  port: number;
  action: ZoneMapAction;
  ruleId: number;
}

/** One `zone_default` slot that is not the zero value (allow, rule 0). */
export interface ZoneMapDefault {
  zone: number;
  action: ZoneMapAction;
  ruleId: number;
}

/** The zone maps of a node, canonical (sorted, see {@link canonicalZoneMaps}). */
export interface ZoneMapState {
  members: ZoneMapMember[];
  rules: ZoneMapRule[];
  defaults: ZoneMapDefault[];
}

/** A zone's name and id as the node knows it (from fos1's nftables zone sets). */
export interface ZoneName {
  name: string;
  id: number;
}

/** One change to one map element, with what undoes it. */
export type ZoneMapOperation =
  | { kind: 'member'; action: 'add' | 'delete'; entry: ZoneMapMember }
  | { kind: 'member'; action: 'replace'; entry: ZoneMapMember; previous: ZoneMapMember }
  | { kind: 'rule'; action: 'add' | 'delete'; entry: ZoneMapRule }
  | { kind: 'rule'; action: 'replace'; entry: ZoneMapRule; previous: ZoneMapRule }
  | { kind: 'default'; action: 'add' | 'delete'; entry: ZoneMapDefault }
  | { kind: 'default'; action: 'replace'; entry: ZoneMapDefault; previous: ZoneMapDefault };

/** A zone name or rule target that does not resolve; `path` is the field in the change request. */
export class ZoneMapResolveError extends Error {
  override name = 'ZoneMapResolveError';
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
  }
}

const memberKey = (m: ZoneMapMember) => m.interface;
const ruleKey = (r: Pick<ZoneMapRule, 'src' | 'dst' | 'protocol' | 'port'>) => `${r.src}/${r.dst}/${r.protocol}/${r.port}`;
const defaultKey = (d: ZoneMapDefault) => String(d.zone);

/** Sorted copies, so equal states compare equal whatever order the kernel listed them in. */
export function canonicalZoneMaps(state: ZoneMapState): ZoneMapState {
  const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return {
    members: [...state.members].sort((a, b) => byText(a.interface, b.interface)),
    rules: [...state.rules].sort((a, b) => a.src - b.src || a.dst - b.dst || a.protocol - b.protocol || a.port - b.port),
    defaults: [...state.defaults].sort((a, b) => a.zone - b.zone),
  };
}

/** The rules and default of one zone, with its rules' targets resolved through `ids`. */
function policyOf(zone: Zone, ids: ReadonlyMap<string, number>, path: string): { rules: ZoneMapRule[]; defaults: ZoneMapDefault[] } {
  const policy = zone.policy;
  if (!policy) return { rules: [], defaults: [] };
  const rules = policy.rules.map((rule, j) => {
    const dst = rule.to === HOST_ZONE ? HOST_ZONE_ID : ids.get(rule.to);
    if (dst === undefined) throw new ZoneMapResolveError(`${path}.policy.rules[${j}].to`, `zone "${rule.to}" is not a zone of the change nor of the node (known: ${[...ids.keys()].join(', ') || 'none'}, or "${HOST_ZONE}")`);
    return { src: zone.id, dst, protocol: ZONE_RULE_PROTOCOL[rule.protocol], port: rule.port ?? 0, action: rule.action, ruleId: rule.ruleId ?? 0 };
  });
  const ruleId = policy.defaultRuleId ?? 0;
  const defaults = policy.default === 'allow' && ruleId === 0 ? [] : [{ zone: zone.id, action: policy.default, ruleId }];
  return { rules, defaults };
}

/** The zone maps a complete list of zones asks for. */
export function zoneMapsOf(zones: readonly Zone[]): ZoneMapState {
  const ids = new Map(zones.map((z) => [z.name, z.id]));
  const state: ZoneMapState = { members: [], rules: [], defaults: [] };
  zones.forEach((zone, i) => {
    state.members.push(...zone.interfaces.map((name) => ({ interface: name, zone: zone.id })));
    const { rules, defaults } = policyOf(zone, ids, `zones[${i}]`);
    state.rules.push(...rules);
    state.defaults.push(...defaults);
  });
  return canonicalZoneMaps(state);
}

/**
 * The zone maps after a patch: `observed` with the upserted zones' ids replaced and the
 * removed zones' ids cleared. `known` is the node's zones before the change (name → id),
 * which is how a removal by name finds its id and a rule its target.
 */
export function patchZoneMaps(observed: ZoneMapState, known: readonly ZoneName[], patch: { upsert: readonly Zone[]; remove: readonly string[] }): ZoneMapState {
  const ids = new Map(known.map((z) => [z.name, z.id]));
  const cleared = new Set<number>();
  const removed = new Set<number>();
  for (const name of patch.remove) {
    const id = ids.get(name);
    if (id === undefined) continue;
    cleared.add(id);
    removed.add(id);
    ids.delete(name);
  }
  for (const zone of patch.upsert) {
    const before = ids.get(zone.name);
    // A zone renumbered: its old id goes away as if removed.
    if (before !== undefined && before !== zone.id) {
      cleared.add(before);
      removed.add(before);
    }
    cleared.add(zone.id);
    removed.delete(zone.id);
    ids.set(zone.name, zone.id);
  }
  const upserted = new Set(patch.upsert.flatMap((z) => z.interfaces));
  const state: ZoneMapState = {
    members: observed.members.filter((m) => !cleared.has(m.zone) && !upserted.has(m.interface)),
    rules: observed.rules.filter((r) => !cleared.has(r.src) && !removed.has(r.dst)),
    defaults: observed.defaults.filter((d) => !cleared.has(d.zone)),
  };
  patch.upsert.forEach((zone, i) => {
    state.members.push(...zone.interfaces.map((name) => ({ interface: name, zone: zone.id })));
    const { rules, defaults } = policyOf(zone, ids, `patch.zones.upsert[${i}]`);
    state.rules.push(...rules);
    state.defaults.push(...defaults);
  });
  return canonicalZoneMaps(state);
}

/**
 * The zone maps after membership operations (`patch.zoneMembers`): each zone they touch holds
 * exactly its interfaces in `zones` (the node's zones with the patch resolved, model/plan.ts
 * `patchZonesAndMembers`, which refuses a missing zone or an interface in two zones). So an
 * interface that left is no longer in the zone, one that joined is, and an entry of the zone
 * whose interface is gone (`#<ifindex>`, e.g. a VLAN the same change deletes) goes too. Rules
 * and defaults stay: membership does not change policy.
 */
export function withZoneMembers(state: ZoneMapState, zones: readonly Zone[], touched: readonly string[]): ZoneMapState {
  const affected = zones.filter((z) => touched.includes(z.name));
  if (affected.length === 0) return state;
  const ids = new Set(affected.map((z) => z.id));
  const joined = affected.flatMap((z) => z.interfaces.map((name) => ({ interface: name, zone: z.id })));
  const names = new Set(joined.map((m) => m.interface));
  return canonicalZoneMaps({ ...state, members: [...state.members.filter((m) => !ids.has(m.zone) && !names.has(m.interface)), ...joined] });
}

/** Operations turning `observed` into `desired`: adds and changes first, deletes last, per map. */
export function planZoneMaps(observed: ZoneMapState, desired: ZoneMapState): ZoneMapOperation[] {
  const ops: ZoneMapOperation[] = [];
  const diff = <T>(kind: ZoneMapOperation['kind'], have: readonly T[], want: readonly T[], key: (t: T) => string) => {
    const current = new Map(have.map((e) => [key(e), e]));
    const wanted = new Map(want.map((e) => [key(e), e]));
    const adds: ZoneMapOperation[] = [];
    const deletes: ZoneMapOperation[] = [];
    for (const [k, entry] of wanted) {
      const previous = current.get(k);
      if (!previous) adds.push({ kind, action: 'add', entry } as unknown as ZoneMapOperation);
      else if (JSON.stringify(previous) !== JSON.stringify(entry)) adds.push({ kind, action: 'replace', entry, previous } as unknown as ZoneMapOperation);
    }
    for (const [k, entry] of current) if (!wanted.has(k)) deletes.push({ kind, action: 'delete', entry } as unknown as ZoneMapOperation);
    ops.push(...adds, ...deletes);
  };
  const a = canonicalZoneMaps(observed);
  const b = canonicalZoneMaps(desired);
  diff('member', a.members, b.members, memberKey);
  diff('rule', a.rules, b.rules, ruleKey);
  diff('default', a.defaults, b.defaults, defaultKey);
  return ops;
}

/** `state` with `ops` applied (what the maps hold after a plan ran): for fakes and the planner's tests. */
export function applyZoneMapOperations(state: ZoneMapState, ops: readonly ZoneMapOperation[]): ZoneMapState {
  const next: ZoneMapState = { members: [...state.members], rules: [...state.rules], defaults: [...state.defaults] };
  for (const op of ops) {
    if (op.kind === 'member') next.members = [...next.members.filter((m) => memberKey(m) !== memberKey(op.entry)), ...(op.action === 'delete' ? [] : [op.entry])];
    else if (op.kind === 'rule') next.rules = [...next.rules.filter((r) => ruleKey(r) !== ruleKey(op.entry)), ...(op.action === 'delete' ? [] : [op.entry])];
    else next.defaults = [...next.defaults.filter((d) => defaultKey(d) !== defaultKey(op.entry)), ...(op.action === 'delete' ? [] : [op.entry])];
  }
  return canonicalZoneMaps(next);
}

/** The operation that undoes `op`. */
export function invertZoneMapOperation(op: ZoneMapOperation): ZoneMapOperation {
  if (op.action === 'replace') return { ...op, entry: op.previous, previous: op.entry } as ZoneMapOperation;
  return { ...op, action: op.action === 'add' ? 'delete' : 'add' } as ZoneMapOperation;
}

const PROTOCOL_NAME = new Map(Object.entries(ZONE_RULE_PROTOCOL).map(([name, n]) => [n, name]));
const zoneWord = (id: number) => (id === HOST_ZONE_ID ? 'host' : `zone ${id}`);

function describeEntry(op: ZoneMapOperation['kind'], entry: ZoneMapMember | ZoneMapRule | ZoneMapDefault): string {
  if (op === 'member') {
    const m = entry as ZoneMapMember;
    return `ebpf zone member ${m.interface} in ${zoneWord(m.zone)}`;
  }
  if (op === 'rule') {
    const r = entry as ZoneMapRule;
    const proto = PROTOCOL_NAME.get(r.protocol) ?? `protocol ${r.protocol}`;
    const port = r.port ? ` port ${r.port}` : '';
    return `ebpf zone rule ${zoneWord(r.src)} -> ${zoneWord(r.dst)} ${proto}${port} ${r.action}${r.ruleId ? ` rule ${r.ruleId}` : ''}`;
  }
  const d = entry as ZoneMapDefault;
  return `ebpf zone default ${zoneWord(d.zone)} ${d.action}${d.ruleId ? ` rule ${d.ruleId}` : ''}`;
}

/** A diff line, in the words of every other subsystem's plan (`+`, `-`, `~ a => b`). */
export function renderZoneMapOperation(op: ZoneMapOperation): string {
  if (op.action === 'replace') return `~ ${describeEntry(op.kind, op.previous)} => ${describeEntry(op.kind, op.entry).replace(/^ebpf zone (member|rule|default) /, '')}`;
  return `${op.action === 'add' ? '+' : '-'} ${describeEntry(op.kind, op.entry)}`;
}

/** The state in a few words, for the audit trail. */
export function describeZoneMaps(state: ZoneMapState): string {
  return `${state.members.length} zoned interfaces, ${state.rules.length} zone rules, ${state.defaults.length} zone defaults`;
}
