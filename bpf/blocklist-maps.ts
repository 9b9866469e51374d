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
import { BpfError, BpfNotFoundError } from './libbpf';
import { BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_LPM_TRIE, BPF_NOEXIST, BpfMap } from './map';

/** Map (and pin file) name of the IPv4 trie. */
export const BLOCKLIST_V4_MAP = 'blocklist_v4';
/** Map (and pin file) name of the IPv6 trie. */
export const BLOCKLIST_V6_MAP = 'blocklist_v6';

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
  /** `max_entries` of each map, as the kernel reports it. */
  readonly capacity: { v4: number; v6: number };

  private constructor(
    private readonly v4: BpfMap,
    private readonly v6: BpfMap,
  ) {
    this.capacity = { v4: v4.info.maxEntries, v6: v6.info.maxEntries };
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
    let v6: BpfMap;
    try {
      v6 = openOrCreate(opts.pinDir, 6, opts.maxEntriesV6);
    } catch (err) {
      v4.close();
      throw err;
    }
    return new BlocklistMaps(v4, v6);
  }

  /**
   * Every entry of both maps, sorted with {@link compareCidrs} (IPv4 first), with
   * canonical prefix text. `expiresAt` is omitted for entries that never expire.
   */
  readAll(): KernelBlocklistEntry[] {
    const found = new Map<string, { cidr: Cidr; entry: KernelBlocklistEntry }>();
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
      writes.set(formatCidr(cidr), {
        map: this.mapFor(cidr.family),
        key: encodeLpmKey(cidr),
        value: encodeBlockValue({ expiresAt: entry.expiresAt ?? 0 }),
      });
    }

    const undo: Array<() => void> = [];
    try {
      for (const { map, key, value } of writes.values()) {
        undo.push(replaceExact(map, key, value));
      }
    } catch (err) {
      for (const step of undo.reverse()) {
        try {
          step();
        } catch {
          // Best effort: the original error is the one worth reporting.
        }
      }
      throw err;
    }
  }

  /** Deletes prefixes; ones that are not present are skipped, so this is idempotent. */
  remove(cidrs: string[]): void {
    // Parse everything first so a typo fails the call before anything is deleted.
    const keys = { 4: [] as Buffer[], 6: [] as Buffer[] };
    for (const text of cidrs) {
      const cidr = parseCidr(text);
      keys[cidr.family].push(encodeLpmKey(cidr));
    }
    this.v4.deleteBatch(keys[4]);
    this.v6.deleteBatch(keys[6]);
  }

  /** Closes both map file descriptors; the pins (and their contents) stay. Idempotent. */
  close(): void {
    this.v4.close();
    this.v6.close();
  }

  private mapFor(family: IpFamily): BpfMap {
    return family === 4 ? this.v4 : this.v6;
  }
}

/** Unlinks both pins in `pinDir` (missing ones are fine). The directory itself stays. */
export function removePinnedBlocklist(pinDir: string): void {
  for (const family of [4, 6] as const) {
    try {
      unlinkSync(blocklistPinPath(pinDir, family));
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

function openOrCreate(pinDir: string, family: IpFamily, maxEntries: number): BpfMap {
  const path = blocklistPinPath(pinDir, family);
  const expect = { type: BPF_MAP_TYPE_LPM_TRIE, keySize: lpmKeySize(family), valueSize: BLOCK_VALUE_SIZE };
  try {
    return BpfMap.openPinned(path, expect);
  } catch (err) {
    if (!(err instanceof BpfNotFoundError)) throw err;
  }
  const map = BpfMap.create({
    type: BPF_MAP_TYPE_LPM_TRIE,
    name: family === 4 ? BLOCKLIST_V4_MAP : BLOCKLIST_V6_MAP,
    keySize: expect.keySize,
    valueSize: expect.valueSize,
    maxEntries,
  });
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
