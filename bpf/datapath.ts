/**
 * fos1's datapath on one node: the firewall programs loaded once, their maps pinned
 * under one bpffs folder, attached to interfaces at TC and/or XDP, and typed access to
 * the zone policy, the counters and the drop-event stream.
 *
 * The blocklist maps are the same pins `BlocklistMaps` (and the blocklist activity)
 * write; loading the programs after the maps exist reuses them, and vice versa.
 */
import { rmSync } from 'node:fs';
import { parseCidr } from '../model/ip';
import { attachTc, attachXdp, detachTc, detachXdp, type TcDirection, type XdpMode } from './attach';
import { BLOCKHOST_V4_MAP, BLOCKHOST_V6_MAP, BLOCKLIST_V4_MAP, BLOCKLIST_V6_MAP } from './blocklist-maps';
import type { BuiltObjects } from './build';
import {
  type ConntrackEntry,
  type Counter,
  type DropEvent,
  type ZonePolicyKey,
  type ZoneVerdict,
  decodeConntrackEntry,
  decodeDropEvent,
  decodeSettings,
  decodeZonePolicyKey,
  decodeZoneVerdict,
  encodeEntryKey,
  encodeSettings,
  encodeU32,
  encodeZonePolicyKey,
  encodeZoneVerdict,
  sumCounters,
} from './datapath-codec';
import { DROP_STATS_MAP, readDropCounts, type DropCounts } from './drop-stats';
import { BpfObject } from './loader';
import type { BpfMap } from './map';
import { RATELIMIT_V4_MAP, RATELIMIT_V6_MAP } from './ratelimit-maps';
import { TypedMap } from './typed-map';
import { ifindexOf, inNetns } from './netns';
import { RingBufferConsumer } from './ring-buffer';

/** The conntrack LRU and the settings array (pin names). */
export const CONNTRACK_MAP = 'conntrack';
export const SETTINGS_MAP = 'settings';

/** Program names in the objects (the C function names). */
export const PROGRAMS = { tcIngress: 'fos1_tc_ingress', tcEgress: 'fos1_tc_egress', xdp: 'fos1_xdp' } as const;

/** Sizes of the maps that are created when missing (existing pins keep theirs). */
export interface DatapathSizes {
  blocklistV4: number;
  blocklistV6: number;
  hostsV4: number;
  hostsV6: number;
  zonePolicy?: number;
  /** Per family, `ratelimit_v4` / `_v6` (16384 when not given, as the node worker's default). */
  rateLimits?: number;
  /** `conntrack`, the LRU of tracked connections ({@link CONNTRACK_DEFAULT_MAX} when not given). */
  conntrack?: number;
}

/** Options of {@link Datapath.load}. */
export interface DatapathOptions {
  pinDir: string;
  objects: BuiltObjects;
  sizes: DatapathSizes;
}

/** Where and how to attach. */
export interface DatapathAttachment {
  interface: string;
  netns?: string;
  /** TC hooks to attach to; both by default. */
  tc?: TcDirection[];
  /** Also attach at XDP (ingress, before the stack) in this mode. */
  xdp?: XdpMode;
}

/** The loaded programs and their pinned maps. Call {@link close} when done (attachments stay). */
export class Datapath {
  readonly #maps = new Map<string, BpfMap>();

  private constructor(
    private readonly tc: BpfObject,
    private readonly xdp: BpfObject,
  ) {}

  /** Loads both objects; the second load reuses every map the first one pinned. */
  static load(opts: DatapathOptions): Datapath {
    const maxEntries = {
      [BLOCKLIST_V4_MAP]: opts.sizes.blocklistV4,
      [BLOCKLIST_V6_MAP]: opts.sizes.blocklistV6,
      [BLOCKHOST_V4_MAP]: opts.sizes.hostsV4,
      [BLOCKHOST_V6_MAP]: opts.sizes.hostsV6,
      ...(opts.sizes.zonePolicy ? { zone_policy: opts.sizes.zonePolicy } : {}),
      ...(opts.sizes.conntrack ? { [CONNTRACK_MAP]: opts.sizes.conntrack } : {}),
      ...(opts.sizes.rateLimits ? { [RATELIMIT_V4_MAP]: opts.sizes.rateLimits, [RATELIMIT_V6_MAP]: opts.sizes.rateLimits } : {}),
    };
    const tc = BpfObject.load(opts.objects.tc, { pinDir: opts.pinDir, maxEntries });
    try {
      return new Datapath(tc, BpfObject.load(opts.objects.xdp, { pinDir: opts.pinDir, maxEntries }));
    } catch (err) {
      tc.close();
      throw err;
    }
  }

  /** Attaches the firewall to an interface (idempotent: re-attaching replaces fos1's programs). */
  attach(a: DatapathAttachment): { xdpMode?: 'native' | 'generic' } {
    for (const direction of a.tc ?? (['ingress', 'egress'] as const)) {
      const prog = this.tc.programFd(direction === 'ingress' ? PROGRAMS.tcIngress : PROGRAMS.tcEgress);
      attachTc(prog, { interface: a.interface, netns: a.netns, direction });
    }
    if (a.xdp) return { xdpMode: attachXdp(this.xdp.programFd(PROGRAMS.xdp), { interface: a.interface, netns: a.netns, mode: a.xdp }) };
    return {};
  }

  /** Removes fos1's programs from an interface (all hooks; idempotent). */
  static detach(a: { interface: string; netns?: string }): void {
    for (const direction of ['ingress', 'egress'] as const) detachTc({ ...a, direction });
    detachXdp(a);
  }

  /** Puts an interface into zone 1–254 (or 0 to take it out of every zone). */
  setInterfaceZone(a: { interface: string; netns?: string }, zone: number): void {
    if (!Number.isInteger(zone) || zone < 0 || zone > 254) throw new RangeError(`zone must be 0–254 (255 is the host), got ${zone}`);
    const ifindex = inNetns(a.netns, () => ifindexOf(a.interface));
    const map = this.map('zone_ifaces');
    if (zone === 0) map.delete(encodeU32(ifindex));
    else map.update(encodeU32(ifindex), encodeU32(zone));
  }

  /** The zone policy as a typed map (key and value codecs checked against the BTF). */
  get zonePolicy(): TypedMap<ZonePolicyKey, ZoneVerdict> {
    return new TypedMap(this.map('zone_policy'), { encode: encodeZonePolicyKey, decode: decodeZonePolicyKey }, { encode: encodeZoneVerdict, decode: decodeZoneVerdict });
  }

  /** Sets one zone policy rule (protocol 0 = any, dport 0 = any). */
  setZoneRule(key: ZonePolicyKey, verdict: ZoneVerdict): void {
    this.zonePolicy.set(key, verdict);
  }

  removeZoneRule(key: ZonePolicyKey): boolean {
    return this.zonePolicy.delete(key);
  }

  /** The verdict for traffic from `zone` that no rule matches. */
  setZoneDefault(zone: number, verdict: ZoneVerdict): void {
    this.map('zone_default').update(encodeU32(zone), encodeZoneVerdict(verdict));
  }

  zoneDefault(zone: number): ZoneVerdict {
    const v = this.map('zone_default').lookup(encodeU32(zone));
    return v ? decodeZoneVerdict(v) : { action: 'allow', ruleId: 0 };
  }

  /** Every tracked connection (initiator's view). */
  conntrackEntries(): ConntrackEntry[] {
    return this.map(CONNTRACK_MAP)
      .lookupBatch()
      .map(([k, v]) => decodeConntrackEntry(k, v));
  }

  /** Forgets every tracked connection (their next packets go through the zone policy again). */
  flushConntrack(): number {
    const map = this.map(CONNTRACK_MAP);
    const keys = map.lookupBatch().map(([k]) => k);
    for (const k of keys) map.delete(k);
    return keys.length;
  }

  /** Turns connection tracking on (the default) or off (stateless zone policy). */
  setConntrack(enabled: boolean): void {
    this.map(SETTINGS_MAP).update(encodeU32(0), encodeSettings({ conntrack: enabled }));
  }

  conntrackEnabled(): boolean {
    const v = this.map(SETTINGS_MAP).lookup(encodeU32(0));
    return v ? decodeSettings(v).conntrack : true;
  }

  /** Packets and bytes counted under a rule id (zone verdicts and blocklist values), all CPUs. */
  ruleCounter(ruleId: number): Counter {
    return sumCounters(this.map('rule_stats').lookupPerCpu(encodeU32(ruleId)));
  }

  /** Packets and bytes dropped by one host blocklist entry (`a.b.c.d/32`, `…/128`). */
  entryCounter(cidr: string): Counter {
    return sumCounters(this.map('entry_stats').lookupPerCpu(encodeEntryKey(parseCidr(cidr))));
  }

  /** Dropped packets per reason (`drop_stats`), all CPUs summed. */
  dropCounts(): DropCounts {
    return readDropCounts(this.map(DROP_STATS_MAP));
  }

  /**
   * Streams drop (and log) events to `onEvent`. Call `consume()` on the result to
   * deliver what is pending now, or `start(ms)` to poll; `close()` when done.
   */
  events(onEvent: (event: DropEvent) => void): RingBufferConsumer {
    return new RingBufferConsumer(this.map('drop_events'), (sample) => onEvent(decodeDropEvent(sample)));
  }

  /** A map of the datapath by name, opened through its pin (kept open until {@link close}). */
  map(name: string): BpfMap {
    let m = this.#maps.get(name);
    if (!m) {
      m = this.tc.openMap(name);
      this.#maps.set(name, m);
    }
    return m;
  }

  /** Pin path of a map. */
  pinPath(name: string): string {
    return this.tc.pinPath(name);
  }

  /** Map names (all pinned). */
  get mapNames(): string[] {
    return this.tc.maps.map((m) => m.name);
  }

  /**
   * Unlinks every map pin (the maps live on while a program or fd holds them). For
   * decommissioning a node or a test's private pin folder; idempotent.
   */
  unpin(): void {
    for (const name of this.mapNames) rmSync(this.pinPath(name), { force: true });
  }

  /** Closes file descriptors; attached programs and pinned maps stay. Idempotent. */
  close(): void {
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
    this.tc.close();
    this.xdp.close();
  }
}
