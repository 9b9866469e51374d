/**
 * The kernel side of zones in fos1's eBPF datapath: the pinned maps `zone_ifaces`
 * (ifindex → zone id), `zone_policy` ((src, dst, protocol, port) → verdict) and
 * `zone_default` (array: src zone → verdict), which the TC and XDP programs read
 * (bpf/include/fos1-firewall.bpf.h). The control plane is their only writer.
 *
 * State is read and written in the model's terms (model/zone-maps.ts): interfaces by
 * name, resolved to ifindexes in the node's network namespace at the moment of the
 * write, and read back by ifindex → name (an ifindex whose interface is gone reads as
 * `#<ifindex>`, so a plan removes it).
 *
 * Writes are all or nothing in the Cilium style: every operation is encoded and every
 * name resolved before the first write, each write records how to revert itself, and a
 * refused write reverts the ones before it, newest first, before the error is rethrown.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalZoneMaps, type ZoneMapOperation, type ZoneMapState } from '../model/zone-maps';
import { HOST_LITTLE_ENDIAN } from './blocklist-codec';
import { openOrCreatePinned, undoInReverse } from './blocklist-maps';
import { DATAPATH_LAYOUTS, decodeZonePolicyKey, decodeZoneVerdict, encodeU32, encodeZonePolicyKey, encodeZoneVerdict } from './datapath-codec';
import { BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, type BpfMap } from './map';
import { ifindexOf, inNetns, interfaceNameOf, InterfaceNotFoundError } from './netns';

/** Map (and pin file) names, as in the programs. */
export const ZONE_IFACES_MAP = 'zone_ifaces';
export const ZONE_POLICY_MAP = 'zone_policy';
export const ZONE_DEFAULT_MAP = 'zone_default';
/** Slots of `zone_default` (`FOS1_MAX_ZONES`). */
const ZONE_SLOTS = 256;

/** Options of {@link ZoneMaps.open}. */
export interface ZoneMapsOptions {
  /** bpffs folder of the node's pins (the same as the blocklist's and the programs'). */
  pinDir: string;
  /** Network namespace whose interface names the zones use; the caller's when undefined. */
  netns: string | undefined;
  /** `max_entries` of `zone_ifaces` / `zone_policy` when created (the programs' defaults when not given). */
  maxInterfaces?: number;
  maxRules?: number;
}

/** A zone member whose interface does not exist on the node at apply time. */
export class ZoneInterfaceMissingError extends Error {
  override name = 'ZoneInterfaceMissingError';
}

/** The pinned zone maps of one node. */
export class ZoneMaps {
  #maps: { ifaces: BpfMap; policy: BpfMap; defaults: BpfMap } | undefined;

  private constructor(private readonly opts: ZoneMapsOptions) {}

  /**
   * The zone maps of a pin folder. Nothing is created until the first write: a node
   * without zones (and without the programs loaded) reads as empty and keeps no pins.
   * A write creates and pins missing maps with the programs' shapes (the programs reuse
   * the pins when they load); a pin of another shape is an error, never replaced.
   */
  static open(opts: ZoneMapsOptions): ZoneMaps {
    const maps = new ZoneMaps(opts);
    if (existsSync(join(opts.pinDir, ZONE_IFACES_MAP))) maps.maps(false);
    return maps;
  }

  /** The three maps, opened once; undefined when not pinned and `create` is false. */
  private maps(create: boolean): { ifaces: BpfMap; policy: BpfMap; defaults: BpfMap } | undefined {
    if (this.#maps) return this.#maps;
    const L = DATAPATH_LAYOUTS;
    const names = [ZONE_IFACES_MAP, ZONE_POLICY_MAP, ZONE_DEFAULT_MAP];
    if (!create && !names.every((n) => existsSync(join(this.opts.pinDir, n)))) return undefined;
    mkdirSync(this.opts.pinDir, { recursive: true });
    const opened: BpfMap[] = [];
    try {
      const open = (name: string, type: number, keySize: number, valueSize: number, maxEntries: number) => {
        const map = openOrCreatePinned(join(this.opts.pinDir, name), { type, keySize, valueSize }, name, maxEntries);
        opened.push(map);
        return map;
      };
      this.#maps = {
        ifaces: open(ZONE_IFACES_MAP, BPF_MAP_TYPE_HASH, 4, 4, this.opts.maxInterfaces ?? 1024),
        policy: open(ZONE_POLICY_MAP, BPF_MAP_TYPE_HASH, L.fos1_zone_policy_key.size, L.fos1_zone_verdict.size, this.opts.maxRules ?? 16_384),
        defaults: open(ZONE_DEFAULT_MAP, BPF_MAP_TYPE_ARRAY, 4, L.fos1_zone_verdict.size, ZONE_SLOTS),
      };
      return this.#maps;
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  /** Everything the maps hold, canonical. */
  read(): ZoneMapState {
    const maps = this.maps(false);
    if (!maps) return { members: [], rules: [], defaults: [] };
    const u32 = (b: Buffer) => (HOST_LITTLE_ENDIAN ? b.readUInt32LE(0) : b.readUInt32BE(0));
    const raw = maps.ifaces.lookupBatch().map(([k, v]) => ({ ifindex: u32(k), zone: u32(v) }));
    const members = inNetns(this.opts.netns, () => raw.map(({ ifindex, zone }) => ({ interface: interfaceNameOf(ifindex) ?? `#${ifindex}`, zone })));
    const rules = maps.policy.lookupBatch().map(([k, v]) => {
      const key = decodeZonePolicyKey(k);
      const verdict = decodeZoneVerdict(v);
      return { src: key.srcZone, dst: key.dstZone, protocol: key.protocol, port: key.dport, action: verdict.action, ruleId: verdict.ruleId };
    });
    const defaults: ZoneMapState['defaults'] = [];
    for (let zone = 0; zone < ZONE_SLOTS; zone++) {
      const v = maps.defaults.lookup(encodeU32(zone));
      if (!v) continue;
      const verdict = decodeZoneVerdict(v);
      if (verdict.action !== 'allow' || verdict.ruleId !== 0) defaults.push({ zone, ...verdict });
    }
    return canonicalZoneMaps({ members, rules, defaults });
  }

  /**
   * Runs a plan (model/zone-maps.ts planZoneMaps) against the maps: all or nothing. Throws
   * {@link ZoneInterfaceMissingError} before any write when a member's interface does not exist.
   */
  apply(ops: readonly ZoneMapOperation[]): void {
    if (ops.length === 0) return;
    const writes = ops.map((op) => this.encode(op));
    const undo: (() => void)[] = [];
    try {
      for (const write of writes) undo.push(write());
    } catch (err) {
      undoInReverse(undo);
      throw err;
    }
  }

  /** One operation as a write that returns its revert record (resolved and encoded now, run later). */
  private encode(op: ZoneMapOperation): () => () => void {
    const maps = this.maps(true) as NonNullable<ReturnType<ZoneMaps['maps']>>;
    /** Writes `value` (or deletes, when null) at `key` of `map`; the revert puts back what was there. */
    const put = (map: BpfMap, key: Buffer, value: Buffer | null, zeroOnDelete?: Buffer) => () => {
      const old = map.lookup(key);
      if (value) map.update(key, value);
      else if (zeroOnDelete) map.update(key, zeroOnDelete);
      else if (old) map.delete(key);
      return () => {
        if (old) map.update(key, old);
        else map.delete(key);
      };
    };
    const remove = op.action === 'delete';
    if (op.kind === 'member') {
      const key = encodeU32(this.ifindex(op.entry.interface, op.entry.zone, remove));
      return put(maps.ifaces, key, remove ? null : encodeU32(op.entry.zone));
    }
    if (op.kind === 'rule') {
      const e = op.entry;
      const key = encodeZonePolicyKey({ srcZone: e.src, dstZone: e.dst, protocol: e.protocol, dport: e.port });
      return put(maps.policy, key, remove ? null : encodeZoneVerdict({ action: e.action, ruleId: e.ruleId }));
    }
    // zone_default is an array: "no default" is the zero value (allow, uncounted).
    const zero = encodeZoneVerdict({ action: 'allow', ruleId: 0 });
    return put(maps.defaults, encodeU32(op.entry.zone), remove ? null : encodeZoneVerdict({ action: op.entry.action, ruleId: op.entry.ruleId }), zero);
  }

  /** The ifindex of a member: `#N` as read back, or the interface's index in the node's namespace now. */
  private ifindex(name: string, zone: number, deleting: boolean): number {
    if (name.startsWith('#')) return Number(name.slice(1));
    try {
      return inNetns(this.opts.netns, () => ifindexOf(name));
    } catch (err) {
      if (!(err instanceof InterfaceNotFoundError)) throw err;
      // A member whose interface vanished since the read has no entry left to delete by name.
      if (deleting) throw new ZoneInterfaceMissingError(`interface ${name} of zone ${zone} disappeared while its zone map entry was being removed; re-run the change`);
      throw new ZoneInterfaceMissingError(`interface ${name} (zone ${zone}) does not exist on this node: an interface must exist before the eBPF zone map can hold it`);
    }
  }

  /** Closes the file descriptors; the pins stay. Idempotent. */
  close(): void {
    if (!this.#maps) return;
    this.#maps.ifaces.close();
    this.#maps.policy.close();
    this.#maps.defaults.close();
    this.#maps = undefined;
  }
}
