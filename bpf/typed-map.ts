/**
 * A typed view of a {@link BpfMap}: keys and values go through codecs, so callers work
 * with `{ srcZone, dstZone, … }` objects instead of Buffers. The codecs are the ones
 * checked against the programs' BTF (datapath-codec.ts, blocklist-codec.ts).
 */
import type { BpfMap } from './map';

/** Encodes a `T` into exactly the map's key or value size, and back. */
export interface Codec<T> {
  encode(value: T): Buffer;
  decode(bytes: Buffer): T;
}

export class TypedMap<K, V> {
  constructor(
    readonly map: BpfMap,
    private readonly key: Codec<K>,
    private readonly value: Codec<V>,
  ) {}

  get(key: K): V | null {
    const v = this.map.lookup(this.key.encode(key));
    return v ? this.value.decode(v) : null;
  }

  set(key: K, value: V, flags?: number): void {
    this.map.update(this.key.encode(key), this.value.encode(value), flags);
  }

  delete(key: K): boolean {
    return this.map.delete(this.key.encode(key));
  }

  /** Many elements in one batch call (see {@link BpfMap.updateBatch}). */
  setMany(entries: Array<[K, V]>, flags?: number): void {
    this.map.updateBatch(
      entries.map(([k]) => this.key.encode(k)),
      entries.map(([, v]) => this.value.encode(v)),
      flags,
    );
  }

  /** Every element, read in batches. */
  entries(): Array<[K, V]> {
    return this.map.lookupBatch().map(([k, v]) => [this.key.decode(k), this.value.decode(v)]);
  }
}
