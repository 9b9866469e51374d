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
 */
export class U32Index {
  #keys: Uint32Array;
  #slots: Int32Array; // record number + 1; 0 = empty
  #mask: number;
  #size = 0;

  constructor(expected: number) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.#keys = new Uint32Array(cap);
    this.#slots = new Int32Array(cap);
    this.#mask = cap - 1;
  }

  get(key: number): number | undefined {
    let h = Math.imul(key, 0x9e3779b1) >>> 0;
    for (;;) {
      const at = h & this.#mask;
      const slot = this.#slots[at] as number;
      if (slot === 0) return undefined;
      if (this.#keys[at] === key) return slot - 1;
      h = at + 1;
    }
  }

  /** Stores `value` unless `key` is present; returns the value stored for `key`. */
  setIfAbsent(key: number, value: number): number {
    if ((this.#size + 1) * 2 > this.#slots.length) this.#grow();
    let h = Math.imul(key, 0x9e3779b1) >>> 0;
    for (;;) {
      const at = h & this.#mask;
      const slot = this.#slots[at] as number;
      if (slot === 0) {
        this.#keys[at] = key;
        this.#slots[at] = value + 1;
        this.#size++;
        return value;
      }
      if (this.#keys[at] === key) return slot - 1;
      h = at + 1;
    }
  }

  #grow(): void {
    const keys = this.#keys;
    const slots = this.#slots;
    this.#keys = new Uint32Array(keys.length * 2);
    this.#slots = new Int32Array(slots.length * 2);
    this.#mask = this.#slots.length - 1;
    this.#size = 0;
    for (let i = 0; i < slots.length; i++) if (slots[i] !== 0) this.setIfAbsent(keys[i] as number, (slots[i] as number) - 1);
  }
}

/** Collects entries into an image; the last entry for a prefix wins. */
export class ImageBuilder {
  readonly #parts: Record<ImageKind, PartBuilder>;
  readonly #hostV4Index: U32Index;
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
    this.#hostV4Index = new U32Index(Math.max(16, expectedHostsV4));
  }

  /** Adds an IPv4 host given as a 32-bit number (the fast path of the text parser). */
  addHostV4(addr: number, expiresAt = 0, ruleId = 0): void {
    const part = this.#parts.hostV4;
    const i = this.#hostV4Index.setIfAbsent(addr, part.count);
    const isNew = i === part.count;
    if (isNew) {
      part.next();
      part.keys.writeUInt32BE(addr, i * 4);
    }
    // Fresh records are zero already (the common case: no expiry, no rule).
    if (expiresAt !== 0 || ruleId !== 0 || !isNew) writeValue(part.values, i, expiresAt, ruleId);
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

/** A line of a blocklist file that is not an entry; names the line and the rule. */
export class BlocklistFileError extends Error {
  override name = 'BlocklistFileError';
  constructor(
    readonly line: number,
    detail: string,
  ) {
    super(`blocklist line ${line}: ${detail}`);
  }
}

/**
 * Parses the text format: one entry per line, `CIDR [expires=UNIX_SECONDS] [rule=ID]`,
 * a bare address meaning /32 or /128; blank lines and `#` comments are ignored.
 * IPv4 is parsed straight from the bytes (a million lines in tens of milliseconds);
 * anything else goes through the model's parser, which gives the error messages.
 */
export function parseBlocklistText(text: Buffer): BlocklistImage {
  const b = new ImageBuilder(Math.ceil(text.length / 14));
  const bytes = new Uint8Array(text.buffer, text.byteOffset, text.length);
  const n = bytes.length;
  let line = 0;
  let pos = 0;
  while (pos < n) {
    line++;
    const lineStart = pos;
    // Fast path: "a.b.c.d" or "a.b.c.d/len" alone on the line, no leading zeros.
    let i = pos;
    let addr = 0;
    let ok = true;
    for (let octet = 0; octet < 4; octet++) {
      const first = i;
      let v = 0;
      let c = i < n ? (bytes[i] as number) : 10;
      while (c >= 48 && c <= 57) {
        v = v * 10 + (c - 48);
        i++;
        c = i < n ? (bytes[i] as number) : 10;
      }
      const digits = i - first;
      if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && bytes[first] === 48)) {
        ok = false;
        break;
      }
      addr = addr * 256 + v;
      if (octet < 3) {
        if (c !== 46) {
          ok = false;
          break;
        }
        i++;
      }
    }
    let len = 32;
    if (ok && i < n && bytes[i] === 47) {
      i++;
      const first = i;
      len = 0;
      while (i < n && (bytes[i] as number) >= 48 && (bytes[i] as number) <= 57) len = len * 10 + ((bytes[i++] as number) - 48);
      if (i === first || i - first > 2 || len > 32) ok = false;
    }
    if (ok && i < n && bytes[i] === 13) i++;
    if (ok && (i === n || bytes[i] === 10)) {
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      if (len === 32) {
        b.addHostV4(addr);
        pos = i + 1;
        continue;
      }
      if (((addr & ~mask) >>> 0) === 0) {
        b.addPrefixV4(addr, len);
        pos = i + 1;
        continue;
      }
      // Host bits set: the slow path words the error.
    }
    // Slow path: IPv6, options, comments, blank lines, errors.
    let end = text.indexOf(10, lineStart);
    if (end === -1) end = n;
    pos = end + 1;
    const raw = text.toString('utf8', lineStart, end);
    const hash = raw.indexOf('#');
    const body = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (body === '') continue;
    const [cidrText, ...options] = body.split(/\s+/);
    let expiresAt = 0;
    let ruleId = 0;
    for (const option of options) {
      const m = /^(expires|rule)=(\d{1,15})$/.exec(option);
      if (!m) throw new BlocklistFileError(line, `"${option}" is not an option; expected expires=UNIX_SECONDS or rule=ID`);
      if (m[1] === 'expires') expiresAt = Number(m[2]);
      else ruleId = Number(m[2]);
      if (ruleId > 0xffffffff) throw new BlocklistFileError(line, `rule=${m[2]} is more than a u32`);
    }
    let cidr: Cidr;
    try {
      cidr = parseCidr(cidrText ?? '');
    } catch (err) {
      throw new BlocklistFileError(line, err instanceof IpParseError ? err.message : String(err));
    }
    b.add(cidr, expiresAt, ruleId);
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
    const kw = IMAGE_KEY_SIZE[kind] / 4;
    const vw = BLOCK_VALUE_SIZE / 4;
    const keys = words(p.keys);
    const values = words(p.values);
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < p.count; i++) {
      let h = 0x811c9dc5;
      let g = 0x9747b28c;
      for (let k = i * kw, e = k + kw; k < e; k++) {
        const c = keys[k] as number;
        h = Math.imul(h ^ c, 0x01000193);
        g = Math.imul(g ^ c, 0x5bd1e995);
        g ^= g >>> 15;
      }
      for (let k = i * vw, e = k + vw; k < e; k++) {
        const c = values[k] as number;
        h = Math.imul(h ^ c, 0x01000193);
        g = Math.imul(g ^ c, 0x5bd1e995);
        g ^= g >>> 15;
      }
      h ^= h >>> 16;
      s1 = (s1 + (h >>> 0)) >>> 0;
      s2 = (s2 + (g >>> 0)) >>> 0;
    }
    parts.push(`${kind}:${p.count}:${s1.toString(16)}:${s2.toString(16)}`);
  }
  return parts.join(',');
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
