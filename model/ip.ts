/**
 * IP address and prefix parsing shared by workflows, activities and the eBPF codecs.
 *
 * This file must stay free of Node built-ins (it is bundled into Temporal's workflow
 * sandbox), so it carries its own small IPv4/IPv6 parser instead of `node:net`.
 * Every prefix fos1 stores or compares goes through {@link parseCidr} so that
 * `2001:DB8::/32`, `2001:db8:0::/32` and `2001:db8::/32` are one and the same key.
 *
 * The zod schemas at the end ({@link ipSchema}, {@link cidrSchema}, {@link portSchema}) are
 * the one address, prefix and port check of every fos1 input (node state, gates, firewall
 * rules, the ingest's config): a field is refused with the same rule wherever it appears.
 */
import { z } from 'zod';

/** Address family, as the kernel and iproute2 name it. */
export type IpFamily = 4 | 6;

/** A parsed prefix: network address bytes (host bits zero) and prefix length. */
export interface Cidr {
  readonly family: IpFamily;
  /** 4 bytes for IPv4, 16 for IPv6, network byte order. */
  readonly bytes: Uint8Array;
  readonly prefixLength: number;
}

/**
 * Why a string is not an acceptable address or prefix; the message is shown to operators.
 * `rule` says the same without quoting the text, for errors about content fos1 must not
 * repeat (a line of a referenced file may be anything: a password hash, say).
 */
export class IpParseError extends Error {
  override readonly name = 'IpParseError';
  constructor(
    message: string,
    readonly rule: string = 'is not an IPv4 or IPv6 address or prefix',
  ) {
    super(message);
  }
}

const IPV4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses dotted-quad IPv4 (no leading zeros, which some tools read as octal). */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i] ?? '';
    if (!IPV4_PART.test(part)) return null;
    bytes[i] = Number(part);
  }
  return bytes;
}

/** Parses IPv6 text (RFC 4291 §2.2 forms, including `::` and a trailing dotted quad). Zone ids are refused. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45 || text.includes('%')) return null;
  const doubleColon = text.indexOf('::');
  if (doubleColon !== -1 && text.indexOf('::', doubleColon + 1) !== -1) return null;

  const groups: number[] = [];
  const parseSide = (side: string, allowTrailingV4: boolean): number[] | null => {
    if (side === '') return [];
    const out: number[] = [];
    const pieces = side.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i] ?? '';
      if (allowTrailingV4 && i === pieces.length - 1 && piece.includes('.')) {
        const v4 = parseIPv4(piece);
        if (!v4) return null;
        out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
        continue;
      }
      if (!IPV6_GROUP.test(piece)) return null;
      out.push(parseInt(piece, 16));
    }
    return out;
  };

  if (doubleColon === -1) {
    const all = parseSide(text, true);
    if (!all || all.length !== 8) return null;
    groups.push(...all);
  } else {
    const head = parseSide(text.slice(0, doubleColon), false);
    const tail = parseSide(text.slice(doubleColon + 2), true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  }

  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

/** Formats 4 bytes as dotted quad. */
export function formatIPv4(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4)).join('.');
}

/** Formats 16 bytes in RFC 5952 canonical form (lowercase, longest zero run compressed). */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((bytes[i * 2] ?? 0) << 8) | (bytes[i * 2 + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/** Parses an IPv4 or IPv6 address. */
export function parseIp(text: string): { family: IpFamily; bytes: Uint8Array } | null {
  const v4 = parseIPv4(text);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIPv6(text);
  if (v6) return { family: 6, bytes: v6 };
  return null;
}

/** Formats address bytes of either family. */
export function formatIp(family: IpFamily, bytes: Uint8Array): string {
  return family === 4 ? formatIPv4(bytes) : formatIPv6(bytes);
}

/** Returns the canonical text of an address, or throws {@link IpParseError}. */
export function canonicalIp(text: string): string {
  const ip = parseIp(text);
  if (!ip) throw new IpParseError(`"${text}" is not an IPv4 or IPv6 address`);
  return formatIp(ip.family, ip.bytes);
}

/**
 * Parses `address/length` (or a bare address, meaning a single host).
 * Refuses prefixes with host bits set: `10.0.0.1/24` is almost always a typo, and the
 * kernel would silently store `10.0.0.0/24` for a route but reject it elsewhere.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (!ip) throw new IpParseError(`"${text}" is not an IPv4 or IPv6 prefix (expected e.g. 192.0.2.0/24 or 2001:db8::/32)`, 'is not an IPv4 or IPv6 prefix (expected e.g. 192.0.2.0/24 or 2001:db8::/32)');
  const maxLength = ip.family === 4 ? 32 : 128;
  let prefixLength = maxLength;
  if (slash !== -1) {
    const lengthText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > maxLength) {
      throw new IpParseError(`"${text}" has an invalid prefix length (0–${maxLength} for IPv${ip.family})`, `has an invalid prefix length (0–${maxLength} for IPv${ip.family})`);
    }
    prefixLength = Number(lengthText);
  }
  const network = maskBytes(ip.bytes, prefixLength);
  if (!bytesEqual(network, ip.bytes)) {
    throw new IpParseError(`"${text}" has host bits set; did you mean ${formatIp(ip.family, network)}/${prefixLength}?`, 'has host bits set');
  }
  return { family: ip.family, bytes: network, prefixLength };
}

/** Canonical `address/length` text of a prefix; the one form fos1 uses as a key. */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.family, cidr.bytes)}/${cidr.prefixLength}`;
}

/** Canonical text of a prefix given as text, or throws {@link IpParseError}. */
export function canonicalCidr(text: string): string {
  return formatCidr(parseCidr(text));
}

/** True when `inner` lies entirely inside `outer` (same family, longer or equal prefix). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || inner.prefixLength < outer.prefixLength) return false;
  return bytesEqual(maskBytes(inner.bytes, outer.prefixLength), outer.bytes);
}

function maskBytes(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, prefixLength - i * 8));
    out[i] = (bytes[i] ?? 0) & ((0xff << (8 - bitsHere)) & 0xff);
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** An address of either family, returned in canonical form; the issue quotes the text and says what it is not. */
export const ipSchema = z.string().transform((text, ctx) => {
  try {
    return canonicalIp(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof IpParseError ? err.message : String(err) });
    return z.NEVER;
  }
});

/** A prefix, returned in canonical form; host bits set or a bad length is an error that says so. */
export const cidrSchema = z.string().transform((text, ctx) => {
  try {
    return canonicalCidr(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof IpParseError ? err.message : String(err) });
    return z.NEVER;
  }
});

/** A TCP or UDP port, 1–65535 (0 is no port a packet is sent to). */
export const portSchema = z.number().int('must be a whole number').min(1, 'must be a port 1–65535').max(65535, 'must be a port 1–65535');
