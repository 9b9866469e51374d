/**
 * The eBPF blocklist as a subsystem: how a change alters a blocklist of any size without
 * carrying it (see model/blocklist-change.ts for the intent protocol, which the subsystem
 * contract in model/subsystem.ts generalises).
 *
 *   read      a patch: the touched prefixes; a full list: a dump of the four maps
 *   plan      intent vs read → counts, the first MAX_BLOCKLIST_PLAN_LINES diff lines,
 *             the expected read-back (the touched entries, or a digest of the whole maps)
 *   snapshot  a patch: the touched prefixes' previous values, by value;
 *             a full list: a binary image of the maps in the node's store, by reference
 *   apply     a full list by batch diff (all or nothing, verified by digest), a patch key by key
 *   check     the maps against a check
 *   restore   a snapshot → the maps as they were
 *
 * Kernel errors become `ApplicationFailure`s with the node activities' failure types.
 */
import { statSync } from 'node:fs';
import {
  type BlocklistImage,
  type ImageDiff,
  IMAGE_KINDS,
  diffImages,
  diffSize,
  emptyImage,
  imageDigest,
  imageEntries,
  imageFromEntries,
  imageSize,
  serializeImage,
} from '../../bpf/blocklist-image';
import { BLOCK_VALUE_SIZE } from '../../bpf/blocklist-codec';
import type { BlocklistMaps, KernelBlocklistEntry } from '../../bpf/blocklist-maps';
import { type BlocklistCheck, type BlocklistIntent, type BlocklistPlan, type MapBlocklistEntry, MAX_BLOCKLIST_PLAN_LINES, observedEntry } from '../../model/blocklist-change';
import type { BlocklistRef } from '../../model/blocklist-ref';
import { canonicalCidr } from '../../model/ip';
import { renderOperation } from '../../model/plan';
import type { SubsystemContract } from '../../model/subsystem';
import { ErrorDomains, translateErrors, translateErrorsSync } from '../failures';
import { progress } from '../heartbeat';
import { type BlocklistStore, type BlocklistSyncDeps, createBlocklistSync } from '../blocklist-sync';

/** Dependencies: the node's maps (opened lazily) and its content-addressed store. */
export type BlocklistSubsystemDeps = BlocklistSyncDeps & { store: BlocklistStore };

/** What the blocklist subsystem reads to plan an intent. */
type BlocklistRead =
  | { mode: 'keep' }
  /** The touched prefixes: their entries where present, and those absent. */
  | { mode: 'patch'; present: KernelBlocklistEntry[]; absent: string[] }
  /** The whole maps, dumped (a million entries: 20 MB, never sent). */
  | { mode: 'full'; before: BlocklistImage };

/** Builds the blocklist subsystem around injected maps and store. */
export function createBlocklistSubsystem(deps: BlocklistSubsystemDeps): SubsystemContract<'blocklist', BlocklistRead> {
  const sync = createBlocklistSync(deps);
  const store = deps.store;

  /**
   * The list planning parsed for a reference, kept for the apply that follows it on this
   * worker (a million lines parse in ~0.2 s; once is enough). Keyed by the reference and,
   * for a file, its identity, size and modification time, so a file replaced in between
   * is read again; dropped once applied.
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

  /**
   * The desired image of a full-list intent (canonical, last entry for a prefix wins). A
   * reference is read through the store, confined to the feed directories; its errors name
   * the file and the line, never the content.
   */
  const desiredImage = async (intent: Extract<BlocklistIntent, { mode: 'replace' | 'replace-ref' }>): Promise<BlocklistImage> => {
    if (intent.mode === 'replace') return translateErrorsSync(ErrorDomains.blocklist, () => imageFromEntries(intent.entries));
    const key = refKey(intent.ref);
    if (key !== undefined && parsed?.key === key) return parsed.image;
    const image = await store.load(intent.ref);
    parsed = key === undefined ? undefined : { key, image };
    return image;
  };

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
    name: 'blocklist',

    async read(intent) {
      return translateErrors(ErrorDomains.blocklist, (): BlocklistRead => {
        const maps = deps.maps();
        if (intent.mode === 'keep') return { mode: 'keep' };
        if (intent.mode === 'patch') {
          const { upsert, remove } = patchParts(intent);
          const present: KernelBlocklistEntry[] = [];
          const absent: string[] = [];
          for (const cidr of [...upsert.map((e) => e.cidr), ...remove]) {
            const entry = maps.getExact(cidr);
            if (entry) present.push(entry);
            else absent.push(cidr);
          }
          return { mode: 'patch', present, absent };
        }
        return { mode: 'full', before: maps.dumpImage() };
      });
    },

    async plan(observed, intent) {
      const desired = intent.mode === 'replace' || intent.mode === 'replace-ref' ? await desiredImage(intent) : undefined;
      // A full list was dumped and parsed (each a fraction of a second for a million): let heartbeats out before diffing.
      if (observed.mode === 'full') await progress({ phase: 'blocklist plan', entries: desired ? imageSize(desired) : 0 });
      return translateErrors(ErrorDomains.blocklist, () => {
        if (intent.mode === 'keep' || observed.mode === 'keep') {
          return { plan: { operations: [], counts: { added: 0, changed: 0, removed: 0 } }, expected: { kind: 'entries', present: [], absent: [] } };
        }
        if (intent.mode === 'patch' && observed.mode === 'patch') {
          const { upsert, remove } = patchParts(intent);
          const previous = new Map(observed.present.map((e) => [e.cidr, e]));
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
          return { plan: { operations: ops.slice(0, MAX_BLOCKLIST_PLAN_LINES).map(renderOperation), counts }, expected: { kind: 'entries', present: upsert, absent: remove } };
        }
        if (intent.mode === 'patch' || observed.mode !== 'full') throw new Error('blocklist: planned against a read of another intent');
        const maps = deps.maps();
        const placed = maps.placed(desired ?? emptyImage());
        const diff = diffImages(observed.before, placed);
        const size = diffSize(diff);
        const plan: BlocklistPlan = { operations: renderImageDiff(diff, maps), counts: { added: size.added, changed: size.changed, removed: size.deletes } };
        const expected: BlocklistCheck = { kind: 'digest', digest: imageDigest(placed), count: imageSize(placed) };
        return { plan, expected };
      });
    },

    async snapshot(observed, _intent, dryRun) {
      if (dryRun) {
        parsed = undefined; // no apply follows a dry run
        return undefined;
      }
      if (observed.mode === 'full') await progress({ phase: 'blocklist snapshot', entries: imageSize(observed.before) });
      return translateErrors(ErrorDomains.blocklist, () => {
        if (observed.mode === 'keep') return undefined;
        // A few touched prefixes travel by value; a whole list goes to the store, by reference.
        if (observed.mode === 'patch') return { check: { kind: 'entries', present: observed.present, absent: observed.absent } };
        return { ref: store.put(serializeImage(observed.before)), check: { kind: 'digest', digest: imageDigest(observed.before), count: imageSize(observed.before) } };
      });
    },

    describe(observed, snapshot) {
      const check = snapshot?.check;
      if (observed.mode === 'keep') return 'blocklist untouched';
      if (!check) return 'blocklist planned (dry run: no snapshot)';
      if (check.kind === 'digest') return `${check.count} blocklist entries (snapshot ${snapshot?.ref?.sha256.slice(0, 12) ?? '?'}…)`;
      return `${check.present.length + check.absent.length} touched blocklist prefixes (${check.present.length} present)`;
    },

    async apply(intent) {
      const desired = intent.mode === 'replace-ref' ? await desiredImage(intent) : undefined;
      return translateErrors(ErrorDomains.blocklist, async () => {
        switch (intent.mode) {
          case 'keep':
            return { operations: [] };
          case 'patch':
            return { operations: sync.patch(patchParts(intent), { storeSnapshot: false }).operations };
          case 'replace':
            return { operations: (await sync.syncEntries(intent.entries)).operations };
          case 'replace-ref': {
            parsed = undefined;
            return { operations: (await sync.syncToImage(desired ?? emptyImage())).operations };
          }
        }
      });
    },

    async check(check) {
      return translateErrors(ErrorDomains.blocklist, async () => {
        const maps = deps.maps();
        if (check.kind === 'digest') {
          await progress({ phase: 'blocklist check', entries: check.count });
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

    async restore(snapshot) {
      return translateErrors(ErrorDomains.blocklist, async () => {
        if (snapshot.ref) return { operations: (await sync.restore(snapshot.ref)).operations };
        if (snapshot.check.kind !== 'entries') throw new Error('a blocklist snapshot without a store reference must list its entries');
        sync.restorePatch({ present: snapshot.check.present, absent: snapshot.check.absent });
        return { operations: [] };
      });
    },
  };
}

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
