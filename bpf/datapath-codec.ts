/**
 * Byte encoding of the datapath maps and ring-buffer records, mirroring
 * `bpf/include/fos1-datapath.h` (and the host-map keys of `fos1-blocklist.h`).
 *
 * {@link DATAPATH_LAYOUTS} states every struct's size and member offsets; the BTF test
 * (test/unit/bpf-btf-layout.test.ts) compares it with the compiled objects' BTF, and
 * the encoders below are written against the same table, so C and TypeScript cannot
 * drift apart unnoticed. Multi-byte integers are in host order (what the programs
 * see); addresses in network order. Pure functions: no kernel access.
 */
import { type Cidr, type IpFamily, formatCidr, formatIp } from '../model/ip';
import { HOST_LITTLE_ENDIAN } from './blocklist-codec';

/** A struct's size and its members' byte offsets. */
export interface CLayout {
  size: number;
  offsets: Readonly<Record<string, number>>;
}

/** Every struct shared with the BPF programs. */
export const DATAPATH_LAYOUTS = {
  fos1_lpm_v4_key: { size: 8, offsets: { prefixlen: 0, addr: 4 } },
  fos1_lpm_v6_key: { size: 20, offsets: { prefixlen: 0, addr: 4 } },
  fos1_host_v4_key: { size: 4, offsets: { addr: 0 } },
  fos1_host_v6_key: { size: 16, offsets: { addr: 0 } },
  fos1_block_value: { size: 16, offsets: { expires_at: 0, rule_id: 8, flags: 12 } },
  fos1_ratelimit_value: { size: 24, offsets: { expires_at: 0, rule_id: 8, pps: 12, burst: 16, flags: 20 } },
  fos1_zone_policy_key: { size: 8, offsets: { src_zone: 0, dst_zone: 1, protocol: 2, pad: 3, dport: 4, pad2: 6 } },
  fos1_zone_verdict: { size: 8, offsets: { action: 0, rule_id: 4 } },
  fos1_counter: { size: 16, offsets: { packets: 0, bytes: 8 } },
  fos1_entry_key: { size: 20, offsets: { family: 0, prefixlen: 1, pad: 2, addr: 4 } },
  fos1_ct_key: { size: 40, offsets: { addr_lo: 0, addr_hi: 16, port_lo: 32, port_hi: 34, family: 36, protocol: 37, pad: 38 } },
  fos1_ct_value: { size: 32, offsets: { last_seen_ns: 0, created_ns: 8, rule_id: 16, state: 20, initiator_lo: 21, fin: 22, src_zone: 23, dst_zone: 24, pad: 25 } },
  fos1_settings: { size: 8, offsets: { flags: 0, pad: 4 } },
  fos1_drop_event: {
    size: 80,
    offsets: {
      timestamp_ns: 0,
      ifindex: 8,
      rule_id: 12,
      family: 16,
      protocol: 17,
      hook: 18,
      reason: 19,
      src_zone: 20,
      dst_zone: 21,
      action: 22,
      match_prefixlen: 23,
      sport: 24,
      dport: 26,
      saddr: 28,
      daddr: 44,
      match_addr: 60,
      pkt_len: 76,
    },
  },
} as const satisfies Record<string, CLayout>;

/** Zone ids with a fixed meaning (`FOS1_ZONE_*`). */
export const ZONE_UNZONED = 0;
export const ZONE_HOST = 255;

/** Zone policy actions (`FOS1_ACTION_*`). */
export const ZoneAction = { allow: 0, deny: 1, log: 2 } as const;
export type ZoneActionName = keyof typeof ZoneAction;

/** Why an event was emitted (`FOS1_REASON_*`). */
export const DropReason = { 1: 'blocklist-host', 2: 'blocklist-prefix', 3: 'zone-rule', 4: 'zone-default', 5: 'rate-limit' } as const;
/** Slots of the `drop_stats` per-CPU array (`FOS1_DROP_STATS_SLOTS`): one per reason id, 0 unused. */
export const DROP_STATS_SLOTS = 8;
/** Which program emitted it (`FOS1_HOOK_*`). */
export const Hook = { 0: 'tc-ingress', 1: 'tc-egress', 2: 'xdp' } as const;

const L = DATAPATH_LAYOUTS;

function u16(buf: Buffer, off: number, v?: number): number {
  if (v !== undefined) {
    if (HOST_LITTLE_ENDIAN) buf.writeUInt16LE(v, off);
    else buf.writeUInt16BE(v, off);
    return v;
  }
  return HOST_LITTLE_ENDIAN ? buf.readUInt16LE(off) : buf.readUInt16BE(off);
}
function u32(buf: Buffer, off: number, v?: number): number {
  if (v !== undefined) {
    if (HOST_LITTLE_ENDIAN) buf.writeUInt32LE(v, off);
    else buf.writeUInt32BE(v, off);
    return v;
  }
  return HOST_LITTLE_ENDIAN ? buf.readUInt32LE(off) : buf.readUInt32BE(off);
}
function u64(buf: Buffer, off: number): bigint {
  return HOST_LITTLE_ENDIAN ? buf.readBigUInt64LE(off) : buf.readBigUInt64BE(off);
}

/** A datapath key or value outside its field's range. */
export class DatapathCodecError extends Error {
  override name = 'DatapathCodecError';
}

function checkInt(field: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new DatapathCodecError(`${field} must be an integer 0–${max}, got ${v}`);
}

/** One zone policy rule's key: protocol 0 = any, port 0 = any. */
export interface ZonePolicyKey {
  srcZone: number;
  dstZone: number;
  protocol: number;
  dport: number;
}

export function decodeZonePolicyKey(buf: Buffer): ZonePolicyKey {
  const o = L.fos1_zone_policy_key.offsets;
  return { srcZone: buf[o.src_zone] ?? 0, dstZone: buf[o.dst_zone] ?? 0, protocol: buf[o.protocol] ?? 0, dport: u16(buf, o.dport) };
}

export function encodeZonePolicyKey(k: ZonePolicyKey): Buffer {
  checkInt('srcZone', k.srcZone, 255);
  checkInt('dstZone', k.dstZone, 255);
  checkInt('protocol', k.protocol, 255);
  checkInt('dport', k.dport, 65535);
  const o = L.fos1_zone_policy_key.offsets;
  const buf = Buffer.alloc(L.fos1_zone_policy_key.size);
  buf[o.src_zone] = k.srcZone;
  buf[o.dst_zone] = k.dstZone;
  buf[o.protocol] = k.protocol;
  u16(buf, o.dport, k.dport);
  return buf;
}

/** A zone verdict: what to do and which rule id to count it under (0 = none). */
export interface ZoneVerdict {
  action: ZoneActionName;
  ruleId: number;
}

export function encodeZoneVerdict(v: ZoneVerdict): Buffer {
  checkInt('ruleId', v.ruleId, 0xffffffff);
  const o = L.fos1_zone_verdict.offsets;
  const buf = Buffer.alloc(L.fos1_zone_verdict.size);
  u32(buf, o.action, ZoneAction[v.action]);
  u32(buf, o.rule_id, v.ruleId);
  return buf;
}

export function decodeZoneVerdict(buf: Buffer): ZoneVerdict {
  const o = L.fos1_zone_verdict.offsets;
  const code = u32(buf, o.action);
  const action = (Object.keys(ZoneAction) as ZoneActionName[]).find((a) => ZoneAction[a] === code);
  if (!action) throw new DatapathCodecError(`zone verdict has unknown action ${code}`);
  return { action, ruleId: u32(buf, o.rule_id) };
}

/** Packets and bytes, summed over CPUs. */
export interface Counter {
  packets: bigint;
  bytes: bigint;
}

/** Sums the per-CPU copies of a `struct fos1_counter`. */
export function sumCounters(perCpu: Buffer[] | null): Counter {
  const total: Counter = { packets: 0n, bytes: 0n };
  for (const b of perCpu ?? []) {
    total.packets += u64(b, L.fos1_counter.offsets.packets);
    total.bytes += u64(b, L.fos1_counter.offsets.bytes);
  }
  return total;
}

/** `__u32` map key (rule id, ifindex, zone index). */
export function encodeU32(v: number): Buffer {
  checkInt('u32 key', v, 0xffffffff);
  const buf = Buffer.alloc(4);
  u32(buf, 0, v);
  return buf;
}

/** Key of `entry_stats` for a blocklist entry (a host is a /32 or /128). */
export function encodeEntryKey(cidr: Cidr): Buffer {
  const o = L.fos1_entry_key.offsets;
  const buf = Buffer.alloc(L.fos1_entry_key.size);
  buf[o.family] = cidr.family;
  buf[o.prefixlen] = cidr.prefixLength;
  buf.set(cidr.bytes, o.addr);
  return buf;
}

/** A decoded ring-buffer record: fos1's answer to "why was this packet dropped". */
export interface DropEvent {
  timestampNs: bigint;
  ifindex: number;
  ruleId: number;
  family: IpFamily;
  protocol: number;
  hook: (typeof Hook)[keyof typeof Hook];
  reason: (typeof DropReason)[keyof typeof DropReason];
  srcZone: number;
  dstZone: number;
  action: ZoneActionName;
  source: string;
  destination: string;
  sport: number;
  dport: number;
  /**
   * The blocklist entry that matched, e.g. `192.0.2.7/32` or `2001:db8::/32` (the
   * program finds which trie prefix matched by a binary search over prefix lengths),
   * or the rate-limited source host.
   */
  matched?: string;
  packetLength: number;
}

export function decodeDropEvent(buf: Buffer): DropEvent {
  const s = L.fos1_drop_event;
  if (buf.length < s.size) throw new DatapathCodecError(`drop event is ${buf.length} bytes; expected ${s.size}`);
  const o = s.offsets;
  const family = buf[o.family] === 6 ? 6 : 4;
  const len = family === 4 ? 4 : 16;
  const addr = (off: number) => formatIp(family, new Uint8Array(buf.subarray(off, off + len)));
  const reason = DropReason[buf[o.reason] as keyof typeof DropReason];
  const hook = Hook[buf[o.hook] as keyof typeof Hook];
  const actionCode = buf[o.action];
  const action = (Object.keys(ZoneAction) as ZoneActionName[]).find((a) => ZoneAction[a] === actionCode);
  if (!reason || !hook || !action) {
    throw new DatapathCodecError(`drop event has unknown reason ${buf[o.reason]}, hook ${buf[o.hook]} or action ${actionCode}`);
  }
  const event: DropEvent = {
    timestampNs: u64(buf, o.timestamp_ns),
    ifindex: u32(buf, o.ifindex),
    ruleId: u32(buf, o.rule_id),
    family,
    protocol: buf[o.protocol] ?? 0,
    hook,
    reason,
    srcZone: buf[o.src_zone] ?? 0,
    dstZone: buf[o.dst_zone] ?? 0,
    action,
    source: addr(o.saddr),
    destination: addr(o.daddr),
    sport: u16(buf, o.sport),
    dport: u16(buf, o.dport),
    packetLength: u32(buf, o.pkt_len),
  };
  if (reason === 'blocklist-host' || reason === 'blocklist-prefix' || reason === 'rate-limit') {
    const bytes = new Uint8Array(buf.subarray(o.match_addr, o.match_addr + len));
    event.matched = formatCidr({ family, bytes, prefixLength: buf[o.match_prefixlen] ?? 0 });
  }
  return event;
}

/** Conntrack states (`FOS1_CT_*`). */
export const ConntrackState = { 1: 'syn-sent', 2: 'established', 3: 'closing', 4: 'open' } as const;
export type ConntrackStateName = (typeof ConntrackState)[keyof typeof ConntrackState];
/** `FOS1_CONNTRACK_MAX`: the conntrack LRU's size when the loader is given none. */
export const CONNTRACK_DEFAULT_MAX = 65536;
/** `FOS1_SETTING_NO_CONNTRACK`: stateless zone policy. */
export const SETTING_NO_CONNTRACK = 1;

/** One tracked connection, from its initiator's point of view. */
export interface ConntrackEntry {
  family: IpFamily;
  protocol: number;
  /** Who opened it (address and port; ICMP echo: the identifier). */
  source: string;
  sport: number;
  destination: string;
  dport: number;
  state: ConntrackStateName;
  /** `FOS1_CT_FIN_*` bits: 1 the initiator sent a FIN, 2 the responder did. */
  fin: number;
  srcZone: number;
  dstZone: number;
  ruleId: number;
  lastSeenNs: bigint;
  createdNs: bigint;
}

/** Decodes a `conntrack` element (key + value) into the initiator's view. */
export function decodeConntrackEntry(key: Buffer, value: Buffer): ConntrackEntry {
  const k = L.fos1_ct_key.offsets;
  const v = L.fos1_ct_value.offsets;
  if (key.length < L.fos1_ct_key.size || value.length < L.fos1_ct_value.size) throw new DatapathCodecError('conntrack element is shorter than struct fos1_ct_key / fos1_ct_value');
  const family = key[k.family] === 6 ? 6 : 4;
  const len = family === 4 ? 4 : 16;
  const addr = (off: number) => formatIp(family, new Uint8Array(key.subarray(off, off + len)));
  const lo = { addr: addr(k.addr_lo), port: u16(key, k.port_lo) };
  const hi = { addr: addr(k.addr_hi), port: u16(key, k.port_hi) };
  const [src, dst] = value[v.initiator_lo] ? [lo, hi] : [hi, lo];
  const state = ConntrackState[value[v.state] as keyof typeof ConntrackState];
  if (!state) throw new DatapathCodecError(`conntrack entry has unknown state ${value[v.state]}`);
  return {
    family,
    protocol: key[k.protocol] ?? 0,
    source: src.addr,
    sport: src.port,
    destination: dst.addr,
    dport: dst.port,
    state,
    fin: value[v.fin] ?? 0,
    srcZone: value[v.src_zone] ?? 0,
    dstZone: value[v.dst_zone] ?? 0,
    ruleId: u32(value, v.rule_id),
    lastSeenNs: u64(value, v.last_seen_ns),
    createdNs: u64(value, v.created_ns),
  };
}

/** Encodes `struct fos1_settings`. */
export function encodeSettings(s: { conntrack: boolean }): Buffer {
  const buf = Buffer.alloc(L.fos1_settings.size);
  u32(buf, L.fos1_settings.offsets.flags, s.conntrack ? 0 : SETTING_NO_CONNTRACK);
  return buf;
}

/** Decodes `struct fos1_settings` (an all-zero value: conntrack on). */
export function decodeSettings(buf: Buffer): { conntrack: boolean } {
  return { conntrack: (u32(buf, L.fos1_settings.offsets.flags) & SETTING_NO_CONNTRACK) === 0 };
}
