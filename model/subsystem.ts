/**
 * The subsystem contract: one shape for every part of a node a change can touch.
 *
 * A node's state is split into subsystems (links, VLANs, addresses, routes, rules, zone
 * maps, zones, NAT, rate limits, blocklist). Each offers the same verbs, implemented on the node
 * (activities/subsystems/<name>.ts, see {@link SubsystemContract}):
 *
 *   read     intent → observed state (or, for a large one, a digest of it)
 *   plan     observed + intent → ordered operations with inverses; on the wire: a bounded
 *            diff, complete counts, and the check the node must pass once applied
 *   apply    intent → the node converged (idempotent: it re-reads and re-plans)
 *   check    check → what differs on the node (empty: verified)
 *   restore  snapshot → the node exactly as before (the caller then checks `snapshot.check`)
 *
 * The workflow never sees more than the node chooses to send: small state travels by
 * value (a routing table is a few kilobytes), large state by reference (a million-entry
 * blocklist is a hash in the node's store), the protocol model/blocklist-change.ts first
 * used and this module generalises:
 *
 *   intent ──prepare──► plan + expected check + snapshot          (read, plan, snapshot)
 *          ──apply────► changed, read back
 *          ──check────► differences from the expected check
 *   snapshot ─restore─► as before ──check(snapshot.check)──► verified rollback
 *
 * Pure code: bundled into workflows.
 */
import type { BlocklistCheck, BlocklistIntent } from './blocklist-change';
import { blocklistIntent, expirySeconds } from './blocklist-change';
import type { NodePatch } from './change-request';
import type { InterfaceConfig, NatConfig, NodeState, ObservedInterface, PolicyRule, Route, Zone } from './node-state';
import type { ZoneMapState } from './zone-maps';

/** The subsystems of a node in the order a change applies them (a rollback runs them backwards). */
export const SUBSYSTEM_ORDER = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zonemaps', 'zones', 'nat', 'ratelimits', 'blocklist'] as const;
export type Subsystem = (typeof SUBSYSTEM_ORDER)[number];

/**
 * Subsystems the kernel couples, which are therefore snapshotted, restored and verified
 * together: removing an interface's last address flushes the routes through it, so a
 * step can change what a later one owns. The eBPF maps (zone maps, rate limits, blocklist)
 * depend on nothing else and stand alone: a change that touches only them reads only them.
 *
 * `zonemaps` (a change's zones in the eBPF zone maps) comes after the links, so a VLAN
 * the change creates has its ifindex when its zone membership is written, and before
 * `zones` (the nftables sets), whose names it reads to resolve a removal by name: at
 * that point they are still the node's zones before the change.
 */
export const SUBSYSTEM_GROUPS: readonly (readonly Subsystem[])[] = [['links', 'vlans', 'addresses', 'routes', 'rules', 'zones', 'nat'], ['zonemaps'], ['ratelimits'], ['blocklist']];

/** The members of `subsystem`'s group, in apply order. */
export function groupOf(subsystem: Subsystem): readonly Subsystem[] {
  return SUBSYSTEM_GROUPS.find((g) => g.includes(subsystem)) ?? [subsystem];
}

// ---------------------------------------------------------------------------------------
// Intents: what a change asks of each subsystem.

/**
 * What a change asks of a small table (sent by value): nothing, the whole table, or a
 * patch the node resolves against what it reads (so a retry converges to the same table).
 */
export type TableIntent<D, P> = { mode: 'keep' } | { mode: 'replace'; desired: D } | { mode: 'patch'; patch: P };

type PatchPart<K extends keyof NodePatch> = NonNullable<NodePatch[K]>;

/** A patch of the zones: whole zones (`upsert`, `remove`) and, when given, membership operations (`patch.zoneMembers`). */
export type ZonesPatchPart = PatchPart<'zones'> & { members?: PatchPart<'zoneMembers'> };

/** A rate limit as the maps hold it: canonical host prefix, expiry in unix seconds (absent = never). */
export interface MapRateLimit {
  cidr: string;
  pps: number;
  burst: number;
  expiresAt?: number;
}

/** What a change asks of the rate-limit maps (the blocklist's modes, without a reference: rate limits are few). */
export type RateLimitIntent = { mode: 'keep' } | { mode: 'patch'; upsert: MapRateLimit[]; remove: string[] } | { mode: 'replace'; entries: MapRateLimit[] };

/** Per subsystem: its intent (what a change asks) and its check (how a read-back verifies it). */
export interface SubsystemTypes {
  links: { intent: TableIntent<InterfaceConfig[], PatchPart<'interfaces'>>; check: StateCheck<ObservedInterface[] | InterfaceConfig[]> };
  vlans: { intent: TableIntent<InterfaceConfig[], PatchPart<'interfaces'>>; check: StateCheck<ObservedInterface[] | InterfaceConfig[]> };
  addresses: { intent: TableIntent<InterfaceConfig[], PatchPart<'interfaces'>>; check: StateCheck<ObservedInterface[] | InterfaceConfig[]> };
  routes: { intent: TableIntent<Route[], PatchPart<'routes'>>; check: StateCheck<Route[]> };
  rules: { intent: TableIntent<PolicyRule[], PatchPart<'rules'>>; check: StateCheck<PolicyRule[]> };
  zonemaps: { intent: TableIntent<Zone[], ZonesPatchPart>; check: StateCheck<ZoneMapState> };
  zones: { intent: TableIntent<Zone[], ZonesPatchPart>; check: StateCheck<Zone[]> };
  nat: { intent: TableIntent<NatConfig, never>; check: StateCheck<NatConfig> };
  ratelimits: { intent: RateLimitIntent; check: RateLimitCheck };
  blocklist: { intent: BlocklistIntent; check: BlocklistCheck };
}
export type IntentOf<S extends Subsystem> = SubsystemTypes[S]['intent'];
export type CheckOf<S extends Subsystem> = SubsystemTypes[S]['check'];

/** One intent per subsystem a change covers. */
export type SubsystemIntents = { [S in Subsystem]?: IntentOf<S> };
/** One check per subsystem to verify. */
export type SubsystemChecks = { [S in Subsystem]?: CheckOf<S> };

/**
 * A read-back check by value: the subsystem must hold exactly `state` (what fos1 manages
 * of it). `restore`: comparing with a snapshot, where interfaces someone else removed
 * since are not fos1's to bring back (see `restorableInterfaces` in model/plan.ts).
 */
export interface StateCheck<T> {
  kind: 'state';
  state: T;
  restore?: boolean;
}

/** The rate-limit maps' read-back: all of them by value, or (patches) just the touched sources. */
export type RateLimitCheck = { kind: 'all'; entries: MapRateLimit[] } | { kind: 'entries'; present: MapRateLimit[]; absent: string[] };

// ---------------------------------------------------------------------------------------
// What travels between the node and the workflow.

/** A subsystem's plan as the workflow sees it. */
export interface SubsystemPlan {
  /** Diff lines in apply order (`+ route …`, `- block …`), at most {@link MAX_PLAN_LINES}. */
  operations: string[];
  /** Complete counts, however many lines were sent. */
  counts: { added: number; changed: number; removed: number };
}

/** What restores a subsystem: by value (in `check`) or by reference to the node's store (`ref`). */
export interface SubsystemSnapshot<C> {
  /** Content hash of the previous contents in the node's store (large state). */
  ref?: { sha256: string };
  /** The previous contents as a read-back check; for small state also the data a restore puts back. */
  check: C;
}

/** The node's answer to an intent before anything is applied. */
export interface PreparedSubsystem<C> {
  plan: SubsystemPlan;
  /** How the subsystem reads back once the change is applied. */
  expected: C;
  /** What a rollback restores; absent on a dry run when taking it would write to the node. */
  snapshot?: SubsystemSnapshot<C>;
  /** The snapshot in a few words, for the audit trail (`12 routes`, `3 rate limits`). */
  summary: string;
}
export type PreparedOf<S extends Subsystem> = PreparedSubsystem<CheckOf<S>>;
export type PreparedSubsystems = { [S in Subsystem]?: PreparedOf<S> };

/** At most this many diff lines per subsystem travel in a plan (the counts are always complete). */
export const MAX_PLAN_LINES = 1000;

/** Number of operations a plan needs. */
export function changeCount(plan: SubsystemPlan): number {
  return plan.counts.added + plan.counts.changed + plan.counts.removed;
}

// ---------------------------------------------------------------------------------------
// The node side: what activities/subsystems/<name>.ts implements.

/**
 * Memoised reads for one activity call, so subsystems that share a kernel table (links,
 * VLANs and addresses read one `ip link`/`ip addr`; zones and NAT one nft listing) read
 * it once per prepare or check, never across calls (a later call must see the kernel as it is).
 */
export interface ReadScope {
  once<T>(key: string, read: () => Promise<T>): Promise<T>;
}

/**
 * One subsystem on the node. `O` is what `read` returns (the observed state, or for a
 * large subsystem just enough to plan against: the touched entries, a digest).
 */
export interface SubsystemContract<S extends Subsystem, O = unknown> {
  readonly name: S;
  /** Reads what planning `intent` needs. */
  read(intent: IntentOf<S>, reads: ReadScope): Promise<O>;
  /** Plans `intent` against `observed`: the diff, the counts and the check a correct apply passes. */
  plan(observed: O, intent: IntentOf<S>): Promise<{ plan: SubsystemPlan; expected: CheckOf<S> }>;
  /**
   * What a rollback needs to put `observed` back. `dryRun`: no apply follows, so a subsystem
   * whose snapshot writes to the node's store takes none (by-value snapshots cost nothing).
   */
  snapshot(observed: O, intent: IntentOf<S>, dryRun: boolean): Promise<SubsystemSnapshot<CheckOf<S>> | undefined>;
  /** The snapshot in a few words for the audit trail. */
  describe(observed: O, snapshot: SubsystemSnapshot<CheckOf<S>> | undefined): string;
  /** Converges the node to `intent` (idempotent: re-reads live state and plans against it). */
  apply(intent: IntentOf<S>): Promise<{ operations: string[] }>;
  /** Reads back and returns what differs from `check` (empty: verified). */
  check(check: CheckOf<S>, reads: ReadScope): Promise<string[]>;
  /** Puts a snapshot back (the caller then checks `snapshot.check`). */
  restore(snapshot: SubsystemSnapshot<CheckOf<S>>): Promise<{ operations: string[] }>;
}

// ---------------------------------------------------------------------------------------
// From a change to intents and a scope.

/**
 * The intent of a validated change for each subsystem: a desired state replaces every
 * table (and the blocklist, inline or by reference); a patch patches what it names and
 * keeps the rest.
 */
export function subsystemIntents(change: { desired?: NodeState; patch?: Partial<NodePatch> }): Required<SubsystemIntents> {
  const { desired, patch } = change;
  const table = <D, P extends { upsert?: unknown[]; remove?: unknown[] }>(whole: D | undefined, part: P | undefined): TableIntent<D, P> => {
    if (whole !== undefined) return { mode: 'replace', desired: whole };
    if (part && (part.upsert?.length ?? 0) + (part.remove?.length ?? 0) > 0) return { mode: 'patch', patch: part };
    return { mode: 'keep' };
  };
  const interfaces = table(desired?.interfaces, patch?.interfaces);
  // Membership operations travel with the zones patch (both zone subsystems resolve them against the node's zones).
  const members = patch?.zoneMembers;
  const hasMembers = (members?.join?.length ?? 0) + (members?.leave?.length ?? 0) > 0;
  const zones = patch?.zones || hasMembers ? ({ upsert: [], remove: [], ...patch?.zones, ...(hasMembers ? { members } : {}) } as ZonesPatchPart) : undefined;
  const zonesTable = (whole: Zone[] | undefined, part: ZonesPatchPart | undefined): TableIntent<Zone[], ZonesPatchPart> =>
    whole === undefined && part?.members ? { mode: 'patch', patch: part } : table(whole, part);
  return {
    links: interfaces,
    vlans: interfaces,
    addresses: interfaces,
    routes: table(desired?.routes, patch?.routes),
    rules: table(desired?.rules, patch?.rules),
    // The same zones; their prefixes stay behind (the eBPF zone maps hold interfaces only).
    zonemaps: zonesTable(desired?.zones.map(withoutPrefixes), zones ? { ...zones, upsert: (zones.upsert ?? []).map(withoutPrefixes) } : undefined),
    zones: zonesTable(desired?.zones, zones),
    nat: desired ? { mode: 'replace', desired: desired.nat } : patch?.nat ? { mode: 'replace', desired: patch.nat } : { mode: 'keep' },
    ratelimits: rateLimitIntent(change),
    blocklist: blocklistIntent(change),
  };
}

function withoutPrefixes(zone: Zone): Zone {
  return { ...zone, prefixes: [] };
}

/** The rate-limit intent of a change (as {@link blocklistIntent}). */
export function rateLimitIntent(change: { desired?: NodeState; patch?: Partial<NodePatch> }): RateLimitIntent {
  const entry = (r: { cidr: string; pps: number; burst: number; expiresAt?: string }): MapRateLimit => {
    const expiresAt = expirySeconds(r.expiresAt);
    return { cidr: r.cidr, pps: r.pps, burst: r.burst, ...(expiresAt === undefined ? {} : { expiresAt }) };
  };
  if (change.desired) return { mode: 'replace', entries: change.desired.rateLimits.map(entry) };
  const part = change.patch?.rateLimits;
  if (!part || part.upsert.length + part.remove.length === 0) return { mode: 'keep' };
  return { mode: 'patch', upsert: part.upsert.map(entry), remove: [...part.remove] };
}

/**
 * The subsystems a change must snapshot, verify and be able to restore: every group with
 * a member the change touches. A blocklist-only patch (automated blocks, the hot path) reads
 * only the blocklist, a rate-limit-only patch only the rate limits; a change of any network
 * table takes all of them, which the kernel couples.
 */
export function changeScope(intents: SubsystemIntents): Subsystem[] {
  const touched = SUBSYSTEM_ORDER.filter((s) => (intents[s]?.mode ?? 'keep') !== 'keep');
  return SUBSYSTEM_ORDER.filter((s) => groupOf(s).some((member) => touched.includes(member)));
}

// ---------------------------------------------------------------------------------------
// The workflow's loop, as pure functions (unit-tested without Temporal).

/**
 * Compensations to register before `step` runs: its group's members in scope that are not
 * registered yet (a coupled step can change a neighbour, so the whole group is restored
 * once any member starts). Registration order is apply order; restores run newest first.
 */
export function compensationsBefore(step: Subsystem, scope: readonly Subsystem[], registered: readonly Subsystem[]): Subsystem[] {
  return groupOf(step).filter((s) => scope.includes(s) && !registered.includes(s));
}

/** The steps of a plan: subsystems in apply order with at least one operation. */
export function stepsOf(prepared: PreparedSubsystems): Subsystem[] {
  return SUBSYSTEM_ORDER.filter((s) => {
    const p = prepared[s];
    return p !== undefined && changeCount(p.plan) > 0;
  });
}

/** The plan of every subsystem as one diff, in apply order; a cut-short diff says how much is left. */
export function renderDiff(prepared: PreparedSubsystems): string[] {
  return SUBSYSTEM_ORDER.flatMap((s) => {
    const plan = prepared[s]?.plan;
    if (!plan) return [];
    const more = changeCount(plan) - plan.operations.length;
    return more > 0 ? [...plan.operations, `… and ${more} more ${s} operations (${describeCounts(plan)})`] : plan.operations;
  });
}

/** `3 added, 0 changed, 1 removed`. */
export function describeCounts(plan: SubsystemPlan): string {
  return `${plan.counts.added} added, ${plan.counts.changed} changed, ${plan.counts.removed} removed`;
}

/** Counts of diff lines by their sign (`+` added, `-` removed, `~` changed). */
export function countLines(lines: readonly string[]): SubsystemPlan['counts'] {
  const counts = { added: 0, changed: 0, removed: 0 };
  for (const line of lines) {
    if (line.startsWith('+')) counts.added++;
    else if (line.startsWith('-')) counts.removed++;
    else counts.changed++;
  }
  return counts;
}

