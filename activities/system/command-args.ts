/**
 * The node side's own checks of every value that goes into an `ip` or `nft` command.
 *
 * The model (model/node-state.ts) validates a change where it enters, and the node workflow
 * validates its input again; these checks are the last line, right where a value becomes
 * part of an argv or an `ip -batch` line. iproute2 splits a batch line at whitespace and
 * reads `#` as a comment and quotes as grouping, so a device name carrying a newline would
 * become a second command run as root: every value is re-checked for its form (an interface
 * name by the kernel's rules, a prefix or address in the canonical form model/ip.ts gives,
 * an integer in range) and every batch token against a closed character set, and a bad one
 * throws {@link UnsafeArgumentError} before anything runs.
 */
import { canonicalCidr, canonicalIp } from '../../model/ip';
import { canonicalInterfaceAddress, INTERFACE_NAME } from '../../model/node-state';

/** A value refused on its way into a command; `field` says which, `rule` what it must be. */
export class UnsafeArgumentError extends Error {
  override readonly name = 'UnsafeArgumentError';
  constructor(
    readonly field: string,
    readonly rule: string,
    value: unknown,
  ) {
    super(`refusing to build the command: ${field} ${describe(value)} ${rule}`);
  }
}

/** The value, quoted and escaped (a newline shows as \n), cut short: for the message only. */
function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 64 ? `${text.slice(0, 61)}…` : text;
}

/**
 * Linux interface names (dev_valid_name): 1–15 bytes (IFNAMSIZ - 1), not "." or "..", no
 * "/", ":" or whitespace. fos1 takes the model's stricter form (letters, digits, "_", "-",
 * "."; a letter or digit first), which also keeps nft's "@set" and "$variable" forms out.
 */
export function interfaceName(value: unknown, field: string): string {
  if (typeof value !== 'string' || !INTERFACE_NAME.test(value) || value === '.' || value === '..') {
    throw new UnsafeArgumentError(field, 'is not an interface name (1–15 bytes: letters, digits, "_", "-", "."; no whitespace, newline, "/" or ":")', value);
  }
  return value;
}

/** A prefix in canonical form (`192.0.2.0/24`, `2001:db8::/32`). */
export function prefix(value: unknown, field: string): string {
  if (typeof value === 'string') {
    try {
      if (canonicalCidr(value) === value) return value;
    } catch {
      // reported below
    }
  }
  throw new UnsafeArgumentError(field, 'is not a canonical IPv4 or IPv6 prefix', value);
}

/** An address in canonical form. */
export function address(value: unknown, field: string): string {
  if (typeof value === 'string') {
    try {
      if (canonicalIp(value) === value) return value;
    } catch {
      // reported below
    }
  }
  throw new UnsafeArgumentError(field, 'is not a canonical IPv4 or IPv6 address', value);
}

/** An interface address in canonical form (`192.0.2.1/24`). */
export function interfaceAddress(value: unknown, field: string): string {
  if (typeof value === 'string' && canonicalInterfaceAddress(value) === value) return value;
  throw new UnsafeArgumentError(field, 'is not a canonical interface address (e.g. 192.0.2.1/24)', value);
}

/** A whole number in [min, max], as its decimal text. */
export function integer(value: unknown, field: string, min: number, max: number): string {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new UnsafeArgumentError(field, `is not a whole number ${min}–${max}`, value);
  }
  return String(value);
}

/** One of a closed set of words. */
export function oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new UnsafeArgumentError(field, `is not one of ${allowed.join(', ')}`, value);
  }
  return value as T;
}

/**
 * What a token of an `ip -batch` line may hold: the characters of names, numbers, prefixes
 * and addresses. No whitespace (iproute2 splits there), no newline (a new command), no
 * quote, backslash or `#` (iproute2's grouping, escape and comment characters).
 */
const BATCH_TOKEN = /^[A-Za-z0-9_.:/-]+$/;

/** Joins tokens into one `ip -batch` line after checking each (see {@link BATCH_TOKEN}). */
export function batchLine(tokens: readonly string[], field = 'batch line'): string {
  for (const token of tokens) {
    if (typeof token !== 'string' || !BATCH_TOKEN.test(token)) throw new UnsafeArgumentError(`${field} token`, 'may hold only letters, digits, "_", ".", ":", "/" and "-"', token);
  }
  if (tokens.length === 0) throw new UnsafeArgumentError(field, 'is empty', '');
  return tokens.join(' ');
}

/**
 * Checks a whole `ip -batch` script as the runner receives it: every line made of safe
 * tokens separated by single spaces. The runner calls this, so no builder can get a line
 * past it.
 */
export function checkBatchScript(script: string): void {
  const lines = script.endsWith('\n') ? script.slice(0, -1).split('\n') : script.split('\n');
  lines.forEach((line, i) => batchLine(line.split(' '), `batch line ${i + 1}`));
}

/** Checks argv for characters no argument of fos1's ever holds (NUL, newline). */
export function checkArgv(args: readonly string[]): void {
  args.forEach((arg, i) => {
    if (typeof arg !== 'string' || /[\0\r\n]/.test(arg)) throw new UnsafeArgumentError(`argument ${i + 1}`, 'holds a NUL or newline', arg);
  });
}
