/**
 * The node's blocklist activities: how the change workflow changes a blocklist of any size
 * without carrying it (see model/blocklist-change.ts for the protocol).
 *
 *   prepareBlocklist  intent → plan (counts + first lines), expected read-back, snapshot
 *   applyBlocklist    intent → maps (batch, all or nothing, digest read-back)
 *   checkBlocklist    check  → differences between the maps and the check
 *   restoreBlocklist  snapshot → maps as they were
 *
 * Also the by-reference building blocks (`syncBlocklistFromRef`, …) for tools and tests.
 * Kernel errors become `ApplicationFailure`s of fos1's vocabulary (activities/failures.ts),
 * so workflows branch on one vocabulary.
 */
import { statSync } from 'node:fs';
import {
  type BlocklistImage,
  type ImageDiff,
  IMAGE_KINDS,
  deserializeImage,
  diffImages,
  diffSize,
  emptyImage,
  imageDigest,
  imageEntries,
  imageFromEntries,
  imageSize,
  isSerializedImage,
  parseBlocklistText,
  serializeImage,
} from '../bpf/blocklist-image';
import { BLOCK_VALUE_SIZE } from '../bpf/blocklist-codec';
import type { BlocklistMaps, KernelBlocklistEntry } from '../bpf/blocklist-maps';
import {
  type BlocklistCheck,
  type BlocklistIntent,
  type BlocklistPlan,
  type BlocklistSnapshot,
  type MapBlocklistEntry,
  type PreparedBlocklist,
  MAX_BLOCKLIST_PLAN_LINES,
  observedEntry,
} from '../model/blocklist-change';
import type { BlocklistRef } from '../model/blocklist-ref';
import { canonicalCidr } from '../model/ip';
import { renderOperation } from '../model/plan';
import {
  type BlocklistStore,
  type BlocklistSyncDeps,
  type BlocklistSyncResult,
  type PatchSnapshot,
  createBlocklistSync,
} from './blocklist-sync';
import { ErrorDomains, translateErrors, translateErrorsSync } from './failures';

/** Dependencies: the node's maps (opened lazily) and its content-addressed store. */
export type BlocklistActivityDeps = BlocklistSyncDeps & { store: BlocklistStore };

/** Builds the blocklist activities around injected maps and store. */
export function createBlocklistActivities(deps: BlocklistActivityDeps) {
  const sync = createBlocklistSync(deps);
  const store = deps.store;

  /**
   * The list `prepareBlocklist` parsed for a reference, kept for the `applyBlocklist` that
   * follows it on this worker (a million lines parse in ~0.2 s; once is enough). Keyed by
   * the reference and, for a file, its identity, size and modification time, so a file
   * replaced in between is read again; dropped once applied.
   */
  let parsed: { key: string; image: BlocklistImage } | undefined;
  const refKey = (ref: BlocklistRef): string | undefined => {
    if ('sha256' in ref && ref.sha256 !== undefined && !('file' in ref)) return `sha256:${ref.sha256}`;
    if (!('file' in ref)) return undefined;
    try {
      const st = statSync(ref.file);
      return `file:${ref.file}:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${ref.sha256 ?? ''}`;
    } catch {
      return undefined; // unreadable: store.read reports it
    }
  };

  /** The desired image of a full-list intent (canonical, last entry for a prefix wins). */
  const desiredImage = (intent: Extract<BlocklistIntent, { mode: 'replace' | 'replace-ref' }>): BlocklistImage =>
    translateErrorsSync(ErrorDomains.blocklist, () => {
      if (intent.mode === 'replace') return imageFromEntries(intent.entries);
      const key = refKey(intent.ref);
      if (key !== undefined && parsed?.key === key) return parsed.image;
      const data = store.read(intent.ref);
      const image = isSerializedImage(data) ? deserializeImage(data) : parseBlocklistText(data);
      parsed = key === undefined ? undefined : { key, image };
      return image;
    });

  /** The touched prefixes of a patch, canonical; upserts win over removes of the same prefix. */
  const patchParts = (intent: Extract<BlocklistIntent, { mode: 'patch' }>) =>
    translateErrorsSync(ErrorDomains.blocklist, () => {
      const upsert = new Map<string, MapBlocklistEntry>();
      for (const e of intent.upsert) {
        const cidr = canonicalCidr(e.cidr);
        upsert.set(cidr, e.expiresAt ? { cidr, expiresAt: e.expiresAt } : { cidr });
      }
      const remove = [...new Set(intent.remove.map((c) => canonicalCidr(c)))].filter((c) => !upsert.has(c));
      return { upsert: [...upsert.values()], remove };
    });

  return {
    /**
     * Plans an intent against the live maps and, unless `dryRun`, records what a rollback
     * needs: for a patch the previous values of the touched prefixes (small, returned
     * inline); for a full list a binary snapshot of all four maps in the store (returned
     * as its hash, with the digest that verifies a restore).
     */
    async prepareBlocklist(input: { intent: BlocklistIntent; dryRun?: boolean }): Promise<PreparedBlocklist> {
      return translateErrors(ErrorDomains.blocklist, () => {
        const { intent } = input;
        const maps = deps.maps();
        if (intent.mode === 'keep') {
          return { plan: { operations: [], counts: { added: 0, changed: 0, removed: 0 } }, expected: { kind: 'entries', present: [], absent: [] } };
        }
        if (intent.mode === 'patch') {
          const { upsert, remove } = patchParts(intent);
          const present: MapBlocklistEntry[] = [];
          const absent: string[] = [];
          const previous = new Map<string, KernelBlocklistEntry>();
          for (const cidr of [...upsert.map((e) => e.cidr), ...remove]) {
            const entry = maps.getExact(cidr);
            if (entry) {
              present.push(entry);
              previous.set(cidr, entry);
            } else absent.push(cidr);
          }
          const ops: Parameters<typeof renderOperation>[0][] = [];
          const counts = { added: 0, changed: 0, removed: 0 };
          for (const e of upsert) {
            const before = previous.get(e.cidr);
            if (!before) {
              counts.added++;
              ops.push({ subsystem: 'blocklist', action: 'add', entry: observedEntry(e) });
            } else if ((before.expiresAt ?? 0) !== (e.expiresAt ?? 0)) {
              counts.changed++;
              ops.push({ subsystem: 'blocklist', action: 'replace', entry: observedEntry(e), previous: observedEntry(before) });
            }
          }
          for (const cidr of remove) {
            const before = previous.get(cidr);
            if (!before) continue;
            counts.removed++;
            ops.push({ subsystem: 'blocklist', action: 'delete', entry: observedEntry(before) });
          }
          return {
            plan: { operations: ops.slice(0, MAX_BLOCKLIST_PLAN_LINES).map(renderOperation), counts },
            expected: { kind: 'entries', present: upsert, absent: remove },
            ...(input.dryRun ? {} : { snapshot: { check: { kind: 'entries', present, absent } } }),
          };
        }
        const before = maps.dumpImage();
        const placed = maps.placed(desiredImage(intent));
        const diff = diffImages(before, placed);
        const size = diffSize(diff);
        const plan: BlocklistPlan = { operations: renderImageDiff(diff, maps), counts: { added: size.added, changed: size.changed, removed: size.deletes } };
        const expected: BlocklistCheck = { kind: 'digest', digest: imageDigest(placed), count: imageSize(placed) };
        if (input.dryRun) {
          parsed = undefined; // no apply follows a dry run
          return { plan, expected };
        }
        const snapshot: BlocklistSnapshot = {
          ref: store.put(serializeImage(before)),
          check: { kind: 'digest', digest: imageDigest(before), count: imageSize(before) },
        };
        return { plan, expected, snapshot };
      });
    },

    /** Applies an intent: a full list by batch diff (verified by digest), a patch key by key. */
    async applyBlocklist(input: { intent: BlocklistIntent }): Promise<{ operations: string[] }> {
      return translateErrors(ErrorDomains.blocklist, () => {
        const { intent } = input;
        switch (intent.mode) {
          case 'keep':
            return { operations: [] };
          case 'patch':
            return { operations: sync.patch(patchParts(intent), { storeSnapshot: false }).operations };
          case 'replace':
            return { operations: sync.syncEntries(intent.entries).operations };
          case 'replace-ref': {
            const image = desiredImage(intent);
            parsed = undefined;
            return { operations: sync.syncToImage(image).operations };
          }
        }
      });
    },

    /** Reads the maps back against a check; returns what differs (empty: verified). */
    async checkBlocklist(input: { check: BlocklistCheck }): Promise<string[]> {
      return translateErrors(ErrorDomains.blocklist, () => {
        const maps = deps.maps();
        const { check } = input;
        if (check.kind === 'digest') {
          const image = maps.dumpImage();
          const digest = imageDigest(image);
          if (digest === check.digest) return [];
          return [`blocklist maps differ from the expected contents: expected ${check.count} entries (digest ${check.digest}), read back ${imageSize(image)} (digest ${digest})`];
        }
        const differences: string[] = [];
        for (const want of check.present) {
          const have = maps.getExact(want.cidr);
          const wanted = describe(want);
          if (!have) differences.push(`blocklist: ${wanted} is missing`);
          else if ((have.expiresAt ?? 0) !== (want.expiresAt ?? 0)) differences.push(`blocklist: expected ${wanted}, found ${describe(have)}`);
        }
        for (const cidr of check.absent) {
          const have = maps.getExact(cidr);
          if (have) differences.push(`blocklist: ${describe(have)} should be absent`);
        }
        return differences;
      });
    },

    /** Puts back what {@link prepareBlocklist} recorded (the caller then checks `snapshot.check`). */
    async restoreBlocklist(input: { snapshot: BlocklistSnapshot }): Promise<{ operations: string[] }> {
      return translateErrors(ErrorDomains.blocklist, () => {
        const { snapshot } = input;
        if (snapshot.ref) return { operations: sync.restore(snapshot.ref).operations };
        if (snapshot.check.kind !== 'entries') throw new Error('a blocklist snapshot without a store reference must list its entries');
        sync.restorePatch({ present: snapshot.check.present, absent: snapshot.check.absent });
        return { operations: [] };
      });
    },

    /** Converges the maps to the blocklist a reference points at; returns the snapshot to restore. */
    async syncBlocklistFromRef(input: { ref: unknown }): Promise<BlocklistSyncResult> {
      return translateErrors(ErrorDomains.blocklist, () => sync.syncFromRef(input.ref));
    },
    /** Puts back the contents a previous sync's `snapshotRef` recorded, verified by read-back. */
    async restoreBlocklistSnapshot(input: { snapshotRef: { sha256: string } }): Promise<BlocklistSyncResult> {
      return translateErrors(ErrorDomains.blocklist, () => sync.restore(input.snapshotRef));
    },
    /** Upserts/removes a few entries; `previous` undoes it with {@link restoreBlocklistPatch}. */
    async patchBlocklist(input: { upsert: KernelBlocklistEntry[]; remove: string[] }) {
      return translateErrors(ErrorDomains.blocklist, () => sync.patch(input));
    },
    async restoreBlocklistPatch(input: { previous: PatchSnapshot }): Promise<void> {
      return translateErrors(ErrorDomains.blocklist, () => sync.restorePatch(input.previous));
    },
  };
}

export type BlocklistActivities = ReturnType<typeof createBlocklistActivities>;

function describe(entry: MapBlocklistEntry): string {
  const e = observedEntry(entry);
  return e.expiresAt ? `${e.cidr} until ${e.expiresAt}` : `${e.cidr} (no expiry)`;
}

/**
 * The first {@link MAX_BLOCKLIST_PLAN_LINES} operations of a diff in the plan's words:
 * upserts (an add, or a replace showing the value it replaces) before deletes. Only the
 * rendered keys are looked up, so a million-entry diff costs a thousand lookups here.
 */
function renderImageDiff(diff: ImageDiff, maps: BlocklistMaps): string[] {
  const ops: Parameters<typeof renderOperation>[0][] = [];
  for (const kind of IMAGE_KINDS) {
    for (const e of imageEntries({ ...emptyImage(), [kind]: diff[kind].upsert }, MAX_BLOCKLIST_PLAN_LINES - ops.length)) {
      const entry = observedEntry(e);
      const before = maps.getExact(e.cidr);
      ops.push(before ? { subsystem: 'blocklist', action: 'replace', entry, previous: observedEntry(before) } : { subsystem: 'blocklist', action: 'add', entry });
    }
  }
  for (const kind of IMAGE_KINDS) {
    const d = diff[kind];
    const count = Math.min(d.deleteCount, MAX_BLOCKLIST_PLAN_LINES - ops.length);
    if (count <= 0) continue;
    const keysOnly = { ...emptyImage(), [kind]: { keys: d.deleteKeys, values: Buffer.alloc(count * BLOCK_VALUE_SIZE), count } };
    for (const e of imageEntries(keysOnly, count)) {
      const before = maps.getExact(e.cidr);
      ops.push({ subsystem: 'blocklist', action: 'delete', entry: observedEntry(before ?? e) });
    }
  }
  return ops.map(renderOperation);
}
