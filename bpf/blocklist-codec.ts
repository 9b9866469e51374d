/**
 * Byte encoding of blocklist map keys and values, mirroring `bpf/include/fos1-blocklist.h`.
 *
 * Keys are LPM trie keys: a u32 `prefixlen` in HOST byte order (the kernel reads it
 * as a plain integer) followed by the address in NETWORK byte order (the trie walks
 * it bit by bit from the most significant bit). Values are a host-order u64
 * `expires_at` followed by host-order u32 `rule_id` and `flags`.
 *
 * Pure functions on Buffers: no kernel access, safe to unit-test anywhere.
 */
import { type Cidr, type IpFamily, parseCidr } from '../model/ip';

/** `sizeof(struct fos1_lpm_v4_key)`: u32 prefixlen + 4 address bytes. */
export const LPM_V4_KEY_SIZE = 8;
/** `sizeof(struct fos1_lpm_v6_key)`: u32 prefixlen + 16 address bytes. */
export const LPM_V6_KEY_SIZE = 20;
/** `sizeof(struct fos1_block_value)`: u64 expires_at + u32 rule_id + u32 flags. */
export const BLOCK_VALUE_SIZE = 16;

/** Offset of the address bytes in a key (after `prefixlen`). */
const ADDR_OFFSET = 4;

/**
 * True on little-endian hosts (x86-64, arm64 as Linux runs it). BPF programs and the
 * kernel see these structs in host order, so the codec must follow the host rather
 * than pick an order.
 */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Contents of `struct fos1_block_value`. */
export interface BlockValue {
  /** Unix seconds after which the entry no longer applies; 0 means never. */
  expiresAt: number;
  /** Id of the rule that created the entry; 0 when none. */
  ruleId: number;
  /** Reserved, 0. */
  flags: number;
}

/** A key or value that does not fit the shared layout. */
export class BlocklistCodecError extends Error {
  override readonly name = 'BlocklistCodecError';
}

/** Key size of the map that holds `family`. */
export function lpmKeySize(family: IpFamily): number {
  return family === 4 ? LPM_V4_KEY_SIZE : LPM_V6_KEY_SIZE;
}

/** Encodes a prefix (parsed, or text such as `10.1.2.0/24`) as an LPM trie key. */
export function encodeLpmKey(cidr: Cidr | string): Buffer {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  const key = Buffer.alloc(lpmKeySize(c.family));
  writeU32(key, 0, c.prefixLength);
  key.set(c.bytes, ADDR_OFFSET);
  return key;
}

/**
 * Decodes an LPM trie key; the family follows from the length (8 or 20 bytes).
 * Host bits are cleared: the kernel stores key bytes as written, so an entry put there
 * by another tool (e.g. `bpftool map update`) may carry them although the trie ignores them.
 */
export function decodeLpmKey(key: Uint8Array): Cidr {
  let family: IpFamily;
  if (key.length === LPM_V4_KEY_SIZE) family = 4;
  else if (key.length === LPM_V6_KEY_SIZE) family = 6;
  else {
    throw new BlocklistCodecError(
      `LPM key is ${key.length} bytes; expected ${LPM_V4_KEY_SIZE} (IPv4) or ${LPM_V6_KEY_SIZE} (IPv6)`,
    );
  }
  const buf = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  const prefixLength = readU32(buf, 0);
  const maxLength = family === 4 ? 32 : 128;
  if (prefixLength > maxLength) {
    throw new BlocklistCodecError(`LPM key has prefixlen ${prefixLength}, more than ${maxLength} for IPv${family}`);
  }
  const bytes = new Uint8Array(key.subarray(ADDR_OFFSET));
  for (let i = 0; i < bytes.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, prefixLength - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - bitsHere)) & 0xff);
  }
  return { family, bytes, prefixLength };
}

/** Encodes a value; omitted fields are 0. */
export function encodeBlockValue(value: Partial<BlockValue>): Buffer {
  const expiresAt = value.expiresAt ?? 0;
  const ruleId = value.ruleId ?? 0;
  const flags = value.flags ?? 0;
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0) {
    throw new BlocklistCodecError(`expiresAt must be a non-negative integer (unix seconds), got ${expiresAt}`);
  }
  for (const [field, v] of [
    ['ruleId', ruleId],
    ['flags', flags],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new BlocklistCodecError(`${field} must be a u32, got ${v}`);
    }
  }
  const buf = Buffer.alloc(BLOCK_VALUE_SIZE);
  if (HOST_LITTLE_ENDIAN) buf.writeBigUInt64LE(BigInt(expiresAt), 0);
  else buf.writeBigUInt64BE(BigInt(expiresAt), 0);
  writeU32(buf, 8, ruleId);
  writeU32(buf, 12, flags);
  return buf;
}

/**
 * Decodes a value. `expiresAt` above 2^53 (never written by fos1) loses precision
 * rather than failing, so one odd entry cannot break a full read of the map.
 */
export function decodeBlockValue(value: Uint8Array): BlockValue {
  if (value.length !== BLOCK_VALUE_SIZE) {
    throw new BlocklistCodecError(`block value is ${value.length} bytes; expected ${BLOCK_VALUE_SIZE}`);
  }
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const expires = HOST_LITTLE_ENDIAN ? buf.readBigUInt64LE(0) : buf.readBigUInt64BE(0);
  return { expiresAt: Number(expires), ruleId: readU32(buf, 8), flags: readU32(buf, 12) };
}

function writeU32(buf: Buffer, offset: number, v: number): void {
  if (HOST_LITTLE_ENDIAN) buf.writeUInt32LE(v, offset);
  else buf.writeUInt32BE(v, offset);
}

function readU32(buf: Buffer, offset: number): number {
  return HOST_LITTLE_ENDIAN ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}
