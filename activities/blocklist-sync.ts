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
import { progress } from './heartbeat';
import { createHash } from 'node:crypto';
import { constants as fsConstants, mkdirSync, readdirSync, renameSync, statSync, type Stats, unlinkSync, writeFileSync } from 'node:fs';
import { type FileHandle, lstat, open, readlink, realpath } from 'node:fs/promises';
import { isAbsolute, join, normalize, resolve } from 'node:path';
import type { Logger } from 'pino';
import { type BlocklistRef, blocklistRefSchema } from '../model/blocklist-ref';
import { failure, FailureType } from '../model/failures';
import { canonicalCidr } from '../model/ip';
import {
  BlocklistFileError,
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

/** Limits on reading a blocklist by file reference (worker configuration, workers/config.ts). */
export interface FeedLimits {
  /**
   * The only folders a `{ file }` reference may name a file under (FOS1_FEED_DIRS). Empty:
   * no file references at all (content-hash references still work).
   */
  dirs: readonly string[];
  /** Largest file read, in bytes (FOS1_FEED_MAX_BYTES). */
  maxBytes: number;
  /** How long one read may take before it is abandoned (FOS1_FEED_READ_TIMEOUT_MS). */
  readTimeoutMs: number;
}

/** 256 MiB: a million-entry list is ~15 MB of text; ten times the largest feed seen. */
export const DEFAULT_FEED_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_FEED_READ_TIMEOUT_MS = 30_000;

/**
 * Content-addressed blobs on the node: `<dir>/<sha256>`. Blocklists arrive here by
 * hash, and snapshots for rollback are written here. `{ file }` references are read
 * through it too, confined to the feed directories (see {@link BlocklistStore.read}).
 */
export class BlocklistStore {
  readonly feeds: FeedLimits;

  /**
   * @param retainMs how long a blob is kept after it was last stored. Every change of a
   *   full list writes a snapshot (20 MB for a million entries), needed only until the
   *   change has committed or reverted; older blobs are pruned when a new one is stored.
   *   Seven days by default: far beyond any confirm timeout.
   * @param feeds where file references may point, and how much and how long is read.
   */
  constructor(
    readonly dir: string,
    readonly retainMs = 7 * 24 * 3600_000,
    feeds: Partial<FeedLimits> = {},
  ) {
    this.feeds = {
      dirs: (feeds.dirs ?? []).map((d) => resolve(d)),
      maxBytes: feeds.maxBytes ?? DEFAULT_FEED_MAX_BYTES,
      readTimeoutMs: feeds.readTimeoutMs ?? DEFAULT_FEED_READ_TIMEOUT_MS,
    };
  }

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

  /** How errors name a reference: the file, or the hash. */
  static describe(ref: BlocklistRef): string {
    return 'file' in ref ? `blocklist file ${ref.file}` : `blocklist sha256 ${ref.sha256}`;
  }

  /**
   * Reads and hash-checks the content of a reference. A request names the file, and the
   * worker reading it runs as root, so a `{ file }` is read only when it is a regular file
   * under one of the feed directories once every link is resolved, no larger than the
   * limit, and read within the time-out (see {@link readConfined}); a blob of the store,
   * likewise under the store's folder. The errors name the file and the rule, never its content.
   */
  async read(input: unknown): Promise<Buffer> {
    const parsed = blocklistRefSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw failure(FailureType.InvalidBlocklist, `blocklist reference${issue?.path.length ? ` field "${issue.path.join('.')}"` : ''}: ${issue?.message ?? 'invalid'}`);
    }
    const ref: BlocklistRef = parsed.data;
    const data =
      'file' in ref
        ? await readConfined(ref.file, this.feeds.dirs, this.feeds, 'the feed directories (FOS1_FEED_DIRS)')
        : await readConfined(join(resolve(this.dir), ref.sha256), [resolve(this.dir)], this.feeds, 'the blocklist store');
    if (ref.sha256 !== undefined) {
      const actual = createHash('sha256').update(data).digest('hex');
      if (actual !== ref.sha256) {
        throw failure(FailureType.InvalidBlocklist, `${BlocklistStore.describe(ref)} has sha256 ${actual}, but the reference says ${ref.sha256}: the content changed after it was referenced`);
      }
    }
    return data;
  }

  /**
   * Reads a reference and parses it (a fos1 snapshot or the text format). A bad line is
   * `InvalidBlocklist` naming the reference, the line number and the rule.
   */
  async load(input: unknown): Promise<BlocklistImage> {
    const data = await this.read(input);
    const source = BlocklistStore.describe(input as BlocklistRef);
    try {
      return isSerializedImage(data) ? deserializeImage(data) : parseBlocklistText(data);
    } catch (err) {
      if (err instanceof BlocklistFileError) throw failure(FailureType.InvalidBlocklist, `${source} line ${err.line}: ${err.rule}`);
      if (err instanceof RangeError) throw failure(FailureType.InvalidBlocklist, `${source}: ${err.message}`);
      throw err;
    }
  }
}

/** What `lstat` calls a file that is not a regular one, for the error. */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isSymbolicLink()) return 'symbolic link';
  return 'special file';
}

/**
 * Reads `path` only if it is a regular file inside one of `roots`:
 *
 * 1. lexically under a root (no `..`: the schema refuses it; normalised here);
 * 2. its real path (every link resolved) still under that root's real path, so a link
 *    inside a feed directory may point within it, never out of it;
 * 3. `lstat` of the real path a regular file (a FIFO, device or socket is refused before
 *    it is opened, so nothing can block the open) and within the size limit (a 10 GB
 *    sparse file fails here, unread);
 * 4. opened with O_NOFOLLOW | O_NONBLOCK, then `fstat` of the open descriptor the same
 *    file (device and inode) and `/proc/self/fd/N` the same path: a component swapped for
 *    a link between the check and the open is caught on what was actually opened;
 * 5. read in chunks, never more than the limit, each chunk within what is left of the time-out.
 *
 * Every error names the file and the rule; none carries content.
 */
async function readConfined(path: string, roots: readonly string[], limits: FeedLimits, rootsName: string): Promise<Buffer> {
  const what = `blocklist file ${path}`;
  const refuse = (rule: string) => failure(FailureType.InvalidBlocklist, `${what} ${rule}`);
  if (!isAbsolute(path) || normalize(path) !== path) throw refuse('must be a normalised absolute path');
  const root = roots.find((r) => path.startsWith(`${r}/`));
  if (root === undefined) {
    throw refuse(`is outside ${rootsName} (${roots.length > 0 ? roots.join(':') : 'none are configured'}): only regular files under them may be referenced`);
  }
  const missing = (err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return code === 'ENOENT' || code === 'ENOTDIR'
      ? failure(FailureType.BlocklistRefNotFound, `${what} cannot be read: it does not exist`)
      : failure(FailureType.BlocklistRefNotFound, `${what} cannot be read (${code})`);
  };
  let real: string;
  let realRoot: string;
  try {
    realRoot = await realpath(root);
    real = await realpath(path);
  } catch (err) {
    throw missing(err);
  }
  if (!real.startsWith(`${realRoot}/`)) throw refuse(`resolves through a link to a path outside its directory ${root}: links may not lead out of ${rootsName}`);
  let st: Stats;
  try {
    st = await lstat(real);
  } catch (err) {
    throw missing(err);
  }
  if (!st.isFile()) throw refuse(`is a ${fileKind(st)}, not a regular file: only regular files are read`);
  const tooLarge = (size: number) => refuse(`is ${size} bytes, more than the limit of ${limits.maxBytes} (FOS1_FEED_MAX_BYTES)`);
  if (st.size > limits.maxBytes) throw tooLarge(st.size);

  let handle: FileHandle;
  try {
    handle = await open(real, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw refuse('became a symbolic link while it was opened');
    throw missing(err);
  }
  try {
    const opened = await handle.stat();
    if (!opened.isFile() || opened.dev !== st.dev || opened.ino !== st.ino) throw refuse('changed while it was opened (it is not the file that was checked)');
    const where = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
    if (where !== undefined && where !== real) throw refuse('moved while it was opened (it is not the file that was checked)');
    if (opened.size > limits.maxBytes) throw tooLarge(opened.size);
    return await readAll(handle, opened.size, limits, what, tooLarge);
  } finally {
    await handle.close();
  }
}

/** Reads an open file to its end, at most `limits.maxBytes`, within `limits.readTimeoutMs`. */
async function readAll(handle: FileHandle, expected: number, limits: FeedLimits, what: string, tooLarge: (size: number) => Error): Promise<Buffer> {
  const deadline = Date.now() + limits.readTimeoutMs;
  const chunks: Buffer[] = [];
  let total = 0;
  // One byte over the limit is enough to know the file grew past it.
  const chunkSize = Math.max(64 * 1024, Math.min(expected + 1, 16 * 1024 * 1024));
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw failure(FailureType.InvalidBlocklist, `${what} was not read within ${limits.readTimeoutMs} ms (FOS1_FEED_READ_TIMEOUT_MS)`);
    const buffer = Buffer.allocUnsafe(Math.min(chunkSize, limits.maxBytes + 1 - total));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(failure(FailureType.InvalidBlocklist, `${what} was not read within ${limits.readTimeoutMs} ms (FOS1_FEED_READ_TIMEOUT_MS)`)), left);
    });
    try {
      const { bytesRead } = await Promise.race([handle.read(buffer, 0, buffer.length, null), timeout]);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > limits.maxBytes) throw tooLarge(total);
      chunks.push(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead));
    } finally {
      clearTimeout(timer);
    }
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
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

  /**
   * Full-state sync of an image: dump, diff, batch apply (all or nothing), verify. Each
   * step of a million-entry load holds the thread for a fraction of a second (batch
   * syscalls); between steps it heartbeats and yields (activities/heartbeat.ts), so the
   * event loop turns and the activity's heartbeats get out.
   */
  async function syncImage(desired: BlocklistImage, readMs: number): Promise<BlocklistSyncResult> {
    const maps = deps.maps();
    const step = (phase: string) => progress({ phase: `blocklist ${phase}`, entries: imageSize(desired) });
    await step('dump');
    const t = clock();
    const before = maps.dumpImage();
    const placed = maps.placed(desired);
    const tDump = clock();
    await step('snapshot');
    const t0 = clock();
    const snapshotRef = deps.store ? deps.store.put(serializeImage(before)) : undefined;
    const tSnapshot = clock();
    await step('diff');
    const t0b = clock();
    const diff = diffImages(before, placed);
    const t1 = clock();
    await step('apply');
    const t1b = clock();
    maps.applyImage(placed, before, diff);
    const t2 = clock();
    await step('verify');
    const t2b = clock();
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
      timings: { read: readMs, dump: tDump - t, snapshot: tSnapshot - t0, diff: t1 - t0b, apply: t2 - t1b, verify: t3 - t2b },
    };
    deps.logger?.info({ counts: result.counts, timings: result.timings }, 'blocklist converged');
    return result;
  }

  return {
    /** Converges the maps to an image the caller already has (parsed for a plan, say). */
    syncToImage(desired: BlocklistImage): Promise<BlocklistSyncResult> {
      return syncImage(desired, 0);
    },

    /** Converges the maps to an inline list (the change workflow's payload; expiresAt in unix seconds). */
    syncEntries(desired: KernelBlocklistEntry[]): Promise<BlocklistSyncResult> {
      const t = clock();
      const image = translateErrorsSync(ErrorDomains.blocklist, () => imageFromEntries(desired));
      return syncImage(image, clock() - t);
    },

    /** Converges the maps to the blocklist a reference points at. */
    async syncFromRef(ref: unknown): Promise<BlocklistSyncResult> {
      if (!deps.store) throw new Error('blocklist sync by reference needs a BlocklistStore');
      const t = clock();
      await progress({ phase: 'blocklist load' });
      const image = await deps.store.load(ref);
      return syncImage(image, clock() - t);
    },

    /** Restores a snapshot written by an earlier sync (same as syncing to it). */
    restore(snapshotRef: { sha256: string }): Promise<BlocklistSyncResult> {
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
