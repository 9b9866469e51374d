/**
 * The blocklist map-update activity logic: desired vs current diff, batch apply,
 * snapshot for rollback, read-back verification — sized for a million entries.
 *
 * Three ways in:
 * - `syncEntries`: a desired list inline (small; what change requests carry today);
 * - `syncFromRef`: a full desired state by reference (file path or content hash, see
 *   model/blocklist-ref.ts), streamed from disk into a binary image, never into the
 *   workflow's payload;
 * - `patch`: upserts/removals of a few entries, touching only those keys (a single
 *   added entry costs a handful of syscalls, not a million-entry diff).
 *
 * Every change returns a `snapshotRef` to the previous contents (written to the
 * content-addressed store) so a rollback is `restore(snapshotRef)`, verified by reading
 * the maps back. Kernel errors propagate as the bpf/ error classes (the node activities
 * translate them); input errors become `InvalidBlocklist` here (activities/failures.ts).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type BlocklistRef, blocklistRefSchema } from '../model/blocklist-ref';
import { failure, FailureType } from '../model/failures';
import { canonicalCidr } from '../model/ip';
import {
  type BlocklistImage,
  IMAGE_KINDS,
  type ImageDiff,
  diffSize,
  deserializeImage,
  diffImages,
  emptyImage,
  imageEntries,
  imageFromEntries,
  imageSize,
  isSerializedImage,
  parseBlocklistText,
  serializeImage,
} from '../bpf/blocklist-image';
import type { BlocklistMaps, KernelBlocklistEntry } from '../bpf/blocklist-maps';
import { ErrorDomains, translateErrorsSync } from './failures';

/** At most this many diff lines are returned (the counts are always complete). */
export const MAX_OPERATION_LINES = 1000;

/**
 * Content-addressed blobs on the node: `<dir>/<sha256>`. Blocklists arrive here by
 * hash, and snapshots for rollback are written here.
 */
export class BlocklistStore {
  /**
   * @param retainMs how long a blob is kept after it was last stored. Every change of a
   *   full list writes a snapshot (20 MB for a million entries), needed only until the
   *   change has committed or reverted; older blobs are pruned when a new one is stored.
   *   Seven days by default: far beyond any confirm timeout.
   */
  constructor(
    readonly dir: string,
    readonly retainMs = 7 * 24 * 3600_000,
  ) {}

  /** Stores `data` (atomically: temp file + rename) and returns its reference. */
  put(data: Buffer): { sha256: string } {
    const sha256 = createHash('sha256').update(data).digest('hex');
    mkdirSync(this.dir, { recursive: true });
    this.prune(Date.now() - this.retainMs);
    const path = join(this.dir, sha256);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, data);
    // Storing content that is already there refreshes its age, so a re-used list stays.
    renameSync(tmp, path);
    return { sha256 };
  }

  /** Deletes blobs (and leftover temp files) last written before `cutoffMs`; returns how many. */
  prune(cutoffMs: number): number {
    let removed = 0;
    for (const name of readdirSync(this.dir)) {
      if (!/^[0-9a-f]{64}(\.tmp-\d+)?$/.test(name)) continue; // only what this store writes
      const path = join(this.dir, name);
      try {
        if (statSync(path).mtimeMs < cutoffMs) {
          unlinkSync(path);
          removed++;
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // pruned concurrently: fine
      }
    }
    return removed;
  }

  /** Reads and hash-checks the content of a reference. */
  read(input: unknown): Buffer {
    const parsed = blocklistRefSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw failure(FailureType.InvalidBlocklist, `blocklist reference${issue?.path.length ? ` field "${issue.path.join('.')}"` : ''}: ${issue?.message ?? 'invalid'}`);
    }
    const ref: BlocklistRef = parsed.data;
    const path = 'file' in ref ? ref.file : join(this.dir, ref.sha256);
    let data: Buffer;
    try {
      data = readFileSync(path);
    } catch (err) {
      throw failure(FailureType.BlocklistRefNotFound, `blocklist ${'file' in ref ? `file ${path}` : `sha256 ${ref.sha256} (${path})`} cannot be read: ${(err as Error).message}`);
    }
    if (ref.sha256 !== undefined) {
      const actual = createHash('sha256').update(data).digest('hex');
      if (actual !== ref.sha256) {
        throw failure(FailureType.InvalidBlocklist, `blocklist at ${path} has sha256 ${actual}, but the reference says ${ref.sha256}: the content changed after it was referenced`);
      }
    }
    return data;
  }
}

/** What a sync did. */
export interface BlocklistSyncResult {
  /** Diff lines (`+ block …`, `- block …`, `~ block …`), at most {@link MAX_OPERATION_LINES}. */
  operations: string[];
  counts: { added: number; changed: number; removed: number; total: number };
  /** The maps' contents before the change; `restore(snapshotRef)` puts them back. */
  snapshotRef?: { sha256: string };
  /**
   * Wall time of each phase, in milliseconds: read (file + parse), dump (current
   * contents), snapshot (serialise + hash + write), diff, apply (batch writes), verify
   * (dump + digest compare).
   */
  timings: { read: number; dump: number; snapshot: number; diff: number; apply: number; verify: number };
}

/** Dependencies of {@link createBlocklistSync}. */
export interface BlocklistSyncDeps {
  maps: () => BlocklistMaps;
  /** Where referenced blocklists are found and snapshots are written; no snapshots without it. */
  store?: BlocklistStore;
  logger?: Logger;
}

/** Builds the blocklist sync operations around injected maps and store. */
export function createBlocklistSync(deps: BlocklistSyncDeps) {
  const clock = () => performance.now();

  /** Full-state sync of an image: dump, diff, batch apply (all or nothing), verify. */
  function syncImage(desired: BlocklistImage, readMs: number): BlocklistSyncResult {
    const maps = deps.maps();
    const t = clock();
    const before = maps.dumpImage();
    const placed = maps.placed(desired);
    const tDump = clock();
    const snapshotRef = deps.store ? deps.store.put(serializeImage(before)) : undefined;
    const tSnapshot = clock();
    const diff = diffImages(before, placed);
    const t1 = clock();
    maps.applyImage(placed, before, diff);
    const t2 = clock();
    const mismatch = maps.verifyImage(placed);
    if (mismatch) {
      throw failure(FailureType.BlocklistVerifyFailed, mismatch);
    }
    const t3 = clock();
    const size = diffSize(diff);
    const result: BlocklistSyncResult = {
      operations: renderDiff(diff),
      counts: { added: size.added, changed: size.changed, removed: size.deletes, total: imageSize(placed) },
      ...(snapshotRef ? { snapshotRef } : {}),
      timings: { read: readMs, dump: tDump - t, snapshot: tSnapshot - tDump, diff: t1 - tSnapshot, apply: t2 - t1, verify: t3 - t2 },
    };
    deps.logger?.info({ counts: result.counts, timings: result.timings }, 'blocklist converged');
    return result;
  }

  return {
    /** Converges the maps to an image the caller already has (parsed for a plan, say). */
    syncToImage(desired: BlocklistImage): BlocklistSyncResult {
      return syncImage(desired, 0);
    },

    /** Converges the maps to an inline list (the change workflow's payload; expiresAt in unix seconds). */
    syncEntries(desired: KernelBlocklistEntry[]): BlocklistSyncResult {
      const t = clock();
      const image = translateErrorsSync(ErrorDomains.blocklist, () => imageFromEntries(desired));
      return syncImage(image, clock() - t);
    },

    /** Converges the maps to the blocklist a reference points at. */
    syncFromRef(ref: unknown): BlocklistSyncResult {
      if (!deps.store) throw new Error('blocklist sync by reference needs a BlocklistStore');
      const t = clock();
      const data = deps.store.read(ref);
      const image = translateErrorsSync(ErrorDomains.blocklist, () => (isSerializedImage(data) ? deserializeImage(data) : parseBlocklistText(data)));
      return syncImage(image, clock() - t);
    },

    /** Restores a snapshot written by an earlier sync (same as syncing to it). */
    restore(snapshotRef: { sha256: string }): BlocklistSyncResult {
      return this.syncFromRef(snapshotRef);
    },

    /**
     * Upserts and removes a few entries without reading the whole maps. The snapshot
     * holds the previous state of exactly the touched prefixes (as a small image plus
     * the list of prefixes that were absent), so restoring it is another patch.
     */
    patch(
      input: { upsert: KernelBlocklistEntry[]; remove: string[] },
      options: { storeSnapshot?: boolean } = {},
    ): BlocklistSyncResult & { previous: PatchSnapshot } {
      const maps = deps.maps();
      const t0 = clock();
      const upsert = translateErrorsSync(ErrorDomains.blocklist, () => input.upsert.map((e) => ({ ...e, cidr: canonicalCidr(e.cidr) })));
      const remove = translateErrorsSync(ErrorDomains.blocklist, () => input.remove.map((c) => canonicalCidr(c)));
      const touched = [...new Set([...upsert.map((e) => e.cidr), ...remove])];
      const previous: PatchSnapshot = { present: [], absent: [] };
      for (const cidr of touched) {
        const entry = maps.getExact(cidr);
        if (entry) previous.present.push(entry);
        else previous.absent.push(cidr);
      }
      const t1 = clock();
      maps.upsert(upsert); // all or nothing
      try {
        maps.remove(remove.filter((c) => !upsert.some((e) => e.cidr === c)));
      } catch (err) {
        applyPatchSnapshot(maps, previous);
        throw err;
      }
      const t2 = clock();
      const wanted = new Map<string, KernelBlocklistEntry | null>(touched.map((c) => [c, null]));
      for (const e of upsert) wanted.set(e.cidr, e);
      const wrong: string[] = [];
      for (const [cidr, want] of wanted) {
        const have = maps.getExact(cidr);
        if ((have?.expiresAt ?? 0) !== (want?.expiresAt ?? 0) || (have === null) !== (want === null)) wrong.push(cidr);
      }
      if (wrong.length > 0) {
        throw failure(FailureType.BlocklistVerifyFailed, `blocklist read-back differs for ${wrong.join(', ')}`);
      }
      const t3 = clock();
      // A caller that keeps `previous` itself (the change workflow) needs no copy in the store.
      const snapshotRef = deps.store && options.storeSnapshot !== false ? deps.store.put(Buffer.from(JSON.stringify(previous))) : undefined;
      const added = previous.absent.filter((c) => upsert.some((e) => e.cidr === c)).length;
      const removed = previous.present.filter((e) => remove.includes(e.cidr) && !upsert.some((u) => u.cidr === e.cidr)).length;
      return {
        operations: [
          ...upsert.map((e) => `${previous.absent.includes(e.cidr) ? '+' : '~'} block ${e.cidr}`),
          ...remove.filter((c) => previous.present.some((e) => e.cidr === c) && !upsert.some((e) => e.cidr === c)).map((c) => `- block ${c}`),
        ].slice(0, MAX_OPERATION_LINES),
        counts: { added, changed: upsert.length - added, removed, total: -1 },
        ...(snapshotRef ? { snapshotRef } : {}),
        previous,
        timings: { read: 0, dump: t1 - t0, snapshot: 0, diff: 0, apply: t2 - t1, verify: t3 - t2 },
      };
    },

    /** Undoes a {@link patch} from its returned `previous`. */
    restorePatch(previous: PatchSnapshot): void {
      applyPatchSnapshot(deps.maps(), previous);
    },
  };
}

/** The previous state of the prefixes a patch touched. */
export interface PatchSnapshot {
  present: KernelBlocklistEntry[];
  absent: string[];
}

function applyPatchSnapshot(maps: BlocklistMaps, previous: PatchSnapshot): void {
  maps.upsert(previous.present);
  maps.remove(previous.absent);
}

export type BlocklistSync = ReturnType<typeof createBlocklistSync>;

/** Diff lines for the first {@link MAX_OPERATION_LINES} operations, upserts before deletes. */
function renderDiff(diff: ImageDiff): string[] {
  const lines: string[] = [];
  for (const kind of IMAGE_KINDS) {
    const part = { ...emptyImage(), [kind]: diff[kind].upsert };
    for (const e of imageEntries(part, MAX_OPERATION_LINES - lines.length)) lines.push(`+ block ${e.cidr}`);
  }
  for (const kind of IMAGE_KINDS) {
    const d = diff[kind];
    const part = { ...emptyImage(), [kind]: { keys: d.deleteKeys, values: Buffer.alloc(Math.min(d.deleteCount, MAX_OPERATION_LINES) * 16), count: Math.min(d.deleteCount, MAX_OPERATION_LINES) } };
    for (const e of imageEntries(part, MAX_OPERATION_LINES - lines.length)) lines.push(`- block ${e.cidr}`);
  }
  return lines;
}
