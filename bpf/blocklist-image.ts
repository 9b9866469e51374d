/**
 * A blocklist as the kernel holds it: for each of the four maps (host hash and LPM
 * trie, per family) the encoded keys and values back to back in one Buffer. This is
 * the working form of large blocklists: a million entries are two Buffers per map
 * instead of a million objects, they go to the kernel in batch calls as they are,
 * and a dump from the kernel comes back in the same form.
 *
 * Also here: the text format blocklists arrive in by reference (one entry per line),
 * parsed straight from bytes; the binary snapshot format; the diff between two
 * images; and an order-independent digest for read-back verification.
 * Pure functions, no kernel access.
 */
import { type Cidr, IpParseError, formatCidr, parseCidr } from '../model/ip';
import {
  BLOCK_VALUE_SIZE,
  HOST_LITTLE_ENDIAN,
  LPM_V4_KEY_SIZE,
  LPM_V6_KEY_SIZE,
  decodeBlockValue,
  decodeLpmKey,
} from './blocklist-codec';

/** The four blocklist maps, by the kind of entry they hold. */
export const IMAGE_KINDS = ['hostV4', 'hostV6', 'lpmV4', 'lpmV6'] as const;
export type ImageKind = (typeof IMAGE_KINDS)[number];

/** Key size per kind (`struct fos1_host_v4_key`, …, `struct fos1_lpm_v6_key`). */
export const IMAGE_KEY_SIZE: Record<ImageKind, number> = { hostV4: 4, hostV6: 16, lpmV4: LPM_V4_KEY_SIZE, lpmV6: LPM_V6_KEY_SIZE };

/** Keys and values of one map: `count` records of the kind's key size and {@link BLOCK_VALUE_SIZE}. */
export interface ImagePart {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export type BlocklistImage = Record<ImageKind, ImagePart>;

/** An empty image. */
export function emptyImage(): BlocklistImage {
  const part = (): ImagePart => ({ keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 });
  return { hostV4: part(), hostV6: part(), lpmV4: part(), lpmV6: part() };
}

/** Number of entries over all four maps. */
export function imageSize(image: BlocklistImage): number {
  return IMAGE_KINDS.reduce((n, k) => n + image[k].count, 0);
}

/** One entry of a blocklist. */
export interface ImageEntry {
  cidr: string;
  /** Unix seconds; 0 or absent = never. */
  expiresAt?: number;
  ruleId?: number;
}

/** Growable pair of key/value buffers for one kind. */
class PartBuilder {
  keys: Buffer;
  values: Buffer;
  count = 0;
  constructor(
    readonly keySize: number,
    capacity = 1024,
  ) {
    this.keys = Buffer.alloc(keySize * capacity);
    this.values = Buffer.alloc(BLOCK_VALUE_SIZE * capacity);
  }
  /** Returns the offset of a fresh record (key at off * keySize, value at off * 16). */
  next(): number {
    if ((this.count + 1) * this.keySize > this.keys.length) {
      const keys = Buffer.alloc(this.keys.length * 2);
      this.keys.copy(keys);
      this.keys = keys;
      const values = Buffer.alloc(this.values.length * 2);
      this.values.copy(values);
      this.values = values;
    }
    return this.count++;
  }
  done(): ImagePart {
    return {
      keys: this.keys.subarray(0, this.count * this.keySize),
      values: this.values.subarray(0, this.count * BLOCK_VALUE_SIZE),
      count: this.count,
    };
  }
}

function writeValue(values: Buffer, i: number, expiresAt: number, ruleId: number): void {
  const off = i * BLOCK_VALUE_SIZE;
  if (HOST_LITTLE_ENDIAN) {
    values.writeBigUInt64LE(BigInt(expiresAt), off);
    values.writeUInt32LE(ruleId, off + 8);
  } else {
    values.writeBigUInt64BE(BigInt(expiresAt), off);
    values.writeUInt32BE(ruleId, off + 8);
  }
}

function writeU32Host(buf: Buffer, off: number, v: number): void {
  if (HOST_LITTLE_ENDIAN) buf.writeUInt32LE(v, off);
  else buf.writeUInt32BE(v, off);
}

/**
 * Open-addressing hash index from u32 keys to record numbers. A JS Map with a million
 * numeric keys above 2^31 (heap numbers) costs about a second to fill; this costs
 * tens of milliseconds.
 *
 * The slot is taken from the HIGH bits of a multiplicative (Fibonacci) hash. The low
 * bits of `key * odd` depend only on the low bits of `key`, and prefixes have their
 * low bits zero: indexing by them put every /16 of a list into one run of slots, and
 * linear probing turned 100,000 prefixes into seconds of probing.
 */
export class U32Index {
  #keys: Uint32Array;
  #slots: Int32Array; // record number + 1; 0 = empty
  #mask: number;
  #shift: number;
  #size = 0;

  constructor(expected: number) {
    let bits = 4;
    while (1 << bits < expected * 2 && bits < 30) bits++;
    this.#keys = new Uint32Array(1 << bits);
    this.#slots = new Int32Array(1 << bits);
    this.#mask = (1 << bits) - 1;
    this.#shift = 32 - bits;
  }

  get(key: number): number | undefined {
    const keys = this.#keys;
    const slots = this.#slots;
    const mask = this.#mask;
    for (let at = Math.imul(key, 0x9e3779b1) >>> this.#shift; ; at = (at + 1) & mask) {
      const slot = slots[at] as number;
      if (slot === 0) return undefined;
      if (keys[at] === key) return slot - 1;
    }
  }

  /** Stores `value` unless `key` is present; returns the value stored for `key`. */
  setIfAbsent(key: number, value: number): number {
    if ((this.#size + 1) * 2 > this.#slots.length) this.#grow();
    const keys = this.#keys;
    const slots = this.#slots;
    const mask = this.#mask;
    for (let at = Math.imul(key, 0x9e3779b1) >>> this.#shift; ; at = (at + 1) & mask) {
      const slot = slots[at] as number;
      if (slot === 0) {
        keys[at] = key;
        slots[at] = value + 1;
        this.#size++;
        return value;
      }
      if (keys[at] === key) return slot - 1;
    }
  }

  #grow(): void {
    const keys = this.#keys;
    const slots = this.#slots;
    this.#keys = new Uint32Array(keys.length * 2);
    this.#slots = new Int32Array(slots.length * 2);
    this.#mask = this.#slots.length - 1;
    this.#shift--;
    this.#size = 0;
    for (let i = 0; i < slots.length; i++) if (slots[i] !== 0) this.setIfAbsent(keys[i] as number, (slots[i] as number) - 1);
  }
}

/** LSD radix sort (11-bit digits, three passes) of the first `count` elements into a new array. */
function sortU32(input: Uint32Array, count: number): Uint32Array {
  let src = input.slice(0, count);
  let dst = new Uint32Array(count);
  const offsets = new Int32Array(2048);
  for (let shift = 0; shift < 32; shift += 11) {
    offsets.fill(0);
    for (let i = 0; i < count; i++) {
      const d = ((src[i] as number) >>> shift) & 2047;
      offsets[d] = (offsets[d] as number) + 1;
    }
    let sum = 0;
    for (let d = 0; d < 2048; d++) {
      const c = offsets[d] as number;
      offsets[d] = sum;
      sum += c;
    }
    for (let i = 0; i < count; i++) {
      const v = src[i] as number;
      const d = (v >>> shift) & 2047;
      const at = offsets[d] as number;
      offsets[d] = at + 1;
      dst[at] = v;
    }
    const t = src;
    src = dst;
    dst = t;
  }
  return src;
}

/** Collects entries into an image; the last entry for a prefix wins. */
export class ImageBuilder {
  readonly #parts: Record<ImageKind, PartBuilder>;
  /** Built on first single add; a bulk add into an empty builder needs none (see addHostsV4). */
  #hostV4Index: U32Index | undefined;
  readonly #expectedHostsV4: number;
  /** IPv4 prefixes are indexed per prefix length, so the address alone is the u32 key. */
  readonly #lpmV4Index: U32Index[] = [];
  readonly #otherIndex = new Map<string, number>();

  constructor(expectedHostsV4 = 1024) {
    this.#parts = {
      hostV4: new PartBuilder(4, Math.max(16, expectedHostsV4)),
      hostV6: new PartBuilder(16),
      lpmV4: new PartBuilder(LPM_V4_KEY_SIZE),
      lpmV6: new PartBuilder(LPM_V6_KEY_SIZE),
    };
    this.#expectedHostsV4 = Math.max(16, expectedHostsV4);
  }

  /** Adds an IPv4 host given as a 32-bit number (the fast path of the text parser). */
  addHostV4(addr: number, expiresAt = 0, ruleId = 0): void {
    const part = this.#parts.hostV4;
    const index = (this.#hostV4Index ??= this.#indexHostsV4());
    const i = index.setIfAbsent(addr, part.count);
    const isNew = i === part.count;
    if (isNew) {
      part.next();
      const keys = part.keys;
      const o = i * 4;
      keys[o] = addr >>> 24;
      keys[o + 1] = (addr >>> 16) & 255;
      keys[o + 2] = (addr >>> 8) & 255;
      keys[o + 3] = addr & 255;
    }
    // Fresh records are zero already (the common case: no expiry, no rule).
    if (expiresAt !== 0 || ruleId !== 0 || !isNew) writeValue(part.values, i, expiresAt, ruleId);
  }

  /**
   * Adds `count` IPv4 hosts without expiry or rule (a run of plain lines of the text
   * format). Into an empty builder (the usual case: a file that is one run) they are
   * deduplicated by a radix sort instead of the hash index: a million random inserts
   * into an index of 2^22 slots are two cache misses each (~130 ms), the sort is three
   * sequential passes (~40–70 ms). The hosts then come out in address order.
   */
  addHostsV4(addrs: Uint32Array, count: number): void {
    const part = this.#parts.hostV4;
    if (count === 0) return;
    if (part.count !== 0 || this.#hostV4Index !== undefined) {
      for (let k = 0; k < count; k++) this.addHostV4(addrs[k] as number);
      return;
    }
    const sorted = sortU32(addrs, count);
    let unique = 1;
    for (let k = 1; k < count; k++) if (sorted[k] !== sorted[k - 1]) unique++;
    part.keys = Buffer.alloc(Math.max(16, unique) * 4);
    part.values = Buffer.alloc(Math.max(16, unique) * BLOCK_VALUE_SIZE);
    const keys = part.keys;
    let o = 0;
    for (let k = 0; k < count; k++) {
      const addr = sorted[k] as number;
      if (k > 0 && addr === sorted[k - 1]) continue;
      keys[o] = addr >>> 24;
      keys[o + 1] = (addr >>> 16) & 255;
      keys[o + 2] = (addr >>> 8) & 255;
      keys[o + 3] = addr & 255;
      o += 4;
    }
    part.count = unique;
  }

  /** Index of the hosts collected so far (after a bulk add, or sized for the expected count). */
  #indexHostsV4(): U32Index {
    const part = this.#parts.hostV4;
    const index = new U32Index(Math.max(this.#expectedHostsV4, part.count * 2));
    for (let i = 0; i < part.count; i++) index.setIfAbsent(part.keys.readUInt32BE(i * 4), i);
    return index;
  }

  /** Adds an IPv4 prefix shorter than /32 given as a number with host bits zero. */
  addPrefixV4(addr: number, prefixLength: number, expiresAt = 0, ruleId = 0): void {
    const part = this.#parts.lpmV4;
    const index = (this.#lpmV4Index[prefixLength] ??= new U32Index(1024));
    const i = index.setIfAbsent(addr, part.count);
    if (i === part.count) {
      part.next();
      writeU32Host(part.keys, i * LPM_V4_KEY_SIZE, prefixLength);
      part.keys.writeUInt32BE(addr, i * LPM_V4_KEY_SIZE + 4);
    }
    writeValue(part.values, i, expiresAt, ruleId);
  }

  /** Adds any prefix (hosts of either family go to the host maps). */
  add(cidr: Cidr, expiresAt = 0, ruleId = 0): void {
    checkValue(expiresAt, ruleId);
    const maxLen = cidr.family === 4 ? 32 : 128;
    if (cidr.family === 4 && cidr.prefixLength === 32) {
      const b = cidr.bytes;
      this.addHostV4((((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0, expiresAt, ruleId);
      return;
    }
    if (cidr.family === 4) {
      const b = cidr.bytes;
      this.addPrefixV4((((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0, cidr.prefixLength, expiresAt, ruleId);
      return;
    }
    const kind: ImageKind = cidr.prefixLength === maxLen ? 'hostV6' : 'lpmV6';
    const part = this.#parts[kind];
    const id = `${kind}/${cidr.prefixLength}/${String.fromCharCode(...cidr.bytes)}`;
    let i = this.#otherIndex.get(id);
    if (i === undefined) {
      i = part.next();
      this.#otherIndex.set(id, i);
      if (kind === 'hostV6') part.keys.set(cidr.bytes, i * 16);
      else {
        writeU32Host(part.keys, i * part.keySize, cidr.prefixLength);
        part.keys.set(cidr.bytes, i * part.keySize + 4);
      }
    }
    writeValue(part.values, i, expiresAt, ruleId);
  }

  build(): BlocklistImage {
    return {
      hostV4: this.#parts.hostV4.done(),
      hostV6: this.#parts.hostV6.done(),
      lpmV4: this.#parts.lpmV4.done(),
      lpmV6: this.#parts.lpmV6.done(),
    };
  }
}

function checkValue(expiresAt: number, ruleId: number): void {
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0) throw new RangeError(`expiresAt must be unix seconds ≥ 0, got ${expiresAt}`);
  if (!Number.isInteger(ruleId) || ruleId < 0 || ruleId > 0xffffffff) throw new RangeError(`rule must be a u32, got ${ruleId}`);
}

/** Builds an image from entry objects (small lists, e.g. from a workflow payload). */
export function imageFromEntries(entries: Iterable<ImageEntry>): BlocklistImage {
  const b = new ImageBuilder();
  for (const e of entries) b.add(parseCidr(e.cidr), e.expiresAt ?? 0, e.ruleId ?? 0);
  return b.build();
}

/** Entries of an image, decoded (hosts as /32 and /128), at most `limit` of them. For tests and small lists. */
export function imageEntries(image: BlocklistImage, limit = Infinity): ImageEntry[] {
  const out: ImageEntry[] = [];
  for (const kind of IMAGE_KINDS) {
    const part = image[kind];
    const ks = IMAGE_KEY_SIZE[kind];
    for (let i = 0; i < part.count && out.length < limit; i++) {
      const key = part.keys.subarray(i * ks, (i + 1) * ks);
      const cidr: Cidr =
        kind === 'hostV4' ? { family: 4, bytes: new Uint8Array(key), prefixLength: 32 } : kind === 'hostV6' ? { family: 6, bytes: new Uint8Array(key), prefixLength: 128 } : decodeLpmKey(key);
      const v = decodeBlockValue(part.values.subarray(i * BLOCK_VALUE_SIZE, (i + 1) * BLOCK_VALUE_SIZE));
      out.push({ cidr: formatCidr(cidr), ...(v.expiresAt ? { expiresAt: v.expiresAt } : {}), ...(v.ruleId ? { ruleId: v.ruleId } : {}) });
    }
  }
  return out;
}

/**
 * A line of a blocklist file that is not an entry; names the line and the rule, never the
 * line's content (a referenced file may hold anything, and the message reaches the workflow
 * history, the status, the logs and the audit). `rule` is the message without the line number.
 */
export class BlocklistFileError extends Error {
  override name = 'BlocklistFileError';
  constructor(
    readonly line: number,
    readonly rule: string,
  ) {
    super(`blocklist line ${line}: ${rule}`);
  }
}

/**
 * Output of {@link scanIpv4Lines}: the IPv4 hosts and prefixes of a run of plain lines,
 * in typed arrays so the scanning loop never allocates or touches an object shape
 * other than this one.
 */
class Ipv4Run {
  hosts: Uint32Array;
  hostCount = 0;
  prefixes = new Uint32Array(1024);
  prefixLengths = new Uint8Array(1024);
  prefixCount = 0;
  /** Lines consumed so far (for error messages of the slow path). */
  lines = 0;
  constructor(maxLines: number) {
    // Every line that reaches `hosts` is at least "1.2.3.4" plus a newline.
    this.hosts = new Uint32Array(maxLines);
  }
  growPrefixes(): void {
    const p = new Uint32Array(this.prefixes.length * 2);
    p.set(this.prefixes);
    this.prefixes = p;
    const l = new Uint8Array(this.prefixLengths.length * 2);
    l.set(this.prefixLengths);
    this.prefixLengths = l;
  }
}

/**
 * The hot loop of the text parser: consumes lines of exactly `a.b.c.d` or
 * `a.b.c.d/len` (no leading zeros, no host bits, optional CR) from `pos`, appending
 * them to `run`, and returns the offset of the first line it does not take (or `n`).
 * Kept small and separate from the slow path so V8 optimises it once: folded into
 * one function with the regexes and try/catch of the slow path, it was deoptimised
 * and re-optimised (OSR) half a dozen times per call and ran at ~14 ns per byte.
 */
function scanIpv4Lines(bytes: Uint8Array, pos: number, n: number, run: Ipv4Run): number {
  while (pos < n) {
    let i = pos;
    let addr = 0;
    let octet = 0;
    for (; octet < 4; octet++) {
      const first = i;
      let v = 0;
      let c = i < n ? (bytes[i] as number) : 10;
      while (c >= 48 && c <= 57) {
        v = v * 10 + (c - 48);
        i++;
        c = i < n ? (bytes[i] as number) : 10;
      }
      const digits = i - first;
      if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && bytes[first] === 48)) break;
      addr = addr * 256 + v;
      if (octet < 3) {
        if (c !== 46) break;
        i++;
      }
    }
    if (octet !== 4) return pos;
    let len = 32;
    if (i < n && bytes[i] === 47) {
      i++;
      const first = i;
      len = 0;
      while (i < n && (bytes[i] as number) >= 48 && (bytes[i] as number) <= 57) len = len * 10 + ((bytes[i++] as number) - 48);
      if (i === first || i - first > 2 || len > 32) return pos;
    }
    if (i < n && bytes[i] === 13) i++;
    if (i < n && bytes[i] !== 10) return pos;
    if (len === 32) {
      run.hosts[run.hostCount++] = addr;
    } else {
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      // Host bits set: the slow path words the error.
      if (((addr & ~mask) >>> 0) !== 0) return pos;
      if (run.prefixCount === run.prefixes.length) run.growPrefixes();
      run.prefixes[run.prefixCount] = addr;
      run.prefixLengths[run.prefixCount++] = len;
    }
    run.lines++;
    pos = i + 1;
  }
  return pos;
}

/**
 * Parses the text format: one entry per line, `CIDR [expires=UNIX_SECONDS] [rule=ID]`,
 * a bare address meaning /32 or /128; blank lines and `#` comments are ignored.
 * IPv4 is parsed straight from the bytes (a million lines in well under 200 ms);
 * anything else goes through the model's parser, which gives the error messages.
 */
export function parseBlocklistText(text: Buffer): BlocklistImage {
  const bytes = new Uint8Array(text.buffer, text.byteOffset, text.length);
  const n = bytes.length;
  const run = new Ipv4Run((n >>> 3) + 1);
  let pos = scanIpv4Lines(bytes, 0, n, run);
  const b = new ImageBuilder();
  let line = 0;
  // Entries of a run go into the builder before the next slow line, so that "the
  // last line wins" holds across both paths.
  const flush = () => {
    b.addHostsV4(run.hosts, run.hostCount);
    for (let k = 0; k < run.prefixCount; k++) b.addPrefixV4(run.prefixes[k] as number, run.prefixLengths[k] as number);
    line += run.lines;
    run.hostCount = 0;
    run.prefixCount = 0;
    run.lines = 0;
  };
  flush();
  while (pos < n) {
    // Slow path: IPv6, options, comments, blank lines, errors.
    line++;
    const lineStart = pos;
    let end = text.indexOf(10, lineStart);
    if (end === -1) end = n;
    pos = end + 1;
    const raw = text.toString('utf8', lineStart, end);
    const hash = raw.indexOf('#');
    const body = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (body !== '') {
      const [cidrText, ...options] = body.split(/\s+/);
      let expiresAt = 0;
      let ruleId = 0;
      for (const [k, option] of options.entries()) {
        const m = /^(expires|rule)=(\d{1,15})$/.exec(option);
        if (!m) throw new BlocklistFileError(line, `field ${k + 2} is not an option; expected expires=UNIX_SECONDS or rule=ID`);
        if (m[1] === 'expires') expiresAt = Number(m[2]);
        else ruleId = Number(m[2]);
        if (ruleId > 0xffffffff) throw new BlocklistFileError(line, 'the rule id is more than a u32');
      }
      let cidr: Cidr;
      try {
        cidr = parseCidr(cidrText ?? '');
      } catch (err) {
        // The rule, not the message: the message quotes the text.
        throw new BlocklistFileError(line, `the first field ${err instanceof IpParseError ? err.rule : 'is not an IPv4 or IPv6 prefix'}`);
      }
      b.add(cidr, expiresAt, ruleId);
    }
    if (pos < n) {
      pos = scanIpv4Lines(bytes, pos, n, run);
      flush();
    }
  }
  return b.build();
}

/** Renders an image in the text format (for operators and for the contenders in bench/). */
export function formatBlocklistText(image: BlocklistImage): string {
  return imageEntries(image)
    .map((e) => [e.cidr, e.expiresAt ? `expires=${e.expiresAt}` : '', e.ruleId ? `rule=${e.ruleId}` : ''].filter(Boolean).join(' '))
    .join('\n');
}

const SNAPSHOT_MAGIC = Buffer.from('FOS1BLK1');

/** Serialises an image (snapshots for rollback): magic, then per kind u32 count + keys + values. */
export function serializeImage(image: BlocklistImage): Buffer {
  const chunks: Buffer[] = [SNAPSHOT_MAGIC];
  for (const kind of IMAGE_KINDS) {
    const count = Buffer.alloc(4);
    count.writeUInt32LE(image[kind].count);
    chunks.push(count, image[kind].keys, image[kind].values);
  }
  return Buffer.concat(chunks);
}

/** True when `data` starts like {@link serializeImage} output. */
export function isSerializedImage(data: Buffer): boolean {
  return data.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC);
}

export function deserializeImage(data: Buffer): BlocklistImage {
  if (!isSerializedImage(data)) throw new RangeError('not a fos1 blocklist snapshot (bad magic)');
  let off = SNAPSHOT_MAGIC.length;
  const image = emptyImage();
  for (const kind of IMAGE_KINDS) {
    if (off + 4 > data.length) throw new RangeError(`blocklist snapshot truncated in ${kind}`);
    const count = data.readUInt32LE(off);
    off += 4;
    const kLen = count * IMAGE_KEY_SIZE[kind];
    const vLen = count * BLOCK_VALUE_SIZE;
    if (off + kLen + vLen > data.length) throw new RangeError(`blocklist snapshot truncated in ${kind}`);
    image[kind] = { keys: data.subarray(off, off + kLen), values: data.subarray(off + kLen, off + kLen + vLen), count };
    off += kLen + vLen;
  }
  if (off !== data.length) throw new RangeError('blocklist snapshot has trailing bytes');
  return image;
}

/** What to write to and delete from one map to turn `current` into `desired`. */
export interface PartDiff {
  /** New keys and keys whose value changes. */
  upsert: ImagePart;
  /** Keys to delete, back to back. */
  deleteKeys: Buffer;
  deleteCount: number;
  /** Of the upserts, how many keys are new (the rest change value). */
  added: number;
}

export type ImageDiff = Record<ImageKind, PartDiff>;

/** Number of writes and deletes in a diff. */
export function diffSize(diff: ImageDiff): { upserts: number; added: number; changed: number; deletes: number } {
  let upserts = 0;
  let added = 0;
  let deletes = 0;
  for (const k of IMAGE_KINDS) {
    upserts += diff[k].upsert.count;
    added += diff[k].added;
    deletes += diff[k].deleteCount;
  }
  return { upserts, added, changed: upserts - added, deletes };
}

/**
 * Diffs two images map by map. Keys are compared as bytes; an index over the current
 * keys is built only when both sides are non-empty (a first load is all upserts).
 * LPM keys with host bits set (written by other tools) compare unequal to the
 * canonical key, so they are deleted and rewritten canonically.
 */
export function diffImages(current: BlocklistImage, desired: BlocklistImage): ImageDiff {
  const out = {} as ImageDiff;
  for (const kind of IMAGE_KINDS) out[kind] = diffPart(current[kind], desired[kind], IMAGE_KEY_SIZE[kind]);
  return out;
}

function diffPart(cur: ImagePart, want: ImagePart, ks: number): PartDiff {
  const vs = BLOCK_VALUE_SIZE;
  if (cur.count === 0) return { upsert: want, deleteKeys: Buffer.alloc(0), deleteCount: 0, added: want.count };
  if (want.count === 0) return { upsert: { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 }, deleteKeys: cur.keys, deleteCount: cur.count, added: 0 };
  let lookup: (i: number) => number | undefined;
  if (ks === 4) {
    // Native-order words are as good a key as any: only equality matters here.
    const index = new U32Index(cur.count);
    const ck = words(cur.keys);
    const wk = words(want.keys);
    for (let i = 0; i < cur.count; i++) index.setIfAbsent(ck[i] as number, i);
    lookup = (i) => index.get(wk[i] as number);
  } else {
    const index = new Map<string, number>();
    for (let i = 0; i < cur.count; i++) index.set(cur.keys.toString('latin1', i * ks, (i + 1) * ks), i);
    lookup = (i) => index.get(want.keys.toString('latin1', i * ks, (i + 1) * ks));
  }
  const upKeys = Buffer.alloc(want.count * ks);
  const upValues = Buffer.alloc(want.count * vs);
  let up = 0;
  let added = 0;
  const seen = new Uint8Array(cur.count);
  const wv = words(want.values);
  const cv = words(cur.values);
  for (let i = 0; i < want.count; i++) {
    const j = lookup(i);
    if (j !== undefined) {
      seen[j] = 1;
      const a = i * 4;
      const c = j * 4;
      if (wv[a] === cv[c] && wv[a + 1] === cv[c + 1] && wv[a + 2] === cv[c + 2] && wv[a + 3] === cv[c + 3]) continue;
    } else {
      added++;
    }
    want.keys.copy(upKeys, up * ks, i * ks, (i + 1) * ks);
    want.values.copy(upValues, up * vs, i * vs, (i + 1) * vs);
    up++;
  }
  let del = 0;
  for (let j = 0; j < cur.count; j++) if (!seen[j]) del++;
  const deleteKeys = Buffer.alloc(del * ks);
  let d = 0;
  for (let j = 0; j < cur.count; j++) if (!seen[j]) cur.keys.copy(deleteKeys, d++ * ks, j * ks, (j + 1) * ks);
  return { upsert: { keys: upKeys.subarray(0, up * ks), values: upValues.subarray(0, up * vs), count: up }, deleteKeys, deleteCount: del, added };
}

/**
 * Order-independent digest of an image: per map the entry count and two sums of
 * per-entry hashes (FNV-1a and a differently seeded mix), so equal multisets of
 * (key, value) give equal digests whatever order the kernel returns them in.
 * Used to verify a read-back without building an index of a million keys.
 */
export function imageDigest(image: BlocklistImage): string {
  const parts: string[] = [];
  for (const kind of IMAGE_KINDS) {
    const p = image[kind];
    const [s1, s2] = digestPart(words(p.keys), words(p.values), p.count, IMAGE_KEY_SIZE[kind] / 4);
    parts.push(`${kind}:${p.count}:${s1.toString(16)}:${s2.toString(16)}`);
  }
  return parts.join(',');
}

/**
 * The two sums of {@link imageDigest} for one map. Its own small function (and the
 * four value words unrolled) so V8 optimises the loop once instead of on-stack
 * replacing it inside the loop over kinds.
 */
function digestPart(keys: Uint32Array, values: Uint32Array, count: number, kw: number): [number, number] {
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < count; i++) {
    let h = 0x811c9dc5;
    let g = 0x9747b28c;
    for (let k = i * kw, e = k + kw; k < e; k++) {
      const c = keys[k] as number;
      h = Math.imul(h ^ c, 0x01000193);
      g = Math.imul(g ^ c, 0x5bd1e995);
      g ^= g >>> 15;
    }
    const v = i * 4; // BLOCK_VALUE_SIZE / 4 words
    const v0 = values[v] as number;
    const v1 = values[v + 1] as number;
    const v2 = values[v + 2] as number;
    const v3 = values[v + 3] as number;
    h = Math.imul(h ^ v0, 0x01000193);
    g = Math.imul(g ^ v0, 0x5bd1e995);
    g ^= g >>> 15;
    h = Math.imul(h ^ v1, 0x01000193);
    g = Math.imul(g ^ v1, 0x5bd1e995);
    g ^= g >>> 15;
    h = Math.imul(h ^ v2, 0x01000193);
    g = Math.imul(g ^ v2, 0x5bd1e995);
    g ^= g >>> 15;
    h = Math.imul(h ^ v3, 0x01000193);
    g = Math.imul(g ^ v3, 0x5bd1e995);
    g ^= g >>> 15;
    h ^= h >>> 16;
    s1 = (s1 + (h >>> 0)) >>> 0;
    s2 = (s2 + (g >>> 0)) >>> 0;
  }
  return [s1, s2];
}

/** A Uint32Array over `buf` (copied when `buf` is not 4-byte aligned). */
function words(buf: Buffer): Uint32Array {
  if (buf.byteOffset % 4 === 0) return new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const copy = new Uint8Array(buf.length);
  copy.set(buf);
  return new Uint32Array(copy.buffer);
}

/** Moves host entries into the LPM parts (for maps opened without host hash maps). */
export function hostsIntoTries(image: BlocklistImage): BlocklistImage {
  const toLpm = (part: ImagePart, ks: number, len: number): ImagePart => {
    const keys = Buffer.alloc(part.count * (ks + 4));
    for (let i = 0; i < part.count; i++) {
      writeU32Host(keys, i * (ks + 4), len);
      part.keys.copy(keys, i * (ks + 4) + 4, i * ks, (i + 1) * ks);
    }
    return { keys, values: part.values, count: part.count };
  };
  const empty = emptyImage();
  return {
    hostV4: empty.hostV4,
    hostV6: empty.hostV6,
    lpmV4: concatParts(image.lpmV4, toLpm(image.hostV4, 4, 32)),
    lpmV6: concatParts(image.lpmV6, toLpm(image.hostV6, 16, 128)),
  };
}

function concatParts(a: ImagePart, b: ImagePart): ImagePart {
  return { keys: Buffer.concat([a.keys, b.keys]), values: Buffer.concat([a.values, b.values]), count: a.count + b.count };
}
