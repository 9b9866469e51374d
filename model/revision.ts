/**
 * Revisions (issue 13): every change that commits records, for each node it changed, the
 * node's desired state after the change — the network tables by value (what the verify step
 * read back against), the rate limits by value, the blocklist inline or by its store
 * reference — with its parent, the change, author, approvers, reason and time. Revisions are
 * content-addressed (activities/audit-store/revisions.ts hashes them), listed per node,
 * diffed in fos1's diff words, and rolled back to as a new change.
 *
 * Pure code (no Node built-ins): the node workflow builds a node's {@link RevisionDelta},
 * the revision store merges it over the parent revision ({@link applyRevisionDelta}), the API
 * diffs and rolls back. docs/revisions.md describes the model.
 */
import { blocklistIntent, type BlocklistCheck, type MapBlocklistEntry } from './blocklist-change';
import type { BlocklistRef } from './blocklist-ref';
import type { ChangeRequestInput, NodePatch } from './change-request';
import type { InterfaceConfig, NatConfig, NodeState, ObservedInterface, PolicyRule, Route, Zone } from './node-state';
import { planNodeChange, planRateLimits, renderOperation, renderPlan, type BlocklistOperation, type Operation } from './plan';
import type { MapRateLimit, PreparedSubsystems, RateLimitCheck, StateCheck } from './subsystem';

/** The network tables of a node, as fos1 manages them. */
export interface RevisionNetwork {
  interfaces: InterfaceConfig[];
  routes: Route[];
  rules: PolicyRule[];
  zones: Zone[];
  nat: NatConfig;
}

/**
 * The blocklist of a revision: every entry inline (lists given inline, and patches of them),
 * or a content hash in the node's blocklist store (lists given by reference) with the
 * patches made on top of it since (automated blocks), cidr → entry or `null` (removed).
 */
export type RevisionBlocklist =
  | { kind: 'entries'; entries: MapBlocklistEntry[] }
  | { kind: 'ref'; sha256: string; digest: string; count: number; overlay: Record<string, MapBlocklistEntry | null> }
  | { kind: 'unpinned'; file: string };

/**
 * A node's desired state in a revision. A part is absent while no committed change has
 * set it since revisions began (a node whose first changes were patches of its routes
 * knows its network tables, not its blocklist).
 */
export interface RevisionState {
  network?: RevisionNetwork;
  rateLimits?: MapRateLimit[];
  blocklist?: RevisionBlocklist;
}

/** What one committed change did to a node's revision state (built on the node from the checks its verify step used). */
export interface RevisionDelta {
  network?: RevisionNetwork;
  rateLimits?: { mode: 'all'; entries: MapRateLimit[] } | { mode: 'patch'; present: MapRateLimit[]; absent: string[] };
  blocklist?: { mode: 'entries'; entries: MapBlocklistEntry[] } | { mode: 'patch'; present: MapBlocklistEntry[]; absent: string[] } | { mode: 'ref'; ref: BlocklistRef; digest: string; count: number };
}

/** One revision of one node. */
export interface Revision {
  /** sha256 (hex) of the canonical JSON of every other field but `state` (whose hash is `stateHash`). */
  id: string;
  node: string;
  /** 1, 2, 3, … per node. */
  number: number;
  /** The node's revision before this one. */
  parent?: string;
  changeId: string;
  author: string;
  /** Who approved the change (when an approval policy asked for it). */
  approvers: string[];
  reason: string;
  /** When the change committed (ISO 8601, the workflow's clock). */
  time: string;
  /** sha256 (hex) of the canonical JSON of `state`: two revisions with one state share it. */
  stateHash: string;
  state: RevisionState;
}

/** What a change workflow hands the revision store when it commits (one entry per node it changed). */
export interface RevisionCommit {
  changeId: string;
  author: string;
  approvers: string[];
  reason: string;
  time: string;
  nodes: { node: string; delta: RevisionDelta }[];
}

/** The fields a revision's id is the hash of (with `v`, the format version). */
export function revisionHashInput(r: Omit<Revision, 'id' | 'state'>): Record<string, unknown> {
  return { v: 1, kind: 'fos1-revision', node: r.node, number: r.number, parent: r.parent, changeId: r.changeId, author: r.author, approvers: r.approvers, reason: r.reason, time: r.time, stateHash: r.stateHash };
}

/**
 * A node's revision delta from what it prepared and applied: each part the change covered,
 * from the check its verify step read back against (`expected`). A whole blocklist reads
 * back as a digest, so its content comes from the change itself: the inline entries, or the
 * reference (its store sha256).
 */
export function revisionDelta(prepared: PreparedSubsystems, change: { desired?: NodeState; patch?: Partial<NodePatch> }): RevisionDelta {
  const delta: RevisionDelta = {};
  const links = prepared.links?.expected as StateCheck<(InterfaceConfig | ObservedInterface)[]> | undefined;
  const routes = prepared.routes?.expected;
  const rules = prepared.rules?.expected;
  const zones = prepared.zones?.expected;
  const nat = prepared.nat?.expected;
  if (links && routes && rules && zones && nat) {
    delta.network = { interfaces: links.state.map(interfaceConfig), routes: routes.state, rules: rules.state, zones: zones.state, nat: nat.state };
  }
  const limits: RateLimitCheck | undefined = prepared.ratelimits?.expected;
  if (limits) delta.rateLimits = limits.kind === 'all' ? { mode: 'all', entries: limits.entries } : { mode: 'patch', present: limits.present, absent: limits.absent };
  const blocklist: BlocklistCheck | undefined = prepared.blocklist?.expected;
  if (blocklist) {
    const intent = blocklistIntent(change);
    if (blocklist.kind === 'entries') delta.blocklist = { mode: 'patch', present: blocklist.present, absent: blocklist.absent };
    else if (intent.mode === 'replace') delta.blocklist = { mode: 'entries', entries: intent.entries };
    else if (intent.mode === 'replace-ref') delta.blocklist = { mode: 'ref', ref: intent.ref, digest: blocklist.digest, count: blocklist.count };
  }
  return delta;
}

/** An interface as a desired state names it (a read-back interface names every field). */
function interfaceConfig(i: InterfaceConfig | ObservedInterface): InterfaceConfig {
  return { name: i.name, ...(i.vlan ? { vlan: { parent: i.vlan.parent, id: i.vlan.id } } : {}), ...(i.mtu !== undefined ? { mtu: i.mtu } : {}), ...(i.up !== undefined ? { up: i.up } : {}), ...(i.addresses ? { addresses: [...i.addresses] } : {}) };
}

/** The state after `delta`, on top of the parent revision's state (absent: the node's first revision). */
export function applyRevisionDelta(parent: RevisionState | undefined, delta: RevisionDelta): RevisionState {
  const state: RevisionState = { ...(parent ?? {}) };
  if (delta.network) state.network = delta.network;
  if (delta.rateLimits) {
    if (delta.rateLimits.mode === 'all') state.rateLimits = sortByCidr(delta.rateLimits.entries);
    else if (parent?.rateLimits) state.rateLimits = patchByCidr(parent.rateLimits, delta.rateLimits.present, delta.rateLimits.absent);
    else delete state.rateLimits; // a patch of limits never known stays unknown
  }
  const b = delta.blocklist;
  if (b) {
    if (b.mode === 'entries') state.blocklist = { kind: 'entries', entries: sortByCidr(b.entries) };
    else if (b.mode === 'ref') state.blocklist = b.ref.sha256 ? { kind: 'ref', sha256: b.ref.sha256, digest: b.digest, count: b.count, overlay: {} } : { kind: 'unpinned', file: 'file' in b.ref ? b.ref.file : '' };
    else {
      const before = parent?.blocklist;
      if (before?.kind === 'entries') state.blocklist = { kind: 'entries', entries: patchByCidr(before.entries, b.present, b.absent) };
      else if (before?.kind === 'ref') {
        const overlay = { ...before.overlay };
        for (const cidr of b.absent) overlay[cidr] = null;
        for (const e of b.present) overlay[e.cidr] = e;
        state.blocklist = { ...before, overlay: sortedRecord(overlay) };
      } else if (before?.kind === 'unpinned') state.blocklist = before;
      else delete state.blocklist;
    }
  }
  return state;
}

function patchByCidr<T extends { cidr: string }>(entries: readonly T[], present: readonly T[], absent: readonly string[]): T[] {
  const map = new Map(entries.map((e) => [e.cidr, e]));
  for (const cidr of absent) map.delete(cidr);
  for (const e of present) map.set(e.cidr, e);
  return sortByCidr([...map.values()]);
}

function sortByCidr<T extends { cidr: string }>(entries: readonly T[]): T[] {
  return [...entries].sort((a, b) => (a.cidr < b.cidr ? -1 : a.cidr > b.cidr ? 1 : 0));
}

function sortedRecord<V>(r: Record<string, V>): Record<string, V> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * The diff from revision state `from` to `to`, in fos1's diff words (`+ route …`,
 * `- block …`, `~ rate-limit … => …`): what a change from `from` to `to` would do. A part
 * one side does not know is said so in one line.
 */
export function diffRevisionStates(from: RevisionState, to: RevisionState): string[] {
  const lines: string[] = [];
  if (from.network && to.network) {
    const observed = { ...from.network, interfaces: from.network.interfaces.map(asObserved) };
    lines.push(...renderPlan(planNodeChange(observed, to.network)));
  } else if (from.network || to.network) {
    lines.push(`? network tables: known only in the ${from.network ? 'first' : 'second'} revision`);
  }
  if (from.rateLimits && to.rateLimits) lines.push(...planRateLimits(from.rateLimits, to.rateLimits).map((op) => renderOperation(op)));
  else if (from.rateLimits || to.rateLimits) lines.push(`? rate limits: known only in the ${from.rateLimits ? 'first' : 'second'} revision`);
  lines.push(...diffBlocklists(from.blocklist, to.blocklist));
  return lines;
}

/** Interfaces as the planner reads them from a node: a field a desired state left out stays out of the comparison. */
function asObserved(i: InterfaceConfig): ObservedInterface {
  return { name: i.name, ...(i.vlan ? { vlan: i.vlan } : {}), mtu: i.mtu as number, up: i.up as boolean, addresses: i.addresses ?? [] };
}

function diffBlocklists(from: RevisionBlocklist | undefined, to: RevisionBlocklist | undefined): string[] {
  if (!from && !to) return [];
  if (!from || !to) return [`? blocklist: known only in the ${from ? 'first' : 'second'} revision`];
  const entriesOf = (b: RevisionBlocklist): MapBlocklistEntry[] | undefined =>
    b.kind === 'entries' ? b.entries : undefined;
  const a = entriesOf(from);
  const b = entriesOf(to);
  if (a && b) return blocklistOps(a, b).map(renderOperation);
  const describe = (x: RevisionBlocklist) =>
    x.kind === 'entries' ? `${x.entries.length} entries inline` : x.kind === 'ref' ? `store ${x.sha256} (${x.count} entries${Object.keys(x.overlay).length ? `, ${Object.keys(x.overlay).length} patched` : ''})` : `file ${x.file} (unpinned)`;
  if (from.kind === 'ref' && to.kind === 'ref' && from.sha256 === to.sha256) {
    return blocklistOps(overlayEntries(from.overlay), overlayEntries(to.overlay)).map(renderOperation);
  }
  return [`~ blocklist ${describe(from)} => ${describe(to)}`];
}

function overlayEntries(overlay: Record<string, MapBlocklistEntry | null>): MapBlocklistEntry[] {
  return Object.values(overlay).filter((e): e is MapBlocklistEntry => e !== null);
}

function blocklistOps(from: readonly MapBlocklistEntry[], to: readonly MapBlocklistEntry[]): BlocklistOperation[] {
  const iso = (e: MapBlocklistEntry) => ({ cidr: e.cidr, ...(e.expiresAt ? { expiresAt: new Date(e.expiresAt * 1000).toISOString() } : {}) });
  const had = new Map(from.map((e) => [e.cidr, e]));
  const want = new Map(to.map((e) => [e.cidr, e]));
  const ops: BlocklistOperation[] = [];
  for (const e of sortByCidr(to)) {
    const h = had.get(e.cidr);
    if (!h) ops.push({ subsystem: 'blocklist', action: 'add', entry: iso(e) });
    else if ((h.expiresAt ?? 0) !== (e.expiresAt ?? 0)) ops.push({ subsystem: 'blocklist', action: 'replace', entry: iso(e), previous: iso(h) });
  }
  for (const e of sortByCidr(from)) if (!want.has(e.cidr)) ops.push({ subsystem: 'blocklist', action: 'delete', entry: iso(e) });
  return ops;
}

/** Why a revision cannot be rolled back to (one line per reason), or a change request that does it. */
export type RollbackPlan = { ok: true; request: ChangeRequestInput } | { ok: false; reasons: string[] };

/**
 * The change request that puts `revision`'s state back on its node: a full desired state,
 * so it goes through the change workflow like any other (same rollout, gates, approvals).
 * Refused — nothing is submitted — when the revision does not know every part of the
 * node's state (a full desired state would otherwise wipe what it does not know), or its
 * blocklist cannot be expressed as one desired list. Entries that have expired by `now` are
 * left out (they would have lifted by themselves; the change path refuses a past expiry).
 */
export function rollbackRequest(revision: Revision, request: { id: string; author: string; reason?: string; now: number }): RollbackPlan {
  const { network, rateLimits, blocklist } = revision.state;
  const reasons: string[] = [];
  if (!network) reasons.push(`revision ${revision.id} does not know node ${revision.node}'s network tables: no committed change had set them when it was made`);
  if (!rateLimits) reasons.push(`revision ${revision.id} does not know node ${revision.node}'s rate limits: no committed change had set them all when it was made`);
  if (!blocklist) reasons.push(`revision ${revision.id} does not know node ${revision.node}'s blocklist: no committed change had set it whole when it was made`);
  const nowSeconds = Math.floor(request.now / 1000);
  const live = <T extends { expiresAt?: number }>(e: T) => e.expiresAt === undefined || e.expiresAt > nowSeconds;
  const iso = (s: number | undefined) => (s === undefined ? {} : { expiresAt: new Date(s * 1000).toISOString() });
  const restored = `restored from revision ${revision.number} (${revision.id.slice(0, 12)})`;
  let blocklistPart: { blocklist: NodeState['blocklist'] } | { blocklistRef: BlocklistRef } | undefined;
  if (blocklist?.kind === 'entries') {
    blocklistPart = { blocklist: blocklist.entries.filter(live).map((e) => ({ cidr: e.cidr, reason: restored, ...iso(e.expiresAt) })) };
  } else if (blocklist?.kind === 'ref') {
    const overlay = Object.entries(blocklist.overlay).filter(([, e]) => e === null || live(e));
    if (overlay.length > 0) {
      reasons.push(`revision ${revision.id}: its blocklist is store ${blocklist.sha256} with ${overlay.length} entr${overlay.length === 1 ? 'y' : 'ies'} patched on top that are still in force; one desired state cannot say both (submit the reference and the patch as two changes)`);
    } else {
      blocklistPart = { blocklistRef: { sha256: blocklist.sha256 } };
    }
  } else if (blocklist?.kind === 'unpinned') {
    reasons.push(`revision ${revision.id}: its blocklist was read from file ${blocklist.file} without a sha256, so what it held is not known`);
  }
  if (reasons.length > 0 || !network || !rateLimits || !blocklistPart) return { ok: false, reasons };
  const desired = {
    interfaces: network.interfaces,
    routes: network.routes,
    rules: network.rules,
    zones: network.zones,
    nat: network.nat,
    rateLimits: rateLimits.filter(live).map((r) => ({ cidr: r.cidr, pps: r.pps, burst: r.burst, reason: restored, ...iso(r.expiresAt) })),
    ...blocklistPart,
  };
  return {
    ok: true,
    request: {
      id: request.id,
      author: request.author,
      reason: (request.reason ?? `roll back node ${revision.node} to revision ${revision.number} (${revision.id.slice(0, 12)}, change ${revision.changeId})`).slice(0, 1000),
      targets: [revision.node],
      desired: desired as NodeState,
    },
  };
}

/**
 * A fleet rollback: every node a committed change made a revision on, back to that revision,
 * as **one** new change (targets: those nodes), so it goes through one staged rollout with
 * its waves, gates and approvals. A change request has one desired state for all its
 * targets, so the revisions must hold the same state (`stateHash`); otherwise each node is
 * rolled back on its own (the reasons name the nodes that differ).
 */
export function fleetRollbackRequest(changeId: string, revisions: readonly Revision[], request: { id: string; author: string; reason?: string; now: number }): RollbackPlan {
  const [first] = revisions;
  if (!first) return { ok: false, reasons: [`change ${changeId} made no revision (it did not commit, or it changed no node)`] };
  const differing = revisions.filter((r) => r.stateHash !== first.stateHash);
  if (differing.length > 0) {
    return {
      ok: false,
      reasons: [
        `the revisions of change ${changeId} hold different states (${first.node}: ${first.stateHash.slice(0, 12)}; ${differing.map((r) => `${r.node}: ${r.stateHash.slice(0, 12)}`).join(', ')}); one change has one desired state for all its targets: roll back each node to its revision instead`,
      ],
    };
  }
  const nodes = revisions.map((r) => r.node);
  const plan = rollbackRequest(first, {
    ...request,
    reason: request.reason ?? `roll back ${nodes.length} node(s) (${nodes.join(', ')}) to the revisions of change ${changeId}`,
  });
  return plan.ok ? { ok: true, request: { ...plan.request, targets: nodes } } : plan;
}

/** Operations a diff line came from (re-exported for callers that render their own). */
export type { Operation };
