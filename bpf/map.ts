/**
 * A kernel eBPF map held by file descriptor, with the raw key/value bytes exposed as
 * Buffers. Encoding of keys and values is the caller's job (see `blocklist-codec.ts`).
 *
 * Every method checks buffer lengths against the map's key/value size before calling
 * into libbpf: the kernel copies exactly `key_size`/`value_size` bytes from or to the
 * pointer it is given, so a short Buffer would mean reading or corrupting unrelated
 * process memory rather than getting an error.
 */
import { readFileSync } from 'node:fs';
import {
  BpfError,
  BpfMapFullError,
  BPF_OBJ_NAME_LEN,
  bpfError,
  ERRNO,
  libbpf,
  libbpfObjects,
  type RawMapInfo,
} from './libbpf';
import { type Helper, runOnHelper } from './batch-threads';

/** `enum bpf_map_type` values fos1 uses (UAPI numbering, stable forever). */
export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_HASH = 9;
export const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
export const BPF_MAP_TYPE_LPM_TRIE = 11;

/** Map creation flag: allocate elements on demand. The kernel requires it for LPM tries. */
export const BPF_F_NO_PREALLOC = 1;

/** Update flags (`BPF_ANY` etc. in the UAPI). */
export const BPF_ANY = 0;
/** Create only; fails with EEXIST when the key is present. */
export const BPF_NOEXIST = 1;
/** Replace only; fails with ENOENT when the key is absent. */
export const BPF_EXIST = 2;

const PERCPU_TYPES = new Set([BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH, 21]);

/** What the kernel reports about a map (`bpf_obj_get_info_by_fd`). */
export interface BpfMapInfo {
  /** `enum bpf_map_type`, e.g. {@link BPF_MAP_TYPE_LPM_TRIE}. */
  readonly type: number;
  /** Kernel-wide map id (as `bpftool map show` prints it). */
  readonly id: number;
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
}

/** Parameters of {@link BpfMap.create}. */
export interface BpfMapCreateOptions {
  type: number;
  /** At most 15 characters of `[A-Za-z0-9_.]` (kernel rule); shown by bpftool. */
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** `map_flags`; {@link BPF_F_NO_PREALLOC} is added automatically for LPM tries. */
  flags?: number;
}

/** What {@link BpfMap.openPinned} should insist on; any field left out is not checked. */
export interface BpfMapExpectation {
  type?: number;
  keySize?: number;
  valueSize?: number;
}

/**
 * A pinned map exists but is not the map the caller expects (different type or sizes).
 * Thrown instead of recreating the map because a pin may be shared with running BPF
 * programs: replacing it silently would cut them off from the data fos1 writes.
 */
export class BpfMapMismatchError extends Error {
  override name = 'BpfMapMismatchError';
  constructor(
    readonly path: string,
    readonly expected: BpfMapExpectation,
    readonly actual: BpfMapInfo,
  ) {
    const diffs: string[] = [];
    if (expected.type !== undefined && expected.type !== actual.type) {
      diffs.push(`type ${actual.type} (expected ${expected.type})`);
    }
    if (expected.keySize !== undefined && expected.keySize !== actual.keySize) {
      diffs.push(`key_size ${actual.keySize} (expected ${expected.keySize})`);
    }
    if (expected.valueSize !== undefined && expected.valueSize !== actual.valueSize) {
      diffs.push(`value_size ${actual.valueSize} (expected ${expected.valueSize})`);
    }
    super(
      `pinned eBPF map at ${path} ("${actual.name}") is incompatible: ${diffs.join(', ')}; ` +
        `refusing to reuse or replace it — remove the pin (rm ${path}) if it is stale`,
    );
  }
}

/** Chunks of a (partial) batch dump. */
export interface DumpRange {
  keyChunks: Buffer[];
  valueChunks: Buffer[];
  count: number;
  /** Hash maps: the bucket the next call would have started at; absent when the map ended. */
  nextBucket?: number;
}

/** A kernel eBPF map owned through a file descriptor. Call {@link BpfMap.close} when done. */
export class BpfMap {
  #fd: number;
  #pinPath: string | undefined;
  readonly #info: BpfMapInfo;

  private constructor(fd: number, pinPath: string | undefined) {
    this.#fd = fd;
    this.#pinPath = pinPath;
    try {
      this.#info = readInfo(fd, pinPath ? `pin ${pinPath}` : `map fd ${fd}`);
    } catch (err) {
      libbpf().close(fd);
      throw err;
    }
  }

  /** Creates a new (unpinned) map. */
  static create(opts: BpfMapCreateOptions): BpfMap {
    if (!/^[A-Za-z0-9_.]*$/.test(opts.name) || opts.name.length >= BPF_OBJ_NAME_LEN) {
      throw new RangeError(
        `eBPF map name "${opts.name}" is invalid: at most ${BPF_OBJ_NAME_LEN - 1} characters of [A-Za-z0-9_.]`,
      );
    }
    for (const field of ['keySize', 'valueSize', 'maxEntries'] as const) {
      const v = opts[field];
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new RangeError(`eBPF map "${opts.name}": ${field} must be a u32, got ${v}`);
      }
    }
    let flags = opts.flags ?? 0;
    // The kernel refuses LPM tries without NO_PREALLOC (EINVAL), so it is not optional.
    if (opts.type === BPF_MAP_TYPE_LPM_TRIE) flags |= BPF_F_NO_PREALLOC;
    const lib = libbpf();
    const fd = lib.bpf_map_create(opts.type, opts.name, opts.keySize, opts.valueSize, opts.maxEntries, {
      sz: lib.mapCreateOptsSize,
      map_flags: flags,
    });
    if (fd < 0) throw bpfError('bpf_map_create', fd, `eBPF map "${opts.name}"`);
    return new BpfMap(fd, undefined);
  }

  /**
   * Opens the map pinned at `path`. Throws {@link BpfNotFoundError} when there is no
   * pin, and {@link BpfMapMismatchError} when `expect` is given and not met.
   */
  static openPinned(path: string, expect?: BpfMapExpectation): BpfMap {
    const fd = libbpf().bpf_obj_get(path);
    if (fd < 0) throw bpfError('bpf_obj_get', fd, `pin ${path}`);
    // A pin can also be a program or link; bpf_obj_get_info_by_fd would then happily
    // fill our map_info buffer with a prog_info. fdinfo tells them apart.
    if (!isMapFd(fd)) {
      libbpf().close(fd);
      throw new BpfError('bpf_obj_get', ERRNO.EINVAL, `pin ${path}`, `pin ${path} is not an eBPF map`);
    }
    const map = new BpfMap(fd, path);
    if (expect) {
      const info = map.info;
      const bad =
        (expect.type !== undefined && expect.type !== info.type) ||
        (expect.keySize !== undefined && expect.keySize !== info.keySize) ||
        (expect.valueSize !== undefined && expect.valueSize !== info.valueSize);
      if (bad) {
        map.close();
        throw new BpfMapMismatchError(path, expect, info);
      }
    }
    return map;
  }

  /** The map's file descriptor (for attaching programs); throws once closed. */
  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.describe()} is closed`);
    return this.#fd;
  }

  /** Type, name, sizes and flags as reported by the kernel when the map was opened (all immutable). */
  get info(): BpfMapInfo {
    return this.#info;
  }

  /** Where this map is pinned, if it was opened from or pinned to a path by this object. */
  get pinPath(): string | undefined {
    return this.#pinPath;
  }

  /** Pins the map at `path` on bpffs, so it outlives this process. Fails with EEXIST if taken. */
  pin(path: string): void {
    const ret = libbpf().bpf_obj_pin(this.fd, path);
    if (ret < 0) throw bpfError('bpf_obj_pin', ret, `pin ${path}`);
    this.#pinPath = path;
  }

  /**
   * Value stored for `key`, or null when there is none. For LPM tries the kernel does
   * a longest-prefix match here, so the answer may belong to a shorter prefix than
   * `key`: use {@link keys} or an update with {@link BPF_NOEXIST} to test exact presence.
   */
  lookup(key: Buffer): Buffer | null {
    this.checkKey(key, 'bpf_map_lookup_elem');
    this.refusePerCpu('bpf_map_lookup_elem');
    const value = Buffer.alloc(this.#info.valueSize);
    const ret = libbpf().bpf_map_lookup_elem(this.fd, key, value);
    if (ret === -ERRNO.ENOENT) return null;
    if (ret < 0) throw bpfError('bpf_map_lookup_elem', ret, this.describe());
    return value;
  }

  /**
   * Stores `value` under `key`. `flags` is {@link BPF_ANY} (default), {@link BPF_NOEXIST}
   * or {@link BPF_EXIST}. Throws {@link BpfMapFullError} when the map is full.
   */
  update(key: Buffer, value: Buffer, flags: number = BPF_ANY): void {
    this.checkKey(key, 'bpf_map_update_elem');
    this.checkValue(value, 'bpf_map_update_elem');
    const ret = libbpf().bpf_map_update_elem(this.fd, key, value, flags);
    if (ret < 0) throw this.updateError('bpf_map_update_elem', ret);
  }

  /** Deletes `key`; returns false when it was not there. For LPM tries this is an exact match. */
  delete(key: Buffer): boolean {
    this.checkKey(key, 'bpf_map_delete_elem');
    const ret = libbpf().bpf_map_delete_elem(this.fd, key);
    if (ret === -ERRNO.ENOENT) return false;
    if (ret < 0) throw bpfError('bpf_map_delete_elem', ret, this.describe());
    return true;
  }

  /**
   * Iterates over all keys with `bpf_map_get_next_key`, starting from a NULL key.
   * Not a snapshot: keys added or removed meanwhile may or may not be seen, and for
   * hash maps a concurrent delete of the current key restarts iteration, so callers
   * that need uniqueness should dedupe.
   */
  *keys(): IterableIterator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.#info.keySize);
      const ret = libbpf().bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -ERRNO.ENOENT) return;
      if (ret < 0) throw bpfError('bpf_map_get_next_key', ret, this.describe());
      yield next;
      prev = next;
    }
  }

  /** The key after `key` (the first key for null), or null at the end: one `bpf_map_get_next_key`. */
  nextKey(key: Buffer | null): Buffer | null {
    if (key) this.checkKey(key, 'bpf_map_get_next_key');
    const next = Buffer.alloc(this.#info.keySize);
    const ret = libbpf().bpf_map_get_next_key(this.fd, key, next);
    if (ret === -ERRNO.ENOENT) return null;
    if (ret < 0) throw bpfError('bpf_map_get_next_key', ret, this.describe());
    return next;
  }

  /** Iterates over `[key, value]` pairs; keys deleted between the two calls are skipped. */
  *entries(): IterableIterator<[Buffer, Buffer]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value) yield [key, value];
    }
  }

  /**
   * Stores many elements in one syscall (`bpf_map_update_batch`), falling back to
   * one update per element on kernels or map types without batch support.
   * Not atomic: on error some elements may have been written. Throws
   * {@link BpfMapFullError} when the map fills up.
   */
  updateBatch(keys: Buffer[], values: Buffer[], flags: number = BPF_ANY): void {
    if (keys.length !== values.length) {
      throw new RangeError(`${this.describe()}: updateBatch got ${keys.length} keys but ${values.length} values`);
    }
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k, 'bpf_map_update_batch'));
    values.forEach((v) => this.checkValue(v, 'bpf_map_update_batch'));
    const lib = libbpf();
    const count: [number] = [keys.length];
    const ret = lib.bpf_map_update_batch(this.fd, Buffer.concat(keys), Buffer.concat(values), count, {
      sz: lib.batchOptsSize,
      elem_flags: flags,
    });
    if (ret === 0) return;
    if (isUnsupported(ret)) {
      // Continue one by one after whatever the batch call managed. When the kernel
      // rejects the command up front it leaves `count` untouched (= input length).
      const done = count[0] < keys.length ? count[0] : 0;
      for (let i = done; i < keys.length; i++) this.update(keys[i] as Buffer, values[i] as Buffer, flags);
      return;
    }
    throw this.updateError('bpf_map_update_batch', ret);
  }

  /**
   * {@link updateBatch} for keys and values already laid out back to back (`count`
   * records), sent in slices of `chunk` elements so the kernel never has to copy more
   * than a few MB per syscall. With `threads` ≥ 2 and a hash map, the second half is
   * written by a helper thread at the same time (see `batch-threads.ts`). Not atomic:
   * after an error some elements are written; callers that need all-or-nothing restore
   * a dump taken before (as `BlocklistMaps.applyImage` does).
   */
  updateBatchRaw(keys: Buffer, values: Buffer, count: number, flags: number = BPF_ANY, chunk = 1 << 16, threads = 1): void {
    const { keySize, valueSize } = this.#info;
    if (keys.length !== count * keySize || values.length !== count * valueSize) {
      throw new RangeError(`${this.describe()}: updateBatchRaw got ${keys.length}/${values.length} bytes for ${count} elements of ${keySize}/${valueSize}`);
    }
    if (threads >= 2 && this.#info.type === BPF_MAP_TYPE_HASH && count >= 2 * chunk) {
      // The second half goes to a helper thread; hash buckets lock separately, so the
      // two halves insert side by side. Both halves always run to their end or first
      // error before this returns or throws, so a caller's rollback sees a quiet map.
      const half = count >>> 1;
      const helper = runOnHelper(
        [{ op: 'update', fd: this.fd, keySize, valueSize, keys: keys.subarray(half * keySize), values: values.subarray(half * valueSize), count: count - half, flags, chunk }],
        `bpf_map_update_batch on ${this.describe()}`,
      );
      let mine: unknown;
      try {
        this.updateBatchRaw(keys.subarray(0, half * keySize), values.subarray(0, half * valueSize), half, flags, chunk);
      } catch (err) {
        mine = err;
      }
      const [theirs] = helper.wait();
      if (mine !== undefined) throw mine;
      if (theirs && theirs.ret !== 0) {
        if (!isUnsupported(theirs.ret)) throw this.updateError('bpf_map_update_batch', theirs.ret);
        // No batch support on this kernel: the single-threaded path has the fallback.
        this.updateBatchRaw(keys.subarray(half * keySize), values.subarray(half * valueSize), count - half, flags, chunk);
      }
      return;
    }
    const lib = libbpf();
    for (let at = 0; at < count; at += chunk) {
      const n = Math.min(chunk, count - at);
      const done: [number] = [n];
      const ret = lib.bpf_map_update_batch(this.fd, keys.subarray(at * keySize, (at + n) * keySize), values.subarray(at * valueSize, (at + n) * valueSize), done, {
        sz: lib.batchOptsSize,
        elem_flags: flags,
      });
      if (ret === 0) continue;
      if (isUnsupported(ret)) {
        const from = done[0] < n ? done[0] : 0;
        for (let i = at + from; i < at + n; i++) {
          this.update(Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)), Buffer.from(values.subarray(i * valueSize, (i + 1) * valueSize)), flags);
        }
        continue;
      }
      throw this.updateError('bpf_map_update_batch', ret);
    }
  }

  /** {@link deleteBatch} for keys laid out back to back; absent keys are skipped. Returns how many were deleted. */
  deleteBatchRaw(keys: Buffer, count: number, chunk = 1 << 16): number {
    const { keySize } = this.#info;
    if (keys.length !== count * keySize) throw new RangeError(`${this.describe()}: deleteBatchRaw got ${keys.length} bytes for ${count} keys of ${keySize}`);
    const lib = libbpf();
    let deleted = 0;
    for (let at = 0; at < count; at += chunk) {
      const n = Math.min(chunk, count - at);
      const slice = keys.subarray(at * keySize, (at + n) * keySize);
      const done: [number] = [n];
      const ret = lib.bpf_map_delete_batch(this.fd, slice, done, { sz: lib.batchOptsSize });
      if (ret === 0) {
        deleted += n;
        continue;
      }
      if (ret !== -ERRNO.ENOENT && !isUnsupported(ret)) throw bpfError('bpf_map_delete_batch', ret, this.describe());
      const from = done[0] < n ? done[0] : 0;
      deleted += from;
      for (let i = from; i < n; i++) if (this.delete(Buffer.from(slice.subarray(i * keySize, (i + 1) * keySize)))) deleted++;
    }
    return deleted;
  }

  /**
   * Every element as two Buffers (keys and values back to back), read with
   * `bpf_map_lookup_batch` in chunks of `chunk` elements: the form large maps are
   * diffed and verified in, without a JS object per element.
   */
  dumpRaw(chunk = 1 << 18): { keys: Buffer; values: Buffer; count: number } {
    const r = this.dumpBuckets(chunk, Infinity);
    return { keys: Buffer.concat(r.keyChunks), values: Buffer.concat(r.valueChunks), count: r.count };
  }

  /**
   * {@link dumpRaw} with the upper half of a hash map's buckets read by a helper thread
   * at the same time (the batch cursor of hash maps is a bucket index, so the two
   * ranges are disjoint by construction). Other map types are dumped by {@link dumpRaw}.
   * Like every dump this is not a snapshot of a map that is being written meanwhile.
   */
  dumpRawThreaded(chunk = 1 << 18): { keys: Buffer; values: Buffer; count: number } {
    const { keySize, valueSize, type } = this.#info;
    const buckets = this.bucketCount;
    if (type !== BPF_MAP_TYPE_HASH || buckets < 1 << 16) return this.dumpRaw(chunk);
    const mid = buckets / 2;
    // The helper is started only once the first call shows the map is big: a map that
    // fits in one call (or whose first call already ran past the middle) is done
    // faster alone than with a thread that takes tens of ms to start.
    let helper: Helper | undefined;
    let mine: DumpRange | undefined;
    let error: unknown;
    try {
      mine = this.dumpBuckets(chunk, Infinity, (next) => {
        if (next >= mid) return Infinity;
        helper = runOnHelper([{ op: 'dump', fd: this.fd, keySize, valueSize, fromBucket: mid, untilBucket: null, chunk }], `bpf_map_lookup_batch on ${this.describe()}`);
        return mid;
      });
    } catch (err) {
      error = err;
    }
    const theirs = helper?.wait()[0];
    if (error !== undefined || !mine) throw error;
    if (!theirs) return { keys: Buffer.concat(mine.keyChunks), values: Buffer.concat(mine.valueChunks), count: mine.count };
    if (theirs.ret !== 0) throw bpfError('bpf_map_lookup_batch', theirs.ret, this.describe());
    this.trimDumpOverlap(mine, theirs.keys);
    return {
      keys: Buffer.concat([...mine.keyChunks, theirs.keys]),
      values: Buffer.concat([...mine.valueChunks, theirs.values]),
      count: mine.count + theirs.count,
    };
  }

  /**
   * Drops from `mine` (a dump of buckets up to some bucket b, see {@link dumpBuckets})
   * what a dump starting at bucket b (`theirKeys`) also holds. The kernel returns whole
   * buckets per call, so the last call of `mine` may have run past b. Keys are unique
   * in a hash map and both sides list buckets in order: their first key, if it is in
   * our last chunk, marks where the overlap starts.
   */
  trimDumpOverlap(mine: DumpRange, theirKeys: Buffer): void {
    const { keySize, valueSize } = this.#info;
    const last = mine.keyChunks.length - 1;
    if (theirKeys.length === 0 || last < 0) return;
    const first = theirKeys.subarray(0, keySize);
    const tail = mine.keyChunks[last] as Buffer;
    for (let at = tail.indexOf(first); at !== -1; at = tail.indexOf(first, at + 1)) {
      if (at % keySize !== 0) continue; // bytes straddling two keys
      const i = at / keySize;
      mine.count -= tail.length / keySize - i;
      mine.keyChunks[last] = tail.subarray(0, i * keySize);
      mine.valueChunks[last] = (mine.valueChunks[last] as Buffer).subarray(0, i * valueSize);
      return;
    }
  }

  /**
   * Batch lookups from the start until the end of the map or until the cursor (a bucket
   * index for hash maps) reaches `untilBucket`, which `afterFirstCall` may set from the
   * cursor after the first call (when the map did not fit in it); from bucket
   * `fromBucket` instead of the start when given (hash maps only). Without batch lookup
   * in the kernel, a dump from the start falls back to iterating the whole map.
   */
  dumpBuckets(chunk: number, untilBucket: number, afterFirstCall?: (nextBucket: number) => number, fromBucket?: number): DumpRange {
    this.refusePerCpu('bpf_map_lookup_batch');
    const { keySize, valueSize } = this.#info;
    const lib = libbpf();
    const keyChunks: Buffer[] = [];
    const valueChunks: Buffer[] = [];
    let total = 0;
    // The batch cursor is opaque; the generic implementation uses a key, hash maps a
    // u32 bucket index. Make it big enough for either.
    let inBatch: Buffer | null = null;
    if (fromBucket !== undefined) {
      inBatch = Buffer.alloc(Math.max(keySize, 8));
      inBatch.writeUInt32LE(fromBucket, 0);
    }
    let first = true;
    for (;;) {
      const outBatch = Buffer.alloc(Math.max(keySize, 8));
      const keys = Buffer.alloc(keySize * chunk);
      const values = Buffer.alloc(valueSize * chunk);
      const count: [number] = [chunk];
      const ret = lib.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, count, { sz: lib.batchOptsSize });
      if (ret === -ERRNO.ENOSPC && count[0] === 0) {
        // Hash maps return a whole bucket at once and say ENOSPC when it does not fit.
        chunk *= 2;
        continue;
      }
      if (ret < 0 && ret !== -ERRNO.ENOENT) {
        if (isUnsupported(ret) && first && fromBucket === undefined) {
          const all = [...this.entries()];
          return { keyChunks: all.map(([k]) => k), valueChunks: all.map(([, v]) => v), count: all.length };
        }
        throw bpfError('bpf_map_lookup_batch', ret, this.describe());
      }
      keyChunks.push(keys.subarray(0, count[0] * keySize));
      valueChunks.push(values.subarray(0, count[0] * valueSize));
      total += count[0];
      // ENOENT means "iteration finished"; count still holds the last partial chunk.
      if (ret === -ERRNO.ENOENT) break;
      if (first && afterFirstCall) untilBucket = afterFirstCall(outBatch.readUInt32LE(0));
      if (outBatch.readUInt32LE(0) >= untilBucket) return { keyChunks, valueChunks, count: total, nextBucket: outBatch.readUInt32LE(0) };
      inBatch = outBatch;
      first = false;
    }
    return { keyChunks, valueChunks, count: total };
  }

  /**
   * Deletes many keys, with `bpf_map_delete_batch` when the kernel supports it.
   * Returns how many were deleted; absent keys are skipped, not an error (the batch
   * call stops at the first absent key, so the remainder is retried one by one).
   */
  deleteBatch(keys: Buffer[]): number {
    if (keys.length === 0) return 0;
    keys.forEach((k) => this.checkKey(k, 'bpf_map_delete_batch'));
    const lib = libbpf();
    const count: [number] = [keys.length];
    const ret = lib.bpf_map_delete_batch(this.fd, Buffer.concat(keys), count, { sz: lib.batchOptsSize });
    if (ret === 0) return keys.length;
    if (ret !== -ERRNO.ENOENT && !isUnsupported(ret)) throw bpfError('bpf_map_delete_batch', ret, this.describe());
    // See updateBatch: an untouched count means nothing was processed.
    const done = count[0] < keys.length ? count[0] : 0;
    let deleted = done;
    for (const key of keys.slice(done)) if (this.delete(key)) deleted++;
    return deleted;
  }

  /**
   * Reads every element with `bpf_map_lookup_batch` (`chunk` elements per syscall),
   * falling back to {@link entries} when batch lookup is not supported.
   */
  lookupBatch(chunk = 256): Array<[Buffer, Buffer]> {
    const { keys, values, count } = this.dumpRaw(chunk);
    const { keySize, valueSize } = this.#info;
    return Array.from({ length: count }, (_, i): [Buffer, Buffer] => [
      Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)),
      Buffer.from(values.subarray(i * valueSize, (i + 1) * valueSize)),
    ]);
  }

  /**
   * Per-CPU maps: the value of `key` on every possible CPU (each `value_size` bytes),
   * or null when the key is absent. The kernel copies `round_up(value_size, 8)` bytes
   * per possible CPU, so the buffer is sized from `libbpf_num_possible_cpus()`.
   */
  lookupPerCpu(key: Buffer): Buffer[] | null {
    this.checkKey(key, 'bpf_map_lookup_elem');
    if (!PERCPU_TYPES.has(this.#info.type)) {
      throw new Error(`bpf_map_lookup_elem on ${this.describe()}: lookupPerCpu needs a per-CPU map`);
    }
    const cpus = possibleCpus();
    const stride = Math.ceil(this.#info.valueSize / 8) * 8;
    const all = Buffer.alloc(stride * cpus);
    const ret = libbpf().bpf_map_lookup_elem(this.fd, key, all);
    if (ret === -ERRNO.ENOENT) return null;
    if (ret < 0) throw bpfError('bpf_map_lookup_elem', ret, this.describe());
    return Array.from({ length: cpus }, (_, i) => Buffer.from(all.subarray(i * stride, i * stride + this.#info.valueSize)));
  }

  /** Closes the file descriptor. Idempotent. A pinned map lives on in bpffs. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    libbpf().close(fd);
  }

  /** `eBPF map "name"` plus the pin path when known; used in every error message. */
  describe(): string {
    const name = `eBPF map "${this.#info.name}"`;
    return this.#pinPath ? `${name} (pinned at ${this.#pinPath})` : name;
  }

  /**
   * The error for a failed `bpf_map_update_batch` on this map made elsewhere (the helper
   * thread of `batch-threads.ts`): {@link BpfMapFullError} for E2BIG/ENOSPC.
   */
  batchUpdateError(ret: number): BpfError {
    return this.updateError('bpf_map_update_batch', ret);
  }

  /** Number of hash buckets of a hash map (`roundup_pow_of_two(max_entries)` in htab_map_alloc). */
  get bucketCount(): number {
    return 2 ** Math.ceil(Math.log2(Math.max(1, this.#info.maxEntries)));
  }

  private updateError(op: string, ret: number): BpfError {
    const errno = -ret;
    // Hash maps say E2BIG, LPM tries ENOSPC: both are "no room for a new key".
    if (errno === ERRNO.E2BIG || errno === ERRNO.ENOSPC) {
      return new BpfMapFullError(op, errno, this.#info.name, this.#info.maxEntries, this.describe());
    }
    return bpfError(op, ret, this.describe());
  }

  private checkKey(key: Buffer, op: string): void {
    if (key.length !== this.#info.keySize) {
      throw new RangeError(`${op} on ${this.describe()}: key is ${key.length} bytes, map key_size is ${this.#info.keySize}`);
    }
  }

  private checkValue(value: Buffer, op: string): void {
    if (value.length !== this.#info.valueSize) {
      throw new RangeError(
        `${op} on ${this.describe()}: value is ${value.length} bytes, map value_size is ${this.#info.valueSize}`,
      );
    }
  }

  /** Per-CPU maps return value_size rounded to 8 × possible CPUs; not supported here yet. */
  private refusePerCpu(op: string): void {
    if (PERCPU_TYPES.has(this.#info.type)) {
      throw new Error(`${op} on ${this.describe()}: per-CPU maps are not supported by BpfMap`);
    }
  }
}

let cpuCount: number | undefined;
/** Number of possible CPUs (the per-CPU value count), from libbpf. */
export function possibleCpus(): number {
  if (cpuCount === undefined) {
    const n = libbpfObjects().libbpf_num_possible_cpus();
    if (n <= 0) throw new BpfError('libbpf_num_possible_cpus', -n, '/sys/devices/system/cpu/possible');
    cpuCount = n;
  }
  return cpuCount;
}

function readInfo(fd: number, target: string): BpfMapInfo {
  const lib = libbpf();
  const raw: Partial<RawMapInfo> = {};
  const len: [number] = [lib.mapInfoSize];
  const ret = lib.bpf_obj_get_info_by_fd(fd, raw, len);
  if (ret < 0) throw bpfError('bpf_obj_get_info_by_fd', ret, target);
  return {
    type: raw.type ?? 0,
    id: raw.id ?? 0,
    name: raw.name ?? '',
    keySize: raw.key_size ?? 0,
    valueSize: raw.value_size ?? 0,
    maxEntries: raw.max_entries ?? 0,
    flags: raw.map_flags ?? 0,
  };
}

function isMapFd(fd: number): boolean {
  try {
    return /^map_type:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  } catch {
    // No procfs: cannot tell, assume the caller pinned a map there.
    return true;
  }
}

/** True when a batch call failed because the kernel or map type has no batch support. */
export function isUnsupported(ret: number): boolean {
  const errno = -ret;
  return errno === ERRNO.EINVAL || errno === ERRNO.ENOTSUPP || errno === ERRNO.EOPNOTSUPP;
}
