/**
 * Planning: observed state + desired state → ordered operations, each with its inverse.
 *
 * The same functions serve the workflow (dry-run diffs, audit, verification) and the
 * activities (which re-plan against live kernel state right before applying, so a
 * retried or partially applied step converges instead of failing on "File exists").
 * Pure code: bundled into workflows.
 */
import type { NodePatch } from './change-request';
import type {
  InterfaceConfig,
  NatConfig,
  NodeState,
  ObservedBlocklistEntry,
  ObservedInterface,
  PolicyRule,
  PortForward,
  Route,
  SourceNat,
  Zone,
} from './node-state';
import { portForwardKey, routeKey, ruleKey } from './node-state';
import { type MapRateLimit, SUBSYSTEM_ORDER, type Subsystem } from './subsystem';

export { SUBSYSTEM_ORDER, type Subsystem };

/** A route operation. `inverse` undoes it exactly. */
export type RouteOperation =
  | { subsystem: 'routes'; action: 'add'; route: Route }
  | { subsystem: 'routes'; action: 'delete'; route: Route }
  | { subsystem: 'routes'; action: 'replace'; route: Route; previous: Route };

/** A rate-limit operation. */
export type RateLimitOperation =
  | { subsystem: 'ratelimits'; action: 'add'; entry: MapRateLimit }
  | { subsystem: 'ratelimits'; action: 'delete'; entry: MapRateLimit }
  | { subsystem: 'ratelimits'; action: 'replace'; entry: MapRateLimit; previous: MapRateLimit };

/** A blocklist operation. */
export type BlocklistOperation =
  | { subsystem: 'blocklist'; action: 'add'; entry: ObservedBlocklistEntry }
  | { subsystem: 'blocklist'; action: 'delete'; entry: ObservedBlocklistEntry }
  | { subsystem: 'blocklist'; action: 'replace'; entry: ObservedBlocklistEntry; previous: ObservedBlocklistEntry };

/** MTU and admin state of an existing interface; `previous` holds the values it replaces. */
export interface LinkSettings {
  mtu?: number;
  up?: boolean;
}
export type LinkOperation = { subsystem: 'links'; action: 'set'; name: string; settings: LinkSettings; previous: LinkSettings };

/** An 802.1Q sub-interface fos1 creates or removes (with the MTU and admin state it is created with). */
export interface VlanLink {
  name: string;
  parent: string;
  id: number;
  mtu?: number;
  up?: boolean;
}
export type VlanOperation = { subsystem: 'vlans'; action: 'add' | 'delete'; vlan: VlanLink };

/** One address on one interface. */
export type AddressOperation = { subsystem: 'addresses'; action: 'add' | 'delete'; device: string; address: string };

/** A policy routing rule fos1 adds or deletes. */
export type RuleOperation = { subsystem: 'rules'; action: 'add' | 'delete'; rule: PolicyRule };

/** A zone fos1 adds, deletes or changes (in its nftables table, as named sets). */
export type ZoneOperation =
  | { subsystem: 'zones'; action: 'add' | 'delete'; zone: Zone }
  | { subsystem: 'zones'; action: 'replace'; zone: Zone; previous: Zone };

/** The two chains of fos1's NAT table: source NAT after routing, port forwards before it. */
export type NatChain = 'postrouting' | 'prerouting';
/**
 * A NAT rule appended to (`add`) or removed from (`delete`) a chain; `index` is its
 * position in the chain (the activity maps it to the kernel's rule handle).
 */
export type NatOperation =
  | { subsystem: 'nat'; action: 'add' | 'delete'; chain: 'postrouting'; index: number; rule: SourceNat }
  | { subsystem: 'nat'; action: 'add' | 'delete'; chain: 'prerouting'; index: number; rule: PortForward };

export type Operation = LinkOperation | VlanOperation | AddressOperation | RouteOperation | RuleOperation | ZoneOperation | NatOperation | RateLimitOperation | BlocklistOperation;

/** The network tables of a node (the kernel couples them; see SUBSYSTEM_GROUPS in model/subsystem.ts). */
export const NETWORK_SUBSYSTEMS = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zones', 'nat'] as const satisfies readonly Subsystem[];
export type NetworkSubsystem = (typeof NETWORK_SUBSYSTEMS)[number];

/** The plan for one node's network tables: operations per subsystem, in apply order. */
export interface NodePlan {
  links: LinkOperation[];
  vlans: VlanOperation[];
  addresses: AddressOperation[];
  routes: RouteOperation[];
  rules: RuleOperation[];
  zones: ZoneOperation[];
  nat: NatOperation[];
}

/**
 * A node's network state as the planner takes it. Tables left out are not compared
 * (callers and tests that only deal with some of them). The eBPF maps (rate limits,
 * blocklist) are planned on the node by their subsystems (activities/subsystems/).
 */
export interface PlanState<I> {
  interfaces?: I[];
  routes: Route[];
  rules?: PolicyRule[];
  zones?: Zone[];
  nat?: NatConfig;
}

/** Returns the operation that undoes `op`. */
export function inverseOf<T extends Operation>(op: T): T {
  if (op.subsystem === 'links') return { ...op, settings: op.previous, previous: op.settings } as T;
  switch (op.action) {
    case 'add':
      return { ...op, action: 'delete' };
    case 'delete':
      return { ...op, action: 'add' };
    case 'replace':
      if (op.subsystem === 'routes') return { ...op, route: op.previous, previous: op.route } as T;
      if (op.subsystem === 'zones') return { ...op, zone: op.previous, previous: op.zone } as T;
      return { ...op, entry: (op as BlocklistOperation & { action: 'replace' }).previous, previous: (op as BlocklistOperation & { action: 'replace' }).entry } as T;
  }
  return op;
}

/** The tables a patch names, as model/change-request.ts parses them (every part optional here). */
type NetworkPatch = Partial<Pick<NodePatch, 'interfaces' | 'routes' | 'rules' | 'zones' | 'zoneMembers' | 'nat'>>;

/** The network tables of a node after a patch on top of `observed` (a full desired state is returned as given). */
export type ResolvedNetwork = Required<PlanState<InterfaceConfig>>;

/**
 * Resolves what a node's network tables should look like: a full desired state as given,
 * or a patch applied on top of the observed state.
 */
export function resolveDesired(observed: PlanState<ObservedInterface>, change: { desired?: NodeState; patch?: NetworkPatch }): ResolvedNetwork {
  if (change.desired) {
    const { interfaces, routes, rules, zones, nat } = change.desired;
    return { interfaces, routes, rules, zones, nat };
  }
  const patch = change.patch ?? {};
  return {
    interfaces: patchInterfaces(observed.interfaces ?? [], patch.interfaces),
    routes: patchRoutes(observed.routes, patch.routes),
    rules: patchRules(observed.rules ?? [], patch.rules),
    zones: patchZonesAndMembers(observed.zones ?? [], { ...patch.zones, members: patch.zoneMembers }),
    // NAT rules are ordered (first match wins), so a patch gives the whole NAT config or none.
    nat: patch.nat ?? observed.nat ?? { sourceNat: [], portForwards: [] },
  };
}

/** Interfaces after a patch: an upsert replaces what fos1 manages of that interface (fields left out are left alone). */
export function patchInterfaces(observed: readonly InterfaceConfig[], part: Partial<NodePatch['interfaces']> | undefined): InterfaceConfig[] {
  const interfaces = new Map<string, InterfaceConfig>(observed.map((i) => [i.name, i]));
  for (const name of part?.remove ?? []) interfaces.delete(name);
  for (const iface of part?.upsert ?? []) interfaces.set(iface.name, iface);
  return [...interfaces.values()];
}

/** Routes after a patch (by the kernel's identity: family, table, destination, metric). */
export function patchRoutes(observed: readonly Route[], part: Partial<NodePatch['routes']> | undefined): Route[] {
  const routes = new Map(observed.map((r) => [routeKey(r), r]));
  for (const ref of part?.remove ?? []) routes.delete(routeKey(ref));
  for (const route of part?.upsert ?? []) routes.set(routeKey(route), route);
  return [...routes.values()];
}

/** Policy rules after a patch. */
export function patchRules(observed: readonly PolicyRule[], part: Partial<NodePatch['rules']> | undefined): PolicyRule[] {
  const rules = new Map(observed.map((r) => [ruleKey(r), r]));
  for (const rule of part?.remove ?? []) rules.delete(ruleKey(rule));
  for (const rule of part?.upsert ?? []) rules.set(ruleKey(rule), rule);
  return [...rules.values()];
}

/** Zones after a patch (by name). */
export function patchZones(observed: readonly Zone[], part: Partial<NodePatch['zones']> | undefined): Zone[] {
  const zones = new Map(observed.map((z) => [z.name, z]));
  for (const name of part?.remove ?? []) zones.delete(name);
  for (const zone of part?.upsert ?? []) zones.set(zone.name, zone);
  return [...zones.values()];
}

/** What a change asks of the node's zones by patch: `zones` (whole zones by name) and `zoneMembers`. */
export type ZonesPatch = Partial<NodePatch['zones']> & { members?: Partial<NodePatch['zoneMembers']> };

/**
 * A zone membership operation that does not resolve against the node: the zone to join is
 * not there (`not-found`), or the interface is in another zone (`conflict`). `path` is the
 * field of the change request.
 */
export class ZoneMembershipError extends Error {
  override name = 'ZoneMembershipError';
  constructor(
    readonly reason: 'not-found' | 'conflict',
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
  }
}

/**
 * Zones after membership operations: each `leave` takes its interfaces out of its zone (a
 * zone the node does not have, or an interface not in it, has nothing to leave), then each
 * `join` adds its interfaces to its zone, which must exist in `zones`; an interface in
 * another zone is refused (an interface belongs to at most one zone). Everything else of a
 * zone (id, prefixes, policy, other members) stays. Idempotent: a joined interface joins again
 * as a no-op, so a retried apply converges.
 */
export function patchZoneMembers(zones: readonly Zone[], members: Partial<NodePatch['zoneMembers']> | undefined): Zone[] {
  const join = members?.join ?? [];
  const leave = members?.leave ?? [];
  if (join.length + leave.length === 0) return [...zones];
  const byName = new Map(zones.map((z) => [z.name, { ...z, interfaces: [...z.interfaces] }]));
  for (const entry of leave) {
    const zone = byName.get(entry.zone);
    if (zone) zone.interfaces = zone.interfaces.filter((name) => !entry.interfaces.includes(name));
  }
  join.forEach((entry, i) => {
    const zone = byName.get(entry.zone);
    if (!zone) {
      const known = [...byName.keys()].sort(byText).join(', ') || 'none';
      throw new ZoneMembershipError('not-found', `patch.zoneMembers.join[${i}].zone`, `zone "${entry.zone}" is not a zone of the node nor of this patch (known: ${known})`);
    }
    entry.interfaces.forEach((name, j) => {
      const other = [...byName.values()].find((z) => z.name !== zone.name && z.interfaces.includes(name));
      if (other) {
        throw new ZoneMembershipError(
          'conflict',
          `patch.zoneMembers.join[${i}].interfaces[${j}]`,
          `interface ${name} is already in zone ${other.name}; an interface belongs to at most one zone (to move it, also leave ${other.name} in patch.zoneMembers.leave)`,
        );
      }
      if (!zone.interfaces.includes(name)) zone.interfaces.push(name);
    });
  });
  // Only the zones touched are re-sorted (canonical, as the schema gives them); the rest stay as read.
  const touched = new Set(zonesTouchedByMembers(members));
  return [...byName.values()].map((z) => (touched.has(z.name) ? { ...z, interfaces: [...z.interfaces].sort(byText) } : (zones.find((o) => o.name === z.name) as Zone)));
}

/** The node's zones after a zones patch: whole zones first (`upsert`, `remove`), then membership. */
export function patchZonesAndMembers(observed: readonly Zone[], part: ZonesPatch | undefined): Zone[] {
  return patchZoneMembers(patchZones(observed, part), part?.members);
}

/** The zones a membership patch touches (joined or left), by name. */
export function zonesTouchedByMembers(members: Partial<NodePatch['zoneMembers']> | undefined): string[] {
  return [...new Set([...(members?.leave ?? []), ...(members?.join ?? [])].map((m) => m.zone))];
}

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Rate limits after a patch (by source). */
export function patchRateLimits(observed: readonly MapRateLimit[], upsert: readonly MapRateLimit[], remove: readonly string[]): MapRateLimit[] {
  const limits = new Map(observed.map((r) => [r.cidr, r]));
  for (const cidr of remove) limits.delete(cidr);
  for (const limit of upsert) limits.set(limit.cidr, limit);
  return [...limits.values()];
}

/**
 * Link operations: MTU and admin state of interfaces that exist and are named in
 * `desired` (VLANs still to be created get theirs when they are created).
 */
export function planLinks(observed: ObservedInterface[], desired: InterfaceConfig[]): LinkOperation[] {
  const current = new Map(observed.map((i) => [i.name, i]));
  const ops: LinkOperation[] = [];
  for (const want of [...desired].sort(byName)) {
    const have = current.get(want.name);
    if (want.vlan && !(have?.vlan && sameVlan(have.vlan, want.vlan))) continue; // created (or re-created) by the VLAN step
    const settings: LinkSettings = {};
    const previous: LinkSettings = {};
    if (want.mtu !== undefined && have?.mtu !== want.mtu) {
      settings.mtu = want.mtu;
      if (have) previous.mtu = have.mtu;
    }
    if (want.up !== undefined && have?.up !== want.up) {
      settings.up = want.up;
      if (have) previous.up = have.up;
    }
    if (settings.mtu !== undefined || settings.up !== undefined) ops.push({ subsystem: 'links', action: 'set', name: want.name, settings, previous });
  }
  return ops;
}

/**
 * VLAN operations: fos1's VLANs that are no longer desired (or whose parent or id
 * changed) are deleted first — the kernel allows one VLAN per (parent, id) — then the
 * missing ones are created.
 */
export function planVlans(observed: ObservedInterface[], desired: InterfaceConfig[]): VlanOperation[] {
  const current = new Map(observed.map((i) => [i.name, i]));
  const wanted = new Map(desired.map((i) => [i.name, i]));
  const deletes: VlanOperation[] = [];
  const adds: VlanOperation[] = [];
  for (const have of [...observed].sort(byName)) {
    if (!have.vlan) continue;
    const want = wanted.get(have.name);
    if (want && (!want.vlan || sameVlan(have.vlan, want.vlan))) continue;
    deletes.push({ subsystem: 'vlans', action: 'delete', vlan: { name: have.name, ...have.vlan, mtu: have.mtu, up: have.up } });
  }
  for (const want of [...desired].sort(byName)) {
    if (!want.vlan) continue;
    const have = current.get(want.name);
    if (have?.vlan && sameVlan(have.vlan, want.vlan)) continue;
    const vlan: VlanLink = { name: want.name, ...want.vlan };
    if (want.mtu !== undefined) vlan.mtu = want.mtu;
    if (want.up !== undefined) vlan.up = want.up;
    adds.push({ subsystem: 'vlans', action: 'add', vlan });
  }
  return [...deletes, ...adds];
}

/** Address operations for interfaces whose addresses `desired` lists: adds first, deletes last. */
export function planAddresses(observed: ObservedInterface[], desired: InterfaceConfig[]): AddressOperation[] {
  const current = new Map(observed.map((i) => [i.name, i]));
  const adds: AddressOperation[] = [];
  const deletes: AddressOperation[] = [];
  for (const want of [...desired].sort(byName)) {
    if (!want.addresses) continue;
    const have = current.get(want.name);
    // A VLAN about to be (re-)created starts without addresses.
    const recreated = want.vlan !== undefined && !(have?.vlan && sameVlan(have.vlan, want.vlan));
    const haveAddresses = new Set(recreated ? [] : (have?.addresses ?? []));
    const wantAddresses = new Set(want.addresses);
    for (const address of [...wantAddresses].sort()) if (!haveAddresses.has(address)) adds.push({ subsystem: 'addresses', action: 'add', device: want.name, address });
    for (const address of [...haveAddresses].sort()) if (!wantAddresses.has(address)) deletes.push({ subsystem: 'addresses', action: 'delete', device: want.name, address });
  }
  return [...adds, ...deletes];
}

/** Policy rule operations: adds first, deletes last, so steered traffic never falls back to main. */
export function planRules(observed: PolicyRule[], desired: PolicyRule[]): RuleOperation[] {
  const current = new Map(observed.map((r) => [ruleKey(r), r]));
  const wanted = new Map(desired.map((r) => [ruleKey(r), r]));
  const ops: RuleOperation[] = [];
  for (const [key, rule] of sorted(wanted)) if (!current.has(key)) ops.push({ subsystem: 'rules', action: 'add', rule });
  for (const [key, rule] of sorted(current)) if (!wanted.has(key)) ops.push({ subsystem: 'rules', action: 'delete', rule });
  return ops;
}

/** Zone operations: adds and changes first, deletes last. A zone's id is part of its identity in the kernel. */
export function planZones(observed: Zone[], desired: Zone[]): ZoneOperation[] {
  const current = new Map(observed.map((z) => [z.name, z]));
  const wanted = new Map(desired.map((z) => [z.name, z]));
  const ops: ZoneOperation[] = [];
  for (const [name, zone] of sorted(wanted)) {
    const have = current.get(name);
    if (!have) ops.push({ subsystem: 'zones', action: 'add', zone });
    else if (describeZone(have) !== describeZone(zone)) ops.push({ subsystem: 'zones', action: 'replace', zone, previous: have });
  }
  for (const [name, zone] of sorted(current)) if (!wanted.has(name)) ops.push({ subsystem: 'zones', action: 'delete', zone });
  return ops;
}

/**
 * NAT operations. Rule order matters (first match wins), so per chain the rules both
 * lists share at the front stay, and the rest is replaced: the new tail is appended first
 * and the old one deleted after it (make before break), which leaves exactly `desired`.
 */
export function planNat(observed: NatConfig, desired: NatConfig): NatOperation[] {
  const chain = <R extends SourceNat | PortForward>(name: NatChain, have: R[], want: R[], describe: (r: R) => string): NatOperation[] => {
    let common = 0;
    while (common < have.length && common < want.length && describe(have[common] as R) === describe(want[common] as R)) common++;
    const ops: NatOperation[] = [];
    want.slice(common).forEach((rule, i) => ops.push({ subsystem: 'nat', action: 'add', chain: name, index: have.length + i, rule } as NatOperation));
    // Deleting from the end keeps the earlier indexes valid while the tail goes.
    for (let i = have.length - 1; i >= common; i--) ops.push({ subsystem: 'nat', action: 'delete', chain: name, index: i, rule: have[i] } as NatOperation);
    return ops;
  };
  return [
    ...chain('postrouting', observed.sourceNat, desired.sourceNat, describeSourceNat),
    ...chain('prerouting', observed.portForwards, desired.portForwards, describePortForward),
  ];
}

/**
 * Route operations turning `observed` into `desired`. Order is make-before-break:
 * adds and replaces first, deletes last, so traffic to a prefix that moves between
 * tables or gateways always has a route.
 */
export function planRoutes(observed: Route[], desired: Route[]): RouteOperation[] {
  const current = new Map(observed.map((r) => [routeKey(r), r]));
  const wanted = new Map(desired.map((r) => [routeKey(r), r]));
  const ops: RouteOperation[] = [];
  for (const [key, route] of sorted(wanted)) {
    const have = current.get(key);
    if (!have) ops.push({ subsystem: 'routes', action: 'add', route });
    else if (!routeMatches(have, route)) ops.push({ subsystem: 'routes', action: 'replace', route, previous: have });
  }
  for (const [key, route] of sorted(current)) {
    if (!wanted.has(key)) ops.push({ subsystem: 'routes', action: 'delete', route });
  }
  return ops;
}

/**
 * Rate-limit operations (the one diff of the rate-limit maps: the node plans and applies
 * with it, see activities/subsystems/ratelimits.ts): a source's limit is replaced when
 * its rate, burst or expiry differs.
 */
export function planRateLimits(observed: readonly MapRateLimit[], desired: readonly MapRateLimit[]): RateLimitOperation[] {
  const current = new Map(observed.map((r) => [r.cidr, r]));
  const wanted = new Map(desired.map((r) => [r.cidr, r]));
  const ops: RateLimitOperation[] = [];
  for (const [cidr, entry] of sorted(wanted)) {
    const have = current.get(cidr);
    if (!have) ops.push({ subsystem: 'ratelimits', action: 'add', entry });
    else if (have.pps !== entry.pps || have.burst !== entry.burst || have.expiresAt !== entry.expiresAt) ops.push({ subsystem: 'ratelimits', action: 'replace', entry, previous: have });
  }
  for (const [cidr, entry] of sorted(current)) {
    if (!wanted.has(cidr)) ops.push({ subsystem: 'ratelimits', action: 'delete', entry });
  }
  return ops;
}

/**
 * The interfaces of a snapshot a restore can and should bring back: fos1's own VLANs (it
 * re-creates them) and every other interface that still exists. An interface fos1 does
 * not own that vanished since the snapshot (a pod's veth, an unplugged NIC) went away by
 * someone else's hand; restoring or comparing it would fail every rollback on a busy node.
 */
export function restorableInterfaces<I extends { name: string; vlan?: unknown }>(snapshot: I[], present: readonly { name: string }[]): I[] {
  const names = new Set(present.map((i) => i.name));
  return snapshot.filter((i) => i.vlan !== undefined || names.has(i.name));
}

const NO_NAT: NatConfig = { sourceNat: [], portForwards: [] };

/**
 * The full plan for one node. Interfaces `desired` does not name are left alone (except
 * fos1's own VLANs, which are removed); a subsystem `desired` leaves out is not compared.
 */
export function planNodeChange(observed: PlanState<ObservedInterface>, desired: PlanState<InterfaceConfig>): NodePlan {
  const observedInterfaces = observed.interfaces ?? [];
  const desiredInterfaces = desired.interfaces;
  return {
    links: desiredInterfaces ? planLinks(observedInterfaces, desiredInterfaces) : [],
    vlans: desiredInterfaces ? planVlans(observedInterfaces, desiredInterfaces) : [],
    addresses: desiredInterfaces ? planAddresses(observedInterfaces, desiredInterfaces) : [],
    routes: planRoutes(observed.routes, desired.routes),
    rules: desired.rules ? planRules(observed.rules ?? [], desired.rules) : [],
    zones: desired.zones ? planZones(observed.zones ?? [], desired.zones) : [],
    nat: desired.nat ? planNat(observed.nat ?? NO_NAT, desired.nat) : [],
  };
}

/** Number of operations in a plan. */
export function planSize(plan: NodePlan): number {
  return NETWORK_SUBSYSTEMS.reduce((n, s) => n + plan[s].length, 0);
}

/**
 * Differences between what was read back and what was expected, as readable lines;
 * empty when they match. Used to verify an apply and, against the snapshot, a rollback.
 */
export function stateDifferences(actual: PlanState<ObservedInterface>, expected: PlanState<InterfaceConfig>): string[] {
  const plan = planNodeChange(actual, expected);
  return renderPlan(plan).map((line) => `missing change: ${line}`);
}

/** Renders a plan as a diff, one line an operation: `+ add`, `- delete`, `~ replace`. */
export function renderPlan(plan: NodePlan): string[] {
  return NETWORK_SUBSYSTEMS.flatMap((s) => plan[s] as Operation[]).map(renderOperation);
}

/** One operation as a diff line. */
export function renderOperation(op: Operation): string {
  const sign = op.action === 'add' ? '+' : op.action === 'delete' ? '-' : '~';
  switch (op.subsystem) {
    case 'links':
      return `~ link ${op.name} ${describeLink(op.previous)} => ${describeLink(op.settings)}`;
    case 'vlans':
      return `${sign} vlan ${describeVlan(op.vlan)}`;
    case 'addresses':
      return `${sign} address ${op.address} dev ${op.device}`;
    case 'rules':
      return `${sign} rule ${describeRule(op.rule)}`;
    case 'zones':
      return op.action === 'replace' ? `~ zone ${describeZone(op.previous)} => ${describeZone(op.zone)}` : `${sign} zone ${describeZone(op.zone)}`;
    case 'ratelimits':
      return op.action === 'replace'
        ? `~ rate-limit ${describeRateLimit(op.previous)} => ${describeRateLimit(op.entry)}`
        : `${sign} rate-limit ${describeRateLimit(op.entry)}`;
    case 'nat':
      return `${sign} nat ${op.chain === 'postrouting' ? describeSourceNat(op.rule) : describePortForward(op.rule)}`;
    default:
      break;
  }
  if (op.subsystem === 'routes') {
    switch (op.action) {
      case 'add':
        return `+ route ${describeRoute(op.route)}`;
      case 'delete':
        return `- route ${describeRoute(op.route)}`;
      case 'replace':
        return `~ route ${describeRoute(op.previous)} => ${describeRoute(op.route)}`;
    }
  }
  switch (op.action) {
    case 'add':
      return `+ block ${describeEntry(op.entry)}`;
    case 'delete':
      return `- block ${describeEntry(op.entry)}`;
    case 'replace':
      return `~ block ${describeEntry(op.previous)} => ${describeEntry(op.entry)}`;
  }
}

/** A route in `ip route` words. */
export function describeRoute(route: Route): string {
  const parts = [route.destination];
  if (route.gateway) parts.push(`via ${route.gateway}`);
  if (route.device) parts.push(`dev ${route.device}`);
  for (const hop of route.nexthops ?? []) parts.push(`nexthop via ${hop.gateway}${hop.device ? ` dev ${hop.device}` : ''} weight ${hop.weight}`);
  parts.push(`table ${route.table}`, `metric ${route.metric}`);
  return parts.join(' ');
}

function describeRateLimit(r: MapRateLimit): string {
  return `${r.cidr} ${r.pps} pps burst ${r.burst}${r.expiresAt ? ` until ${new Date(r.expiresAt * 1000).toISOString()}` : ''}`;
}

function describeEntry(entry: ObservedBlocklistEntry): string {
  return entry.expiresAt ? `${entry.cidr} until ${entry.expiresAt}` : `${entry.cidr} (no expiry)`;
}

/**
 * True when the observed route `have` satisfies the desired `want`. A desired route
 * without a device (or gateway) leaves the choice to the kernel, so only what the
 * operator named is compared.
 */
export function routeMatches(have: Route, want: Route): boolean {
  if (want.nexthops !== undefined || have.nexthops !== undefined) {
    if (want.nexthops === undefined || have.nexthops === undefined || want.nexthops.length !== have.nexthops.length) return false;
    return want.nexthops.every((hop, i) => {
      const got = have.nexthops?.[i];
      return got !== undefined && got.gateway === hop.gateway && got.weight === hop.weight && (hop.device === undefined || got.device === hop.device);
    });
  }
  if (want.gateway !== undefined && have.gateway !== want.gateway) return false;
  if (want.gateway === undefined && have.gateway !== undefined) return false;
  if (want.device !== undefined && have.device !== want.device) return false;
  return true;
}

/** A policy rule in `ip rule` words. */
export function describeRule(rule: PolicyRule): string {
  return ruleKey(rule).replace(/^ipv(\d) /, '-$1 ');
}

/** A source NAT rule in words: `masquerade 10.1.0.0/16 out wan0` or `snat … to 192.0.2.1`. */
export function describeSourceNat(rule: SourceNat): string {
  return rule.to === undefined ? `masquerade ${rule.source} out ${rule.outInterface}` : `snat ${rule.source} out ${rule.outInterface} to ${rule.to}`;
}

/** A port forward in words: `forward tcp/8080 in wan0 to 192.0.2.1 => 10.2.0.2:80`. */
export function describePortForward(rule: PortForward): string {
  const target = rule.to.includes(':') ? `[${rule.to}]` : rule.to;
  return `forward ${portForwardKey(rule).replace(/^ipv\d /, '')} => ${target}:${rule.toPort}`;
}

/** A zone in words: `lan id 1 interfaces lan0,lan1 prefixes 10.0.0.0/8`. */
export function describeZone(zone: Zone): string {
  return `${zone.name} id ${zone.id} interfaces ${zone.interfaces.join(',') || '(none)'} prefixes ${zone.prefixes.join(',') || '(none)'}`;
}

function describeLink(settings: LinkSettings): string {
  const parts: string[] = [];
  if (settings.mtu !== undefined) parts.push(`mtu ${settings.mtu}`);
  if (settings.up !== undefined) parts.push(settings.up ? 'up' : 'down');
  return parts.join(' ') || '(absent)';
}

function describeVlan(vlan: VlanLink): string {
  return `${vlan.name} link ${vlan.parent} id ${vlan.id}${vlan.mtu !== undefined ? ` mtu ${vlan.mtu}` : ''}${vlan.up !== undefined ? (vlan.up ? ' up' : ' down') : ''}`;
}

function sameVlan(a: { parent: string; id: number }, b: { parent: string; id: number }): boolean {
  return a.parent === b.parent && a.id === b.id;
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function sorted<V>(map: Map<string, V>): [string, V][] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
