/**
 * The remote-endpoint rule of DPI verdicts: an application verdict ("block BitTorrent")
 * is aimed at the flow's *remote* endpoint — the side outside the node's local networks —
 * whichever position (source or destination) it holds in the flow, and never at a local
 * host. A flow between two local hosts, or one where neither side is local, blocks no
 * address (docs/dpi.md).
 *
 * Pure code (no Node built-ins): the evaluator and its unit and property tests use it.
 */
import { cidrContains, formatCidr, parseCidr, parseIp, type Cidr } from './ip';

/** What a node counts as "here": canonical prefixes (host prefixes for its own addresses). */
export interface LocalNetworks {
  prefixes: string[];
}

/** An interface as the node reports it: name and addresses with their prefix length (`10.0.1.1/24`). */
export interface ViewInterface {
  name: string;
  addresses: string[];
}

/** A zone as the node holds it (model/node-state.ts Zone): its interfaces and routed prefixes. */
export interface ViewZone {
  name: string;
  interfaces: string[];
  prefixes: string[];
}

/** What {@link localNetworksOf} reads of a node: read from the kernel by activities/system/local-networks.ts. */
export interface NodeNetworkView {
  interfaces: ViewInterface[];
  zones: ViewZone[];
  /** Interfaces a default route (0.0.0.0/0 or ::/0, any table) leaves through. */
  defaultRouteInterfaces: string[];
}

/** Options of {@link localNetworksOf}. */
export interface LocalNetworksOptions {
  /** Zones that face the outside (default `wan`): their interfaces' prefixes are not local. */
  externalZones?: ReadonlySet<string>;
  /** Prefixes counted local whatever the node reports (operator's FOS1_LOCAL_NETWORKS). */
  extra?: readonly string[];
}

/** The zone name that faces the outside unless configured otherwise. */
export const DEFAULT_EXTERNAL_ZONES: ReadonlySet<string> = new Set(['wan']);

/**
 * A node's local networks:
 * - every address of the node itself (as a host prefix), on whatever interface;
 * - the connected prefix of every address on an *inside* interface: one in a zone that is
 *   not external, or — not in any zone — one no default route leaves through (the default
 *   route is the way to the outside);
 * - the routed `prefixes` of every zone that is not external;
 * - `extra`.
 * An interface in an external zone, or an unzoned one carrying a default route, adds only
 * the node's own address on it: the rest of its subnet (the ISP's, the internet) is remote.
 */
export function localNetworksOf(view: NodeNetworkView, options: LocalNetworksOptions = {}): LocalNetworks {
  const external = options.externalZones ?? DEFAULT_EXTERNAL_ZONES;
  const zoneOf = new Map<string, string>();
  for (const zone of view.zones) for (const name of zone.interfaces) zoneOf.set(name, zone.name);
  const defaults = new Set(view.defaultRouteInterfaces);
  const out = new Set<string>();
  const add = (cidr: Cidr | null) => {
    if (cidr) out.add(formatCidr(cidr));
  };
  for (const iface of view.interfaces) {
    const zone = zoneOf.get(iface.name);
    const inside = zone !== undefined ? !external.has(zone) : !defaults.has(iface.name);
    for (const address of iface.addresses) {
      const parsed = safeCidr(address.includes('/') ? address : `${address}/${address.includes(':') ? 128 : 32}`, false);
      if (!parsed) continue;
      add({ ...parsed, prefixLength: parsed.family === 4 ? 32 : 128 });
      if (inside) add(networkOf(parsed));
    }
  }
  for (const zone of view.zones) if (!external.has(zone.name)) for (const p of zone.prefixes) add(safeCidr(p, true));
  for (const p of options.extra ?? []) add(safeCidr(p, true));
  return { prefixes: [...out].sort() };
}

/** Where an address stands relative to the local networks. */
export type Locality = 'local' | 'remote' | 'special';

/**
 * `local` inside one of the prefixes; `special` for what is not one host's unicast address
 * (unspecified, loopback, link-local, multicast, the limited broadcast) — never a target;
 * `remote` otherwise. An IPv4-mapped IPv6 address is judged as its IPv4 address.
 */
export function localityOf(address: string, local: LocalNetworks | CompiledLocalNetworks): Locality {
  const ip = hostOf(address);
  if (!ip || isSpecial(ip)) return 'special';
  const compiled = 'compiled' in local ? local : compileLocalNetworks(local);
  return compiled.compiled.some((c) => c.family === ip.family && cidrContains(c, ip)) ? 'local' : 'remote';
}

/** Local networks parsed once, for the hot path. */
export interface CompiledLocalNetworks {
  compiled: Cidr[];
}

/** Parses the prefixes once (invalid ones are dropped). */
export function compileLocalNetworks(local: LocalNetworks): CompiledLocalNetworks {
  return { compiled: local.prefixes.map((p) => safeCidr(p, true)).filter((c): c is Cidr => c !== null).map(unmapCidr) };
}

/** Why no address is aimed at. */
export type WithheldReason = 'local-to-local' | 'no-local-side' | 'not-unicast' | 'no-address' | 'local-networks-unknown';

/** The outcome of {@link remoteEndpoint}: the side to block, or why none is. */
export type RemoteEndpoint = { side: 'src_ip' | 'dest_ip'; address: string } | { withheld: WithheldReason; detail: string };

/**
 * The remote endpoint of a flow: the one side that is outside the local networks while the
 * other is inside. Exactly one local side and one remote side, or nothing:
 * - both local → `local-to-local` (two of our hosts: blocking either by address would cut
 *   a local host off);
 * - neither local → `no-local-side` (transit traffic, or local networks that miss a
 *   network: fos1 does not guess which side is ours);
 * - a side that is not a unicast host (multicast, broadcast…) → `not-unicast`.
 */
export function remoteEndpoint(src: string | undefined, dest: string | undefined, local: LocalNetworks | CompiledLocalNetworks | undefined): RemoteEndpoint {
  if (src === undefined || dest === undefined) return { withheld: 'no-address', detail: 'the verdict does not name both endpoints of the flow' };
  if (!local) return { withheld: 'local-networks-unknown', detail: "the node's local networks are not known yet" };
  const compiled = 'compiled' in local ? local : compileLocalNetworks(local);
  const s = localityOf(src, compiled);
  const d = localityOf(dest, compiled);
  if (s === 'local' && d === 'remote') return { side: 'dest_ip', address: dest };
  if (s === 'remote' && d === 'local') return { side: 'src_ip', address: src };
  if (s === 'local' && d === 'local') return { withheld: 'local-to-local', detail: `${src} and ${dest} are both local hosts; no address is blocked` };
  if (s === 'special' || d === 'special') return { withheld: 'not-unicast', detail: `${s === 'special' ? src : dest} is not a unicast host address` };
  return { withheld: 'no-local-side', detail: `neither ${src} nor ${dest} is in the node's local networks` };
}

function safeCidr(text: string, canonicalOnly: boolean): Cidr | null {
  try {
    const c = parseCidr(text);
    return c;
  } catch {
    if (canonicalOnly) return null;
    // An interface address with host bits set (`10.0.1.1/24`) is not a canonical prefix.
    const slash = text.indexOf('/');
    const ip = parseIp(text.slice(0, slash));
    const length = Number(text.slice(slash + 1));
    if (!ip || !Number.isInteger(length) || length < 0 || length > (ip.family === 4 ? 32 : 128)) return null;
    return { family: ip.family, bytes: ip.bytes, prefixLength: length };
  }
}

function networkOf(c: Cidr): Cidr {
  const bytes = new Uint8Array(c.bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefixLength - i * 8));
    bytes[i] = (c.bytes[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  return { ...c, bytes };
}

/** A host as a full-length prefix; IPv4-mapped IPv6 becomes IPv4. */
function hostOf(address: string): Cidr | null {
  const ip = parseIp(address);
  if (!ip) return null;
  return unmapCidr({ family: ip.family, bytes: ip.bytes, prefixLength: ip.family === 4 ? 32 : 128 });
}

function unmapCidr(c: Cidr): Cidr {
  if (c.family !== 6 || c.prefixLength < 96) return c;
  const b = c.bytes;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return c;
  if (b[10] !== 0xff || b[11] !== 0xff) return c;
  return { family: 4, bytes: b.slice(12), prefixLength: c.prefixLength - 96 };
}

function isSpecial(ip: Cidr): boolean {
  const b = ip.bytes;
  if (ip.family === 4) {
    const a = b[0]!;
    return a === 0 || a === 127 || (a === 169 && b[1] === 254) || (a >= 224 && a <= 239) || b.every((x) => x === 255);
  }
  if (b.every((x) => x === 0)) return true; // ::
  if (b.slice(0, 15).every((x) => x === 0) && b[15] === 1) return true; // ::1
  if (b[0] === 0xff) return true; // multicast
  return b[0] === 0xfe && (b[1]! & 0xc0) === 0x80; // fe80::/10
}
