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
  BlocklistEntry,
  InterfaceConfig,
  NatConfig,
  NodeState,
  ObservedBlocklistEntry,
  ObservedInterface,
  ObservedRateLimit,
  PolicyRule,
  PortForward,
  RateLimit,
  Route,
  SourceNat,
  Zone,
} from './node-state';
import { portForwardKey, routeKey, ruleKey } from './node-state';

/** A route operation. `inverse` undoes it exactly. */
export type RouteOperation =
  | { subsystem: 'routes'; action: 'add'; route: Route }
  | { subsystem: 'routes'; action: 'delete'; route: Route }
  | { subsystem: 'routes'; action: 'replace'; route: Route; previous: Route };

/** A rate-limit operation. */
export type RateLimitOperation =
  | { subsystem: 'ratelimits'; action: 'add'; entry: ObservedRateLimit }
  | { subsystem: 'ratelimits'; action: 'delete'; entry: ObservedRateLimit }
  | { subsystem: 'ratelimits'; action: 'replace'; entry: ObservedRateLimit; previous: ObservedRateLimit };

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

/** The plan for one node: operations per subsystem, subsystems in apply order. */
export interface NodePlan {
  links: LinkOperation[];
  vlans: VlanOperation[];
  addresses: AddressOperation[];
  routes: RouteOperation[];
  rules: RuleOperation[];
  zones: ZoneOperation[];
  nat: NatOperation[];
  ratelimits: RateLimitOperation[];
  blocklist: BlocklistOperation[];
}

/** The subsystems of a node in the order a change applies them (a rollback runs them backwards). */
export const SUBSYSTEM_ORDER = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zones', 'nat', 'ratelimits', 'blocklist'] as const;
export type Subsystem = (typeof SUBSYSTEM_ORDER)[number];

/**
 * A node's state as the planner takes it. Subsystems left out are not compared (older
 * callers and tests that only deal with routes and the blocklist).
 */
export interface PlanState<I> {
  interfaces?: I[];
  routes: Route[];
  rules?: PolicyRule[];
  zones?: Zone[];
  nat?: NatConfig;
  rateLimits?: ObservedRateLimit[];
  /** Absent: not part of this state (the node workflow plans the blocklist on the node). */
  blocklist?: ObservedBlocklistEntry[];
}

/**
 * A state without its blocklist. The node workflow plans, applies and verifies the
 * network subsystems from its snapshot, and the blocklist on the node by intent (see
 * model/blocklist-change.ts), so the blocklist is left out of both sides of its plan.
 */
export function withoutBlocklist<T extends object>(state: T): Omit<T, 'blocklist'> {
  const { blocklist: _omitted, ...rest } = state as T & { blocklist?: unknown };
  return rest;
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

/**
 * Resolves what a node should look like: a full desired state as given, or a patch
 * applied on top of the observed state (the snapshot). Observed blocklist entries keep
 * no reason text; they are carried over as "(kept)".
 */
export function resolveDesired(observed: PlanState<ObservedInterface>, change: { desired?: NodeState; patch?: Partial<NodePatch> }): NodeState {
  if (change.desired) return change.desired;
  const patch: NodePatch = {
    interfaces: { upsert: [], remove: [] },
    routes: { upsert: [], remove: [] },
    rules: { upsert: [], remove: [] },
    zones: { upsert: [], remove: [] },
    nat: undefined,
    rateLimits: { upsert: [], remove: [] },
    blocklist: { upsert: [], remove: [] },
    ...change.patch,
  } as NodePatch;

  // Interfaces: an upsert replaces what fos1 manages of that interface (fields left out are left alone).
  const interfaces = new Map<string, InterfaceConfig>((observed.interfaces ?? []).map((i) => [i.name, i]));
  for (const name of patch.interfaces?.remove ?? []) interfaces.delete(name);
  for (const iface of patch.interfaces?.upsert ?? []) interfaces.set(iface.name, iface);

  const rules = new Map((observed.rules ?? []).map((r) => [ruleKey(r), r]));
  for (const rule of patch.rules?.remove ?? []) rules.delete(ruleKey(rule));
  for (const rule of patch.rules?.upsert ?? []) rules.set(ruleKey(rule), rule);

  const zones = new Map((observed.zones ?? []).map((z) => [z.name, z]));
  for (const name of patch.zones?.remove ?? []) zones.delete(name);
  for (const zone of patch.zones?.upsert ?? []) zones.set(zone.name, zone);

  const routes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  for (const ref of patch.routes.remove) routes.delete(routeKey(ref));
  for (const route of patch.routes.upsert) routes.set(routeKey(route), route);

  const rateLimits = new Map<string, RateLimit>(
    (observed.rateLimits ?? []).map((r) => [r.cidr, { ...r, reason: r.reason ?? '(kept)' }]),
  );
  for (const cidr of patch.rateLimits?.remove ?? []) rateLimits.delete(cidr);
  for (const limit of patch.rateLimits?.upsert ?? []) rateLimits.set(limit.cidr, limit);

  const blocklist = new Map<string, BlocklistEntry>(
    (observed.blocklist ?? []).map((e) => [e.cidr, { cidr: e.cidr, reason: e.reason ?? '(kept)', ...(e.expiresAt ? { expiresAt: e.expiresAt } : {}) }]),
  );
  for (const cidr of patch.blocklist.remove) blocklist.delete(cidr);
  for (const entry of patch.blocklist.upsert) blocklist.set(entry.cidr, entry);

  return {
    interfaces: [...interfaces.values()],
    routes: [...routes.values()],
    rules: [...rules.values()],
    zones: [...zones.values()],
    // NAT rules are ordered (first match wins), so a patch gives the whole NAT config or none.
    nat: patch.nat ?? observed.nat ?? { sourceNat: [], portForwards: [] },
    rateLimits: [...rateLimits.values()],
    blocklist: [...blocklist.values()],
  };
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
 * Blocklist operations turning `observed` into `desired`. Adds first, deletes last:
 * when a block is narrowed or widened there is never a moment with neither in place.
 */
/** Rate-limit operations: a source's limit is replaced when its rate, burst or expiry differs. */
export function planRateLimits(observed: ObservedRateLimit[], desired: ObservedRateLimit[]): RateLimitOperation[] {
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

export function planBlocklist(observed: ObservedBlocklistEntry[], desired: ObservedBlocklistEntry[]): BlocklistOperation[] {
  const current = new Map(observed.map((e) => [e.cidr, e]));
  const wanted = new Map(desired.map((e) => [e.cidr, e]));
  const ops: BlocklistOperation[] = [];
  for (const [cidr, entry] of sorted(wanted)) {
    const have = current.get(cidr);
    if (!have) ops.push({ subsystem: 'blocklist', action: 'add', entry });
    else if (have.expiresAt !== entry.expiresAt) ops.push({ subsystem: 'blocklist', action: 'replace', entry, previous: have });
  }
  for (const [cidr, entry] of sorted(current)) {
    if (!wanted.has(cidr)) ops.push({ subsystem: 'blocklist', action: 'delete', entry });
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
    ratelimits: desired.rateLimits ? planRateLimits(observed.rateLimits ?? [], desired.rateLimits) : [],
    blocklist: planBlocklist(observed.blocklist ?? [], desired.blocklist ?? []),
  };
}

/** Number of operations in a plan. */
export function planSize(plan: NodePlan): number {
  return SUBSYSTEM_ORDER.reduce((n, s) => n + plan[s].length, 0);
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
  return SUBSYSTEM_ORDER.flatMap((s) => plan[s] as Operation[]).map(renderOperation);
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

function describeRateLimit(r: ObservedRateLimit): string {
  return `${r.cidr} ${r.pps} pps burst ${r.burst}${r.expiresAt ? ` until ${r.expiresAt}` : ''}`;
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

/**
 * The subsystems a change must snapshot, verify and be able to restore.
 *
 * A patch that names only the blocklist cannot change kernel network state, and the
 * blocklist maps do not depend on it, so its snapshot, verification and rollback are
 * limited to the blocklist — the hot path of automated blocks, where reading every
 * interface, route, rule and nft table twice would dominate alert-to-drop latency.
 * Every other change takes the whole node: the kernel couples links, addresses and routes.
 */
export function changeScope(change: { desired?: NodeState; patch?: Partial<NodePatch> }): Subsystem[] {
  const patch = change.patch;
  if (change.desired || !patch) return [...SUBSYSTEM_ORDER];
  const touches = (part: { upsert?: unknown[]; remove?: unknown[] } | undefined) => (part?.upsert?.length ?? 0) + (part?.remove?.length ?? 0) > 0;
  const networkTouched = touches(patch.interfaces) || touches(patch.routes) || touches(patch.rules) || touches(patch.zones) || touches(patch.rateLimits) || patch.nat !== undefined;
  return networkTouched ? [...SUBSYSTEM_ORDER] : ['blocklist'];
}
