/**
 * The kernel side of the blocklist: two pinned LPM tries, one per address family,
 * that BPF programs consult and activities write.
 *
 * Layout of keys and values is in `bpf/include/fos1-blocklist.h` / `blocklist-codec.ts`.
 * The maps are pinned (rather than owned by a process) so that they survive worker
 * restarts and can be shared with programs attached later; that is also why a pin
 * with the wrong shape is an error here and never silently replaced.
 */
import { mkdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type Cidr, type IpFamily, formatCidr, parseCidr } from '../model/ip';
import {
  BLOCK_VALUE_SIZE,
  decodeBlockValue,
  decodeLpmKey,
  encodeBlockValue,
  encodeLpmKey,
  lpmKeySize,
} from './blocklist-codec';
import {
  type BlocklistImage,
  type ImageDiff,
  type ImageKind,
  IMAGE_KINDS,
  diffImages,
  diffSize,
  hostsIntoTries,
  imageDigest,
} from './blocklist-image';
import { BpfError, BpfNotFoundError, bpfError } from './libbpf';
import { BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_NOEXIST, BpfMap, type DumpRange, isUnsupported } from './map';
import { type HelperTask, SKIPPED, newClaim, runOnHelper, warmHelper } from './batch-threads';

/**
 * Estimated cost of one trie insert relative to one hash map insert (measured here:
 * ~2–3 µs vs ~0.5 µs per element in batch updates of 100 k prefixes / 1 M hosts).
 */
const TRIE_INSERT_COST = 4;
/** Below this estimated cost (hash inserts) a helper thread costs more to start than it saves. */
const THREADED_MIN_WEIGHT = 1 << 17;

/** Map (and pin file) name of the IPv4 trie. */
export const BLOCKLIST_V4_MAP = 'blocklist_v4';
/** Map (and pin file) name of the IPv6 trie. */
export const BLOCKLIST_V6_MAP = 'blocklist_v6';
/** Map (and pin file) name of the IPv4 single-host hash map. */
export const BLOCKHOST_V4_MAP = 'blockhost_v4';
/** Map (and pin file) name of the IPv6 single-host hash map. */
export const BLOCKHOST_V6_MAP = 'blockhost_v6';

/** One blocked prefix as stored in the kernel. */
export interface KernelBlocklistEntry {
  /** Canonical prefix text, always with `/len` (e.g. `192.0.2.7/32`, `2001:db8::/32`). */
  cidr: string;
  /** Unix seconds after which the entry no longer applies; absent means never. */
  expiresAt?: number;
}

/** Where the maps live and how big they are created. */
export interface BlocklistMapsOptions {
  /** bpffs directory holding the pins, e.g. `/sys/fs/bpf/fos1`. Created if missing. */
  pinDir: string;
  /** `max_entries` for a newly created IPv4 map (an existing pin keeps its own). */
  maxEntriesV4: number;
  /** `max_entries` for a newly created IPv6 map (an existing pin keeps its own). */
  maxEntriesV6: number;
  /**
   * Keep single hosts (/32, /128) in the hash maps `blockhost_v4`/`blockhost_v6`
   * (created with these sizes if missing) instead of the tries: O(1) inserts and
   * lookups, and the layout fos1's datapath programs read. Without it every entry
   * goes into the tries, as before the datapath existed.
   */
  hostMaps?: { maxEntriesV4: number; maxEntriesV6: number };
  /**
   * Threads for the batch writes and dumps of large lists: 2 (default) lets the process's
   * helper thread (see `batch-threads.ts`) take part of the work — trie writes and slices
   * of the host map's writes, trie and host-bucket ranges of dumps — while this thread
   * does the rest; 1 keeps every syscall on the calling thread. Two pay off only when a
   * second core is free.
   */
  batchThreads?: 1 | 2;
}

/** Pin path of a family's map inside `pinDir`. */
export function blocklistPinPath(pinDir: string, family: IpFamily): string {
  return join(pinDir, family === 4 ? BLOCKLIST_V4_MAP : BLOCKLIST_V6_MAP);
}

/**
 * Total order used by {@link BlocklistMaps.readAll}: IPv4 before IPv6, then by
 * address numerically, then shorter prefix first (`10.0.0.0/8` before `10.0.0.0/24`
 * before `10.1.0.0/16`). Numeric rather than textual so that `9.0.0.0/8` sorts
 * before `10.0.0.0/8`.
 */
export function compareCidrs(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) {
    const d = (a.bytes[i] ?? 0) - (b.bytes[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.prefixLength - b.prefixLength;
}

/** The pinned IPv4 and IPv6 blocklist tries. Not safe for concurrent writers in one process. */
export class BlocklistMaps {
  /** `max_entries` of each trie, as the kernel reports it. */
  readonly capacity: { v4: number; v6: number };
  /** `max_entries` of each host hash map, when the maps were opened with `hostMaps`. */
  readonly hostCapacity: { v4: number; v6: number } | undefined;

  private constructor(
    private readonly v4: BpfMap,
    private readonly v6: BpfMap,
    private readonly hosts?: { v4: BpfMap; v6: BpfMap },
    private readonly threads: 1 | 2 = 2,
  ) {
    this.capacity = { v4: v4.info.maxEntries, v6: v6.info.maxEntries };
    this.hostCapacity = hosts ? { v4: hosts.v4.info.maxEntries, v6: hosts.v6.info.maxEntries } : undefined;
  }

  /**
   * Opens the pinned maps `${pinDir}/blocklist_v4` and `${pinDir}/blocklist_v6`,
   * creating (mkdir -p + create LPM trie + pin) any that is missing. If a pinned map
   * exists with a different key/value size or type, throws {@link BpfMapMismatchError}
   * rather than recreating it: programs may hold the old map, and data would be lost.
   * An existing map keeps its `max_entries`; {@link capacity} reports the real value.
   */
  static open(opts: BlocklistMapsOptions): BlocklistMaps {
    mkdirSync(opts.pinDir, { recursive: true });
    const v4 = openOrCreate(opts.pinDir, 4, opts.maxEntriesV4);
    const opened: BpfMap[] = [v4];
    try {
      const v6 = openOrCreate(opts.pinDir, 6, opts.maxEntriesV6);
      opened.push(v6);
      if (!opts.hostMaps) return new BlocklistMaps(v4, v6, undefined, opts.batchThreads);
      const h4 = openOrCreateHost(opts.pinDir, 4, opts.hostMaps.maxEntriesV4);
      opened.push(h4);
      const h6 = openOrCreateHost(opts.pinDir, 6, opts.hostMaps.maxEntriesV6);
      // Maps big enough for the two-thread paths: start the (process-wide, kept) helper
      // thread now, in the background, rather than on the first large write.
      if ((opts.batchThreads ?? 2) === 2 && h4.bucketCount >= 1 << 16) warmHelper();
      return new BlocklistMaps(v4, v6, { v4: h4, v6: h6 }, opts.batchThreads);
    } catch (err) {
      opened.forEach((m) => m.close());
      throw err;
    }
  }

  /**
   * Every entry of both maps, sorted with {@link compareCidrs} (IPv4 first), with
   * canonical prefix text. `expiresAt` is omitted for entries that never expire.
   */
  readAll(): KernelBlocklistEntry[] {
    const found = new Map<string, { cidr: Cidr; entry: KernelBlocklistEntry }>();
    if (this.hosts) {
      for (const [family, map] of [[4, this.hosts.v4], [6, this.hosts.v6]] as const) {
        for (const [key, value] of map.lookupBatch()) {
          const cidr: Cidr = { family, bytes: new Uint8Array(key), prefixLength: family === 4 ? 32 : 128 };
          const text = formatCidr(cidr);
          const { expiresAt } = decodeBlockValue(value);
          found.set(text, { cidr, entry: expiresAt === 0 ? { cidr: text } : { cidr: text, expiresAt } });
        }
      }
    }
    for (const map of [this.v4, this.v6]) {
      for (const [key, value] of map.lookupBatch()) {
        const cidr = decodeLpmKey(key);
        const text = formatCidr(cidr);
        const { expiresAt } = decodeBlockValue(value);
        found.set(text, { cidr, entry: expiresAt === 0 ? { cidr: text } : { cidr: text, expiresAt } });
      }
    }
    return [...found.values()].sort((a, b) => compareCidrs(a.cidr, b.cidr)).map((f) => f.entry);
  }

  /**
   * Inserts or replaces entries, each in its family's map. All or nothing: every
   * prefix is validated before the kernel is touched, and if the kernel refuses one
   * (typically {@link BpfMapFullError} when a map is full) the entries this call
   * already wrote are put back as they were before the error is rethrown.
   * When the same prefix appears twice, the last one wins.
   */
  upsert(entries: KernelBlocklistEntry[]): void {
    const writes = new Map<string, { map: BpfMap; key: Buffer; value: Buffer }>();
    for (const entry of entries) {
      const cidr = parseCidr(entry.cidr);
      const host = this.hostMapFor(cidr);
      writes.set(formatCidr(cidr), {
        map: host ?? this.mapFor(cidr.family),
        key: host ? Buffer.from(cidr.bytes) : encodeLpmKey(cidr),
        value: encodeBlockValue({ expiresAt: entry.expiresAt ?? 0 }),
      });
    }

    const undo: Array<() => void> = [];
    try {
      for (const { map, key, value } of writes.values()) {
        undo.push(replaceExact(map, key, value));
      }
    } catch (err) {
      undoInReverse(undo);
      throw err;
    }
  }

  /** Deletes prefixes; ones that are not present are skipped, so this is idempotent. */
  remove(cidrs: string[]): void {
    // Parse everything first so a typo fails the call before anything is deleted.
    const keys = { 4: [] as Buffer[], 6: [] as Buffer[] };
    const hostKeys = { 4: [] as Buffer[], 6: [] as Buffer[] };
    for (const text of cidrs) {
      const cidr = parseCidr(text);
      // A host may also sit in the trie (written before host maps existed): remove both.
      keys[cidr.family].push(encodeLpmKey(cidr));
      if (this.hostMapFor(cidr)) hostKeys[cidr.family].push(Buffer.from(cidr.bytes));
    }
    this.v4.deleteBatch(keys[4]);
    this.v6.deleteBatch(keys[6]);
    this.hosts?.v4.deleteBatch(hostKeys[4]);
    this.hosts?.v6.deleteBatch(hostKeys[6]);
  }

  /**
   * The entry stored for exactly `cidr`, or null. Hosts are looked up in their hash
   * map (and, for entries written before host maps existed, the trie). A trie lookup
   * is a longest-prefix match, so exactness is checked without writing anything:
   * `get_next_key` of a key that is absent returns the trie's first key, of a present
   * key its successor (or ENOENT for the last one).
   */
  getExact(text: string): KernelBlocklistEntry | null {
    const cidr = parseCidr(text);
    const canonical = formatCidr(cidr);
    const host = this.hostMapFor(cidr);
    const fromValue = (value: Buffer): KernelBlocklistEntry => {
      const { expiresAt } = decodeBlockValue(value);
      return expiresAt === 0 ? { cidr: canonical } : { cidr: canonical, expiresAt };
    };
    if (host) {
      const value = host.lookup(Buffer.from(cidr.bytes));
      if (value) return fromValue(value);
    }
    const trie = this.mapFor(cidr.family);
    const key = encodeLpmKey(cidr);
    const value = trie.lookup(key);
    if (!value) return null;
    const first = trie.nextKey(null);
    const after = trie.nextKey(key);
    if (after !== null && first !== null && after.equals(first) && !key.equals(first)) return null;
    return fromValue(value);
  }

  /**
   * The maps' contents as a {@link BlocklistImage} (batch reads, no object per entry).
   * Hosts found in a trie stay in the trie part, so a diff against a desired image
   * moves them into the host maps. `meanwhile`, if given, runs on this thread while a
   * helper thread is still reading (or first, when everything runs on one thread): work
   * that would otherwise wait for the dump, such as the expected digest of a verify.
   */
  dumpImage(meanwhile?: () => void): BlocklistImage {
    const empty = { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 };
    if (this.threads === 2 && this.hosts && this.hosts.v4.info.type === BPF_MAP_TYPE_HASH && this.hosts.v4.bucketCount >= 1 << 16) {
      return this.dumpImageOnTwoThreads(this.hosts, meanwhile);
    }
    meanwhile?.();
    return {
      hostV4: this.hosts ? this.hosts.v4.dumpRaw() : empty,
      hostV6: this.hosts ? this.hosts.v6.dumpRaw() : empty,
      lpmV4: this.v4.dumpRaw(),
      lpmV6: this.v6.dumpRaw(),
    };
  }

  /**
   * {@link dumpImage} on two threads. Most of a dump is kernel time per element
   * (~0.45 µs per host, ~1 µs per trie entry here). A first small batch call on the
   * IPv4 host map tells whether it is big; if so, the IPv4 trie and eight bucket
   * ranges of the host map become tasks that this thread and the helper claim one at a
   * time from a shared counter, so whichever is free takes the next one (their costs
   * are not known up front). The hash map's batch cursor is a bucket index, so ranges
   * start exactly where the previous one ends; the last call of a range may run past
   * its end, and trimDumpOverlap removes what the next range read too.
   */
  private dumpImageOnTwoThreads(hosts: { v4: BpfMap; v6: BpfMap }, meanwhile?: () => void): BlocklistImage {
    const h4 = hosts.v4;
    const { keySize, valueSize } = h4.info;
    const buckets = h4.bucketCount;
    const probe = h4.dumpBuckets(1 << 12, Infinity, () => 0);
    // dumpBuckets stopped after its first call (untilBucket 0) unless the map ended there.
    const nextBucket = probe.nextBucket;
    if (nextBucket === undefined || nextBucket >= buckets) {
      meanwhile?.();
      return { hostV4: joinRange(probe), hostV6: hosts.v6.dumpRaw(), lpmV4: this.v4.dumpRaw(), lpmV6: this.v6.dumpRaw() };
    }
    const density = probe.count / Math.max(1, nextBucket);
    if (density * buckets < 1 << 16) {
      // A small map: not worth a second thread.
      meanwhile?.();
      const rest = h4.dumpBuckets(1 << 18, Infinity, undefined, nextBucket);
      return { hostV4: joinRange({ ...probe, keyChunks: [...probe.keyChunks, ...rest.keyChunks], valueChunks: [...probe.valueChunks, ...rest.valueChunks], count: probe.count + rest.count }), hostV6: hosts.v6.dumpRaw(), lpmV4: this.v4.dumpRaw(), lpmV6: this.v6.dumpRaw() };
    }
    const RANGES = 8;
    const span = Math.ceil((buckets - nextBucket) / RANGES);
    // Calls of about an eighth of a range: the part of a range's last call that runs into
    // the next range is read twice, so it should stay small.
    const chunk = Math.max(1 << 10, Math.ceil((density * span) / 8));
    const tasks: HelperTask[] = [{ op: 'dump', fd: this.v4.fd, keySize: this.v4.info.keySize, valueSize: this.v4.info.valueSize, fromBucket: null, untilBucket: null, chunk: 1 << 16 }];
    for (let r = 0; r < RANGES; r++) {
      const from = nextBucket + r * span;
      if (from >= buckets) break;
      tasks.push({ op: 'dump', fd: h4.fd, keySize, valueSize, fromBucket: from, untilBucket: Math.min(buckets, from + span), chunk });
    }
    const claim = newClaim();
    const helper = runOnHelper(tasks, `bpf_map_lookup_batch on ${h4.describe()} and ${this.v4.describe()}`, claim);
    const mine: Array<DumpRange | undefined> = tasks.map(() => undefined);
    let rest: Pick<BlocklistImage, 'hostV6' | 'lpmV6'> | undefined;
    let error: unknown;
    try {
      for (let i = Atomics.add(claim, 0, 1); i < tasks.length; i = Atomics.add(claim, 0, 1)) {
        const t = tasks[i] as Extract<HelperTask, { op: 'dump' }>;
        mine[i] = t.fromBucket === null ? this.v4.dumpBuckets(t.chunk, Infinity) : h4.dumpBuckets(t.chunk, t.untilBucket ?? Infinity, undefined, t.fromBucket);
      }
      rest = { hostV6: hosts.v6.dumpRaw(), lpmV6: this.v6.dumpRaw() };
      meanwhile?.();
    } catch (err) {
      error = err;
    }
    const theirs = helper.wait();
    if (error !== undefined || !rest) throw error;
    const ranges: DumpRange[] = tasks.map((t, i) => {
      const own = mine[i];
      if (own) return own;
      const o = theirs[i];
      if (!o) throw new Error(`blocklist dump: task ${i} was claimed by no thread`);
      if (o.ret !== 0) throw bpfError('bpf_map_lookup_batch', o.ret, i === 0 ? this.v4.describe() : h4.describe());
      return { keyChunks: [o.keys], valueChunks: [o.values], count: o.count };
    });
    const [trie, ...hostRanges] = ranges as [DumpRange, ...DumpRange[]];
    // Trim each range by the first key of the next range that read anything.
    for (let r = 0; r < hostRanges.length; r++) {
      const next = hostRanges.slice(r + 1).find((x) => x.count > 0);
      if (next) h4.trimDumpOverlap(hostRanges[r] as DumpRange, (next.keyChunks.find((c) => c.length > 0) as Buffer).subarray(0, keySize));
    }
    const all = [probe, ...hostRanges];
    return {
      hostV4: joinRange({ keyChunks: all.flatMap((x) => x.keyChunks), valueChunks: all.flatMap((x) => x.valueChunks), count: all.reduce((n, x) => n + x.count, 0) }),
      lpmV4: joinRange(trie),
      ...rest,
    };
  }

  /** The image these maps hold when `desired` is applied (hosts go to the tries without host maps). */
  placed(desired: BlocklistImage): BlocklistImage {
    return this.hosts ? desired : hostsIntoTries(desired);
  }

  /**
   * Makes the maps hold exactly `desired`: one diff against a batch dump, then batch
   * upserts into all four maps and only then batch deletes (a block being narrowed or
   * widened never lapses). If the kernel refuses a write (typically
   * {@link BpfMapFullError}), the maps are put back to the dump taken before the
   * change and the error is rethrown: all or nothing.
   * Returns the diff that was applied and the contents before (for a snapshot). A
   * caller that already diffed `before` against `placed(desired)` passes the diff.
   */
  applyImage(
    desired: BlocklistImage,
    before: BlocklistImage = this.dumpImage(),
    diff: ImageDiff = diffImages(before, this.placed(desired)),
  ): { diff: ImageDiff; before: BlocklistImage } {
    try {
      this.applyDiff(diff);
    } catch (err) {
      try {
        this.applyDiff(diffImages(this.dumpImage(), before));
      } catch {
        // The original error is the one worth reporting; verification will show the rest.
      }
      throw err;
    }
    return { diff, before };
  }

  /**
   * Writes a diff in an order that never lets a wanted block lapse and needs no more
   * room than the larger of the two lists in the host maps:
   * 1. prefix upserts (tries), so a host about to be replaced by a covering prefix stays covered;
   * 2. host deletes, so a full switch of a million hosts for a million others fits a
   *    map of a million (hosts being deleted are unwanted; a wanted one is never deleted);
   * 3. host upserts;
   * 4. prefix deletes last, so a prefix being narrowed or widened never lapses (tries are
   *    not preallocated: their room for both costs nothing until used).
   */
  applyDiff(diff: ImageDiff): { upserts: number; deletes: number } {
    const upsert = (kind: ImageKind) => {
      const { upsert: part } = diff[kind];
      // Host maps are hash maps: updateBatchRaw splits a large upsert over two threads.
      if (part.count > 0) this.mapOfKind(kind).updateBatchRaw(part.keys, part.values, part.count, BPF_ANY, 1 << 16, this.threads);
    };
    const remove = (kind: ImageKind) => {
      const d = diff[kind];
      if (d.deleteCount > 0) this.mapOfKind(kind).deleteBatchRaw(d.deleteKeys, d.deleteCount);
    };
    const upserts = IMAGE_KINDS.filter((kind) => diff[kind].upsert.count > 0).map((kind) => ({ kind, map: this.mapOfKind(kind), part: diff[kind].upsert }));
    const weight = upserts.reduce((w, u) => w + u.part.count * (u.map.info.type === BPF_MAP_TYPE_LPM_TRIE ? TRIE_INSERT_COST : 1), 0);
    if (this.threads === 2 && diff.hostV4.deleteCount === 0 && diff.hostV6.deleteCount === 0 && weight >= THREADED_MIN_WEIGHT) {
      // No host deletes to sit between steps 1 and 3 (a first load, or a list that only
      // grows): prefix and host upserts are then independent and run side by side.
      this.upsertOnTwoThreads(upserts);
    } else {
      upsert('lpmV4');
      upsert('lpmV6');
      remove('hostV4');
      remove('hostV6');
      upsert('hostV4');
      upsert('hostV6');
    }
    remove('lpmV4');
    remove('lpmV6');
    const size = diffSize(diff);
    return { upserts: size.upserts, deletes: size.deletes };
  }

  /**
   * Batch upserts on two threads. A trie has one lock, so each trie upsert is one task;
   * the host hash map's buckets lock separately, so a large host upsert is cut into
   * eight slices. Both threads take tasks from a shared counter (the trie first, as the
   * longest), so whichever thread gets the CPU does the work: a static split would wait
   * for a thread that the scheduler put aside. After a failed write both threads skip
   * the rest, and both are done before this returns or throws, so the rollback in
   * {@link applyImage} restores a map nobody is writing.
   */
  private upsertOnTwoThreads(upserts: Array<{ kind: ImageKind; map: BpfMap; part: BlocklistImage[ImageKind] }>): void {
    const SLICES = 8;
    const tasks: Array<{ map: BpfMap; part: BlocklistImage[ImageKind] }> = [];
    for (const u of [...upserts].sort((a, b) => Number(b.map.info.type === BPF_MAP_TYPE_LPM_TRIE) - Number(a.map.info.type === BPF_MAP_TYPE_LPM_TRIE))) {
      const { keySize, valueSize } = u.map.info;
      const n = u.map.info.type === BPF_MAP_TYPE_LPM_TRIE || u.part.count < 1 << 16 ? 1 : SLICES;
      const per = Math.ceil(u.part.count / n);
      for (let at = 0; at < u.part.count; at += per) {
        const end = Math.min(u.part.count, at + per);
        tasks.push({ map: u.map, part: { keys: u.part.keys.subarray(at * keySize, end * keySize), values: u.part.values.subarray(at * valueSize, end * valueSize), count: end - at } });
      }
    }
    const chunk = 1 << 16;
    const claim = newClaim();
    const helper = runOnHelper(
      tasks.map(({ map, part }) => ({ op: 'update', fd: map.fd, keySize: map.info.keySize, valueSize: map.info.valueSize, keys: part.keys, values: part.values, count: part.count, flags: BPF_ANY, chunk })),
      `bpf_map_update_batch on ${[...new Set(tasks.map((t) => t.map.describe()))].join(', ')}`,
      claim,
    );
    const doneHere = tasks.map(() => false);
    let mine: unknown;
    for (let i = Atomics.add(claim, 0, 1); i < tasks.length; i = Atomics.add(claim, 0, 1)) {
      if (Atomics.load(claim, 1) !== 0) continue;
      const { map, part } = tasks[i] as (typeof tasks)[number];
      try {
        map.updateBatchRaw(part.keys, part.values, part.count, BPF_ANY, chunk);
        doneHere[i] = true;
      } catch (err) {
        mine = err;
        Atomics.store(claim, 1, 1);
      }
    }
    const outcomes = helper.wait();
    if (mine !== undefined) throw mine;
    const failed = outcomes.find((o) => o && o.ret !== 0 && o.ret !== SKIPPED && !isUnsupported(o.ret));
    if (failed) throw (tasks[outcomes.indexOf(failed)] as (typeof tasks)[number]).map.batchUpdateError(failed.ret);
    // Left: tasks skipped after a map without batch support stopped the helper; the
    // one-thread path has the per-element fallback.
    tasks.forEach(({ map, part }, i) => {
      if (!doneHere[i] && outcomes[i]?.ret !== 0) map.updateBatchRaw(part.keys, part.values, part.count, BPF_ANY, chunk);
    });
  }

  /**
   * Reads the maps back and compares them with `desired` by an order-independent
   * digest of every (key, value). Returns null when they match, else a description.
   */
  verifyImage(desired: BlocklistImage): string | null {
    let want = '';
    // On two threads, the expected digest is computed while the helper still reads.
    const have = imageDigest(this.dumpImage(() => (want = imageDigest(this.placed(desired)))));
    if (want === have) return null;
    return `blocklist maps differ from the desired contents (digest per map kind:count:sum1:sum2) — expected ${want}, read back ${have}`;
  }

  /** Closes the map file descriptors; the pins (and their contents) stay. Idempotent. */
  close(): void {
    this.v4.close();
    this.v6.close();
    this.hosts?.v4.close();
    this.hosts?.v6.close();
  }

  private mapFor(family: IpFamily): BpfMap {
    return family === 4 ? this.v4 : this.v6;
  }

  private hostMapFor(cidr: Cidr): BpfMap | undefined {
    if (!this.hosts || cidr.prefixLength !== (cidr.family === 4 ? 32 : 128)) return undefined;
    return cidr.family === 4 ? this.hosts.v4 : this.hosts.v6;
  }

  private mapOfKind(kind: ImageKind): BpfMap {
    switch (kind) {
      case 'lpmV4':
        return this.v4;
      case 'lpmV6':
        return this.v6;
      default: {
        const map = this.hosts?.[kind === 'hostV4' ? 'v4' : 'v6'];
        // hostsIntoTries leaves these parts empty when there are no host maps.
        if (!map) throw new Error(`blocklist maps were opened without host maps but a ${kind} write was planned`);
        return map;
      }
    }
  }
}

/**
 * Runs the undo steps of a partly done write, newest first, each on a best-effort basis:
 * the error that stopped the write is the one worth reporting, so an undo that fails too
 * is left to the caller's read-back to show.
 */
export function undoInReverse(undo: Array<() => void>): void {
  for (const step of [...undo].reverse()) {
    try {
      step();
    } catch {
      // See above: the original error wins.
    }
  }
}

/** Pin path of a family's host hash map inside `pinDir`. */
export function blockhostPinPath(pinDir: string, family: IpFamily): string {
  return join(pinDir, family === 4 ? BLOCKHOST_V4_MAP : BLOCKHOST_V6_MAP);
}

/**
 * Unlinks the blocklist pins in `pinDir` (tries and host maps; missing ones are fine),
 * then the directory if nothing else is pinned there.
 */
export function removePinnedBlocklist(pinDir: string): void {
  for (const path of [4, 6].flatMap((f) => [blocklistPinPath(pinDir, f as IpFamily), blockhostPinPath(pinDir, f as IpFamily)])) {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  try {
    rmdirSync(pinDir);
  } catch (err) {
    // Another pin still lives there (or it is already gone): leave the folder alone.
    if (!['ENOENT', 'ENOTEMPTY'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  }
}

function joinRange(r: DumpRange): { keys: Buffer; values: Buffer; count: number } {
  return { keys: Buffer.concat(r.keyChunks), values: Buffer.concat(r.valueChunks), count: r.count };
}

function openOrCreate(pinDir: string, family: IpFamily, maxEntries: number): BpfMap {
  const expect = { type: BPF_MAP_TYPE_LPM_TRIE, keySize: lpmKeySize(family), valueSize: BLOCK_VALUE_SIZE };
  return openOrCreatePinned(blocklistPinPath(pinDir, family), expect, family === 4 ? BLOCKLIST_V4_MAP : BLOCKLIST_V6_MAP, maxEntries);
}

function openOrCreateHost(pinDir: string, family: IpFamily, maxEntries: number): BpfMap {
  const expect = { type: BPF_MAP_TYPE_HASH, keySize: family === 4 ? 4 : 16, valueSize: BLOCK_VALUE_SIZE };
  return openOrCreatePinned(blockhostPinPath(pinDir, family), expect, family === 4 ? BLOCKHOST_V4_MAP : BLOCKHOST_V6_MAP, maxEntries);
}

/**
 * Opens the map pinned at `path` (refusing one of another shape), or creates and pins it.
 * A map of the wrong shape is never silently replaced: its contents may be live blocks.
 */
export function openOrCreatePinned(path: string, expect: { type: number; keySize: number; valueSize: number }, name: string, maxEntries: number): BpfMap {
  try {
    return BpfMap.openPinned(path, expect);
  } catch (err) {
    if (!(err instanceof BpfNotFoundError)) throw err;
  }
  const map = BpfMap.create({ ...expect, name, maxEntries });
  try {
    map.pin(path);
    return map;
  } catch (err) {
    map.close();
    // Another worker pinned its map between our open and pin: use that one.
    if (err instanceof BpfError && err.code === 'EEXIST') return BpfMap.openPinned(path, expect);
    throw err;
  }
}

/**
 * Writes `value` at exactly `key` and returns how to undo it. A plain lookup cannot
 * tell whether the key itself is present (LPM lookup may answer with a shorter
 * prefix), so presence is probed with a BPF_NOEXIST insert, which is exact.
 */
function replaceExact(map: BpfMap, key: Buffer, value: Buffer): () => void {
  try {
    map.update(key, value, BPF_NOEXIST);
    return () => map.delete(key);
  } catch (err) {
    if (!(err instanceof BpfError && err.code === 'EEXIST')) throw err;
  }
  // The key exists, so the longest-prefix match for it is the key itself.
  const previous = map.lookup(key);
  if (previous === null) {
    // Deleted by someone else in between; treat as new.
    map.update(key, value, BPF_ANY);
    return () => map.delete(key);
  }
  if (!previous.equals(value)) map.update(key, value, BPF_EXIST);
  return () => map.update(key, previous, BPF_ANY);
}
