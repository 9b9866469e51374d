/**
 * The lock-out guard: what automated enforcement must never do.
 *
 * An IDS alert can name the router's own management network, a gateway or the DNS
 * server (spoofed sources, a misfiring signature, or a real compromise of a trusted
 * host). Blocking those would cut the operators off, so automated blocks are refused
 * for any prefix that overlaps an allow-listed range, for prefixes wider than a bound,
 * and beyond caps on how many automated actions may be active and how fast new ones may
 * start. Every refusal carries its reason; callers log and audit it.
 *
 * Where the guard comes from: the cluster worker's configuration (FOS1_GUARD_FILE, read by
 * workers/config.ts) plus the defaults below and what each target node reports about itself
 * (its addresses, gateways, DNS servers). The enforcement workflows read it through
 * activities, so it is recorded in their history; it never travels in a workflow input, a
 * signal or an update (see {@link authorityFieldsIn}) — whoever can signal a workflow must
 * not decide what it may block.
 *
 * Pure code: the ingest bridge (ingest/bridge.ts) checks early (cheap refusals never reach Temporal) and
 * the enforcement workflows check again (the workflow is the durable authority, and the
 * caps need the cluster-wide count the coordinator workflow keeps,
 * workflows/enforcement-coordinator.ts).
 */
import { z } from 'zod';
import { cidrContains, formatCidr, parseCidr, type Cidr } from './ip';
import { cidrSchema } from './ip';

/** Guard configuration. Lists are named so refusals can say which list matched. */
export const guardConfigSchema = z
  .object({
    /** Named allow-lists: management networks, … (the defaults and the nodes' own addresses are added, see {@link effectiveGuardConfig}). */
    allowLists: z.record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'allow-list names are lowercase words'), z.array(cidrSchema)).default({}),
    /** Shortest IPv4 prefix an automated block may have (a /8 block is never automatic). */
    minPrefixLengthV4: z.number().int().min(0).max(32).default(24),
    /** Shortest IPv6 prefix an automated block may have. */
    minPrefixLengthV6: z.number().int().min(0).max(128).default(64),
    /** At most this many automated blocks active at once (cluster-wide). */
    maxActiveBlocks: z.number().int().min(1).max(1_000_000).default(10_000),
    /** At most this many new automated blocks per minute (cluster-wide). */
    maxNewBlocksPerMinute: z.number().int().min(1).max(100_000).default(600),
    /** At most this many automated rate limits active at once (cluster-wide). */
    maxActiveRateLimits: z.number().int().min(1).max(1_000_000).default(10_000),
    /** At most this many new automated rate limits per minute (cluster-wide). */
    maxNewRateLimitsPerMinute: z.number().int().min(1).max(100_000).default(600),
    /** At most this many endpoints in automated quarantine at once (cluster-wide). */
    maxActiveQuarantines: z.number().int().min(1).max(100_000).default(100),
    /** At most this many new automated quarantines per minute (cluster-wide). */
    maxNewQuarantinesPerMinute: z.number().int().min(1).max(10_000).default(10),
  })
  .strict();

export type GuardConfig = z.output<typeof guardConfigSchema>;
export type GuardConfigInput = z.input<typeof guardConfigSchema>;

/** Parses a guard configuration; throws one error listing every bad field (path and rule). */
export function parseGuardConfig(raw: unknown, source = 'guard configuration'): GuardConfig {
  const parsed = guardConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new Error(`invalid ${source}:\n${parsed.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n')}`);
  return parsed.data;
}

/** What the caps count, each with its own limits on active count and new starts per minute. */
export type CapKind = 'block' | 'rate-limit' | 'quarantine';

/** The limits of one {@link CapKind}. */
export interface CapLimits {
  maxActive: number;
  maxNewPerMinute: number;
}

/** The limits the configuration sets for `kind`. */
export function capLimits(config: GuardConfig, kind: CapKind): CapLimits {
  switch (kind) {
    case 'block':
      return { maxActive: config.maxActiveBlocks, maxNewPerMinute: config.maxNewBlocksPerMinute };
    case 'rate-limit':
      return { maxActive: config.maxActiveRateLimits, maxNewPerMinute: config.maxNewRateLimitsPerMinute };
    case 'quarantine':
      return { maxActive: config.maxActiveQuarantines, maxNewPerMinute: config.maxNewQuarantinesPerMinute };
  }
}

/**
 * Field names that carry guard authority (the guard itself, its lists, bounds and caps).
 * A workflow input, signal or update that carries one is refused: they come from the
 * cluster worker's configuration only.
 */
export const AUTHORITY_FIELDS: readonly string[] = ['guard', ...Object.keys(guardConfigSchema.shape)];

/** The {@link AUTHORITY_FIELDS} present (own keys) on `value`, in the order listed. */
export function authorityFieldsIn(value: unknown): string[] {
  if (value === null || typeof value !== 'object') return [];
  return AUTHORITY_FIELDS.filter((f) => Object.prototype.hasOwnProperty.call(value, f));
}

/** Allow-lists every guard holds whatever the configuration says. */
export const DEFAULT_ALLOW_LISTS: Readonly<Record<string, readonly string[]>> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  'link-local': ['169.254.0.0/16', 'fe80::/10'],
};

/** What a node reports about itself (activities/system/protected-addresses.ts), for the default allow-list. */
export interface NodeProtectedAddresses {
  node: string;
  /** The node's own addresses, as host prefixes (`10.0.0.1/32`). */
  addresses: string[];
  /** Next hops of its routes (`via`), as host prefixes. */
  gateways: string[];
  /** Its resolvers (resolv.conf `nameserver`), as host prefixes. */
  dnsServers: string[];
}

/**
 * The guard a workflow enforces with: the configured lists, plus the default lists
 * (loopback, link-local) and, from each node's report, `node-addresses`, `gateways` and
 * `dns-servers`. Entries that fail to parse in a report are dropped (a report is the
 * node's own, not configuration to reject), duplicates removed.
 */
export function effectiveGuardConfig(config: GuardConfig, reports: readonly NodeProtectedAddresses[] = []): GuardConfig {
  const lists: Record<string, string[]> = {};
  const add = (name: string, entries: readonly string[]) => {
    const list = (lists[name] ??= []);
    for (const text of entries) {
      let canonical: string;
      try {
        canonical = formatCidr(parseCidr(text));
      } catch {
        continue;
      }
      if (!list.includes(canonical)) list.push(canonical);
    }
  };
  for (const [name, entries] of Object.entries(DEFAULT_ALLOW_LISTS)) add(name, entries);
  for (const [name, entries] of Object.entries(config.allowLists)) add(name, entries);
  for (const r of reports) {
    add('node-addresses', r.addresses);
    add('gateways', r.gateways);
    add('dns-servers', r.dnsServers);
  }
  return { ...config, allowLists: lists };
}

/** Why the guard refused; `code` is stable for branching and metrics. */
export interface GuardRefusal {
  code:
    | 'allow-listed'
    | 'prefix-too-short'
    | 'not-a-prefix'
    | 'too-many-active-blocks'
    | 'rate-limited'
    | 'too-many-active-rate-limits'
    | 'too-many-new-rate-limits'
    | 'too-many-active-quarantines'
    | 'too-many-new-quarantines';
  reason: string;
}

/** The IPv4-mapped IPv6 range, ::ffff:0:0/96. */
const MAPPED_PREFIX = parseCidr('::ffff:0:0/96');

/**
 * The other spelling of a prefix across the IPv4-mapped range: `::ffff:a.b.c.d/(96+n)` for
 * an IPv4 `a.b.c.d/n`, the IPv4 prefix for a mapped IPv6 one at /96 or longer; null otherwise.
 * `::ffff:127.0.0.1` reaches 127.0.0.1 on a dual-stack socket, so the guard treats both as one.
 */
export function mappedCounterpart(cidr: Cidr): Cidr | null {
  if (cidr.family === 4) {
    const bytes = new Uint8Array(16);
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(cidr.bytes, 12);
    return { family: 6, bytes, prefixLength: cidr.prefixLength + 96 };
  }
  if (cidr.prefixLength >= 96 && cidrContains(MAPPED_PREFIX, cidr)) return { family: 4, bytes: cidr.bytes.slice(12), prefixLength: cidr.prefixLength - 96 };
  return null;
}

/** A guard with its allow-lists parsed once. */
export class EnforcementGuard {
  private readonly lists: { name: string; cidr: Cidr; text: string }[];

  constructor(readonly config: GuardConfig) {
    // Each entry also in its mapped spelling, so a target in either form overlaps it.
    this.lists = Object.entries(config.allowLists).flatMap(([name, cidrs]) =>
      cidrs.flatMap((text) => {
        const cidr = parseCidr(text);
        const other = mappedCounterpart(cidr);
        return other ? [{ name, cidr, text }, { name, cidr: other, text }] : [{ name, cidr, text }];
      }),
    );
  }

  /** The allow-list entry that `address` (an IP or prefix, either spelling of a mapped one) overlaps, if any. */
  allowListed(address: string): { list: string; cidr: string } | null {
    let target: Cidr;
    try {
      target = parseCidr(address);
    } catch {
      return null;
    }
    for (const entry of this.lists) {
      // Overlap either way: a block inside a protected range, or a block that would
      // swallow one (a /16 containing the gateway), both lock someone out.
      if (cidrContains(entry.cidr, target) || cidrContains(target, entry.cidr)) return { list: entry.name, cidr: entry.text };
    }
    return null;
  }

  /** Checks a target prefix against the allow-lists and the prefix bound; null when allowed. */
  checkTarget(target: string): GuardRefusal | null {
    let cidr: Cidr;
    try {
      cidr = parseCidr(target);
    } catch (err) {
      return { code: 'not-a-prefix', reason: err instanceof Error ? err.message : String(err) };
    }
    const hit = this.allowListed(target);
    if (hit) return { code: 'allow-listed', reason: `${target} overlaps ${hit.cidr} on allow-list "${hit.list}"` };
    // A mapped prefix is held to the IPv4 bound (::ffff:0:0/104 is a /8).
    const effective = mappedCounterpart(cidr)?.family === 4 ? mappedCounterpart(cidr)! : cidr;
    const min = effective.family === 4 ? this.config.minPrefixLengthV4 : this.config.minPrefixLengthV6;
    if (effective.prefixLength < min) {
      return { code: 'prefix-too-short', reason: `${target} is wider than /${min}, the shortest IPv${effective.family} prefix automated enforcement may block` };
    }
    return null;
  }

  /**
   * Checks the caps for a new action of `kind` (default a block), given the number active
   * now and the start times (ms) of recent new ones; null when allowed.
   */
  checkCaps(active: number, recentStartsMs: readonly number[], nowMs: number, kind: CapKind = 'block'): GuardRefusal | null {
    return checkCapLimits(capLimits(this.config, kind), kind, active, recentStartsMs, nowMs);
  }
}

const CAP_WORDS: Record<CapKind, { noun: string; active: GuardRefusal['code']; rate: GuardRefusal['code'] }> = {
  block: { noun: 'automated blocks', active: 'too-many-active-blocks', rate: 'rate-limited' },
  'rate-limit': { noun: 'automated rate limits', active: 'too-many-active-rate-limits', rate: 'too-many-new-rate-limits' },
  quarantine: { noun: 'automated quarantines', active: 'too-many-active-quarantines', rate: 'too-many-new-quarantines' },
};

/** The caps' verdict on one more new action of `kind`; null when it may start. */
export function checkCapLimits(limits: CapLimits, kind: CapKind, active: number, recentStartsMs: readonly number[], nowMs: number): GuardRefusal | null {
  const words = CAP_WORDS[kind];
  if (active >= limits.maxActive) {
    return { code: words.active, reason: `${active} ${words.noun} are active; the cap is ${limits.maxActive}` };
  }
  const lastMinute = recentStartsMs.filter((t) => nowMs - t < 60_000).length;
  if (lastMinute >= limits.maxNewPerMinute) {
    return { code: words.rate, reason: `${lastMinute} new ${words.noun} in the last minute; the cap is ${limits.maxNewPerMinute}/min` };
  }
  return null;
}
