/**
 * How a node change reaches the blocklist maps without carrying them.
 *
 * A node may hold a million blocklist entries; Temporal limits a payload to 2 MB. So the
 * node workflow never reads the blocklist into its history: it sends the node an
 * *intent* (keep, patch a few entries, or replace the whole list inline or by
 * reference), and the node answers with a plan (counts and at most
 * {@link MAX_BLOCKLIST_PLAN_LINES} diff lines), a *snapshot* to restore (a content hash
 * in the node's store, or the previous values of the few touched prefixes), and the
 * *check* that verifies the result by reading the maps back.
 *
 *   intent ──prepare──► plan + snapshot + expected check
 *          ──apply────► maps changed (batch, all or nothing, read back)
 *          ──check────► differences between the maps and the expected check
 *   snapshot ─restore─► maps as before ──check(snapshot.check)──► verified rollback
 *
 * Pure code: bundled into workflows.
 */
import type { BlocklistRef } from './blocklist-ref';
import type { NodePatch } from './change-request';
import type { NodeState, ObservedBlocklistEntry } from './node-state';

/** A blocklist entry as the maps hold it: canonical prefix, expiry in unix seconds (absent = never). */
export interface MapBlocklistEntry {
  cidr: string;
  expiresAt?: number;
}

/** What a change asks of one node's blocklist maps. */
export type BlocklistIntent =
  /** The change does not touch the blocklist: no snapshot, no restore. */
  | { mode: 'keep' }
  /** Upsert and remove a few prefixes; everything else stays (automated blocks). */
  | { mode: 'patch'; upsert: MapBlocklistEntry[]; remove: string[] }
  /** The whole blocklist, given inline (small lists). */
  | { mode: 'replace'; entries: MapBlocklistEntry[] }
  /** The whole blocklist, read by the node from a file or its content-addressed store. */
  | { mode: 'replace-ref'; ref: BlocklistRef };

/**
 * How to tell, by reading the maps back, that they hold what they should:
 * - `digest`: the order-independent digest and entry count of all four maps (full lists);
 * - `entries`: exactly these prefixes with these expiries present, these absent (patches).
 */
export type BlocklistCheck =
  | { kind: 'digest'; digest: string; count: number }
  | { kind: 'entries'; present: MapBlocklistEntry[]; absent: string[] };

/** What a restore puts back: a snapshot in the node's store (`ref`) or the touched entries (`check`). */
export interface BlocklistSnapshot {
  /** Content hash of the maps' previous contents in the node's store (full-list changes). */
  ref?: { sha256: string };
  /** The previous contents, as a read-back check (and, for patches, the data to put back). */
  check: BlocklistCheck;
}

/** The blocklist part of a node's plan. */
export interface BlocklistPlan {
  /** Diff lines in the plan's words (`+ block …`, `~ block … => …`, `- block …`), at most {@link MAX_BLOCKLIST_PLAN_LINES}. */
  operations: string[];
  counts: { added: number; changed: number; removed: number };
}

/** What the node answers to an intent before anything is applied. */
export interface PreparedBlocklist {
  plan: BlocklistPlan;
  /** How the maps will read back once the change is applied. */
  expected: BlocklistCheck;
  /** What a rollback restores; absent on a dry run (nothing is written to the store then). */
  snapshot?: BlocklistSnapshot;
}

/** At most this many blocklist diff lines travel in a plan (the counts are always complete). */
export const MAX_BLOCKLIST_PLAN_LINES = 1000;

/** Number of map operations a plan needs. */
export function blocklistChangeCount(plan: BlocklistPlan): number {
  return plan.counts.added + plan.counts.changed + plan.counts.removed;
}

/** Unix seconds of an ISO expiry (entries keep whole seconds), or undefined for none. */
export function expirySeconds(iso: string | undefined): number | undefined {
  return iso === undefined ? undefined : Math.floor(Date.parse(iso) / 1000);
}

function toMapEntry(entry: ObservedBlocklistEntry): MapBlocklistEntry {
  const expiresAt = expirySeconds(entry.expiresAt);
  return expiresAt === undefined ? { cidr: entry.cidr } : { cidr: entry.cidr, expiresAt };
}

/**
 * The blocklist intent of a validated change: a desired state replaces the whole list
 * (inline, or by `blocklistRef`); a patch replaces it by `replaceRef`, or upserts and
 * removes the prefixes it names, and a patch that names none keeps the blocklist untouched.
 */
export function blocklistIntent(change: { desired?: NodeState; patch?: Partial<NodePatch> }): BlocklistIntent {
  if (change.desired) {
    if (change.desired.blocklistRef) return { mode: 'replace-ref', ref: change.desired.blocklistRef };
    return { mode: 'replace', entries: change.desired.blocklist.map(toMapEntry) };
  }
  const part = change.patch?.blocklist;
  if (part?.replaceRef) return { mode: 'replace-ref', ref: part.replaceRef };
  if (!part || part.upsert.length + part.remove.length === 0) return { mode: 'keep' };
  return { mode: 'patch', upsert: part.upsert.map(toMapEntry), remove: [...part.remove] };
}

/** An entry in the plan's words: ISO expiry, as change requests give it. */
export function observedEntry(entry: MapBlocklistEntry): ObservedBlocklistEntry {
  return entry.expiresAt ? { cidr: entry.cidr, expiresAt: new Date(entry.expiresAt * 1000).toISOString() } : { cidr: entry.cidr };
}
