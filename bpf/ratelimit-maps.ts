/**
 * The kernel side of per-source rate limits: the pinned hash maps `ratelimit_v4` and
 * `ratelimit_v6` (layout in `bpf/include/fos1-ratelimit.h`), which the firewall's TC
 * ingress program consults. The control plane writes only the configuration; each
 * source's GCRA state lives in the program-owned `ratelimit_tat` map.
 *
 * Rate limits are few (automated verdicts about single sources), so they are read and
 * written entry by entry and their snapshots travel by value (activities/subsystems/ratelimits.ts).
 */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { type IpFamily, formatCidr, parseCidr } from '../model/ip';
import { HOST_LITTLE_ENDIAN } from './blocklist-codec';
import { openOrCreatePinned, undoInReverse } from './blocklist-maps';
import { DATAPATH_LAYOUTS, DatapathCodecError } from './datapath-codec';
import { BPF_MAP_TYPE_HASH, type BpfMap } from './map';

/** Map (and pin file) names. */
export const RATELIMIT_V4_MAP = 'ratelimit_v4';
export const RATELIMIT_V6_MAP = 'ratelimit_v6';

/** One rate-limited source host as the maps hold it. */
export interface KernelRateLimit {
  /** Canonical host prefix (`192.0.2.7/32`, `2001:db8::7/128`). */
  cidr: string;
  /** Sustained packets per second. */
  pps: number;
  /** Packets that may arrive back to back. */
  burst: number;
  /** Unix seconds; absent = never. */
  expiresAt?: number;
  ruleId?: number;
}

const VALUE = DATAPATH_LAYOUTS.fos1_ratelimit_value;

/** Encodes `struct fos1_ratelimit_value`. */
export function encodeRateLimitValue(v: Omit<KernelRateLimit, 'cidr'>): Buffer {
  for (const [field, value, min, max] of [
    ['pps', v.pps, 1, 0xffffffff],
    ['burst', v.burst, 1, 0xffffffff],
    ['ruleId', v.ruleId ?? 0, 0, 0xffffffff],
  ] as const) {
    if (!Number.isInteger(value) || value < min || value > max) throw new DatapathCodecError(`rate limit ${field} must be an integer ${min}–${max}, got ${value}`);
  }
  const expiresAt = v.expiresAt ?? 0;
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0) throw new DatapathCodecError(`rate limit expiresAt must be unix seconds ≥ 0, got ${expiresAt}`);
  const buf = Buffer.alloc(VALUE.size);
  const o = VALUE.offsets;
  const u32 = (off: number, x: number) => (HOST_LITTLE_ENDIAN ? buf.writeUInt32LE(x, off) : buf.writeUInt32BE(x, off));
  if (HOST_LITTLE_ENDIAN) buf.writeBigUInt64LE(BigInt(expiresAt), o.expires_at);
  else buf.writeBigUInt64BE(BigInt(expiresAt), o.expires_at);
  u32(o.rule_id, v.ruleId ?? 0);
  u32(o.pps, v.pps);
  u32(o.burst, v.burst);
  return buf;
}

/** Decodes `struct fos1_ratelimit_value`. */
export function decodeRateLimitValue(buf: Buffer): Omit<KernelRateLimit, 'cidr'> {
  const o = VALUE.offsets;
  const u32 = (off: number) => (HOST_LITTLE_ENDIAN ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const expiresAt = Number(HOST_LITTLE_ENDIAN ? buf.readBigUInt64LE(o.expires_at) : buf.readBigUInt64BE(o.expires_at));
  const ruleId = u32(o.rule_id);
  return { pps: u32(o.pps), burst: u32(o.burst), ...(expiresAt ? { expiresAt } : {}), ...(ruleId ? { ruleId } : {}) };
}

/** Options of {@link RateLimitMaps.open}. */
export interface RateLimitMapsOptions {
  /** bpffs folder of the node's pins (the same as the blocklist's). */
  pinDir: string;
  /** `max_entries` of each family's map when it is created. */
  maxEntries: number;
}

/** The pinned rate-limit maps of one node. */
export class RateLimitMaps {
  private constructor(
    private readonly v4: BpfMap,
    private readonly v6: BpfMap,
  ) {}

  /**
   * Opens `${pinDir}/ratelimit_v4` and `_v6`, creating and pinning any that is missing
   * (the datapath programs reuse the pins when they load); a pin of another shape is an
   * error, never replaced.
   */
  static open(opts: RateLimitMapsOptions): RateLimitMaps {
    mkdirSync(opts.pinDir, { recursive: true });
    const open = (family: IpFamily) =>
      openOrCreatePinned(
        join(opts.pinDir, family === 4 ? RATELIMIT_V4_MAP : RATELIMIT_V6_MAP),
        { type: BPF_MAP_TYPE_HASH, keySize: family === 4 ? 4 : 16, valueSize: VALUE.size },
        family === 4 ? RATELIMIT_V4_MAP : RATELIMIT_V6_MAP,
        opts.maxEntries,
      );
    const v4 = open(4);
    try {
      return new RateLimitMaps(v4, open(6));
    } catch (err) {
      v4.close();
      throw err;
    }
  }

  /** Every rate limit, IPv4 first, by address. */
  readAll(): KernelRateLimit[] {
    const out: { family: IpFamily; bytes: Uint8Array; entry: KernelRateLimit }[] = [];
    for (const [family, map] of [[4, this.v4], [6, this.v6]] as const) {
      for (const [key, value] of map.lookupBatch()) {
        const bytes = new Uint8Array(key);
        out.push({ family, bytes, entry: { cidr: formatCidr({ family, bytes, prefixLength: family === 4 ? 32 : 128 }), ...decodeRateLimitValue(value) } });
      }
    }
    return out.sort((a, b) => a.family - b.family || Buffer.compare(Buffer.from(a.bytes), Buffer.from(b.bytes))).map((e) => e.entry);
  }

  /** The limit of one source (a canonical or parseable host prefix), or undefined. */
  get(cidr: string): KernelRateLimit | undefined {
    const { map, key, canonical } = this.locate(cidr);
    const value = map.lookup(key);
    return value ? { cidr: canonical, ...decodeRateLimitValue(value) } : undefined;
  }

  /**
   * Writes `upsert` and deletes the sources in `remove` (the diff is the model's:
   * planRateLimits in model/plan.ts). All or nothing: everything is validated and encoded
   * before the first write, and if the kernel refuses one (a full map), what was already
   * changed is put back as it was before the error is rethrown.
   */
  update(upsert: readonly KernelRateLimit[], remove: readonly string[]): void {
    const writes = upsert.map((entry) => ({ ...this.locate(entry.cidr), value: encodeRateLimitValue(entry) }));
    const deletes = remove.map((cidr) => this.locate(cidr));
    const undo: (() => void)[] = [];
    try {
      for (const { map, key, value } of writes) {
        const old = map.lookup(key);
        map.update(key, value);
        undo.push(old ? () => map.update(key, old) : () => map.delete(key));
      }
      for (const { map, key } of deletes) {
        const old = map.lookup(key);
        if (!old) continue;
        map.delete(key);
        undo.push(() => map.update(key, old));
      }
    } catch (err) {
      undoInReverse(undo);
      throw err;
    }
  }

  /** The map and key of a source; only single hosts can be rate-limited. */
  private locate(cidr: string): { map: BpfMap; key: Buffer; canonical: string } {
    const parsed = parseCidr(cidr);
    if (parsed.prefixLength !== (parsed.family === 4 ? 32 : 128)) throw new DatapathCodecError(`rate limit ${cidr}: only single hosts (/32, /128) can be rate-limited`);
    return { map: parsed.family === 4 ? this.v4 : this.v6, key: Buffer.from(parsed.bytes), canonical: formatCidr(parsed) };
  }

  /** Closes the file descriptors; the pins stay. Idempotent. */
  close(): void {
    this.v4.close();
    this.v6.close();
  }
}
