/**
 * The lock-out guard: what automated enforcement must never do.
 *
 * An IDS alert can name the router's own management network, a gateway or the DNS
 * server (spoofed sources, a misfiring signature, or a real compromise of a trusted
 * host). Blocking those would cut the operators off, so automated blocks are refused
 * for any prefix that overlaps an allow-listed range, for prefixes wider than a bound,
 * and beyond caps on how many automated blocks may be active and how fast new ones may
 * start. Every refusal carries its reason; callers log and audit it.
 *
 * Pure code: the ingest bridge (ingest/bridge.ts) checks early (cheap refusals never reach Temporal) and
 * the enforcement workflows check again (the workflow is the durable authority, and the
 * caps need the cluster-wide count the coordinator workflow keeps,
 * workflows/enforcement-coordinator.ts).
 */
import { z } from 'zod';
import { cidrContains, parseCidr, type Cidr } from './ip';
import { cidrSchema } from './node-state';

/** Guard configuration. Lists are named so refusals can say which list matched. */
export const guardConfigSchema = z
  .object({
    /** Named allow-lists: management networks, the nodes' own addresses, gateways, DNS servers, … */
    allowLists: z.record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'allow-list names are lowercase words'), z.array(cidrSchema)).default({}),
    /** Shortest IPv4 prefix an automated block may have (a /8 block is never automatic). */
    minPrefixLengthV4: z.number().int().min(0).max(32).default(24),
    /** Shortest IPv6 prefix an automated block may have. */
    minPrefixLengthV6: z.number().int().min(0).max(128).default(64),
    /** At most this many automated blocks active at once (cluster-wide). */
    maxActiveBlocks: z.number().int().min(1).max(1_000_000).default(10_000),
    /** At most this many new automated blocks per minute (cluster-wide). */
    maxNewBlocksPerMinute: z.number().int().min(1).max(100_000).default(600),
  })
  .strict();

export type GuardConfig = z.output<typeof guardConfigSchema>;
export type GuardConfigInput = z.input<typeof guardConfigSchema>;

/** Why the guard refused; `code` is stable for branching and metrics. */
export interface GuardRefusal {
  code: 'allow-listed' | 'prefix-too-short' | 'not-a-prefix' | 'too-many-active-blocks' | 'rate-limited';
  reason: string;
}

/** A guard with its allow-lists parsed once. */
export class EnforcementGuard {
  private readonly lists: { name: string; cidr: Cidr; text: string }[];

  constructor(readonly config: GuardConfig) {
    this.lists = Object.entries(config.allowLists).flatMap(([name, cidrs]) => cidrs.map((text) => ({ name, cidr: parseCidr(text), text })));
  }

  /** The allow-list entry that `address` (an IP or prefix) overlaps, if any. */
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
    const min = cidr.family === 4 ? this.config.minPrefixLengthV4 : this.config.minPrefixLengthV6;
    if (cidr.prefixLength < min) {
      return { code: 'prefix-too-short', reason: `${target} is wider than /${min}, the shortest IPv${cidr.family} prefix automated enforcement may block` };
    }
    return null;
  }

  /**
   * Checks the caps for a new block, given the number active now and the start times
   * (ms) of recent new blocks; null when allowed.
   */
  checkCaps(activeBlocks: number, recentStartsMs: readonly number[], nowMs: number): GuardRefusal | null {
    if (activeBlocks >= this.config.maxActiveBlocks) {
      return { code: 'too-many-active-blocks', reason: `${activeBlocks} automated blocks are active; the cap is ${this.config.maxActiveBlocks}` };
    }
    const lastMinute = recentStartsMs.filter((t) => nowMs - t < 60_000).length;
    if (lastMinute >= this.config.maxNewBlocksPerMinute) {
      return { code: 'rate-limited', reason: `${lastMinute} new automated blocks in the last minute; the cap is ${this.config.maxNewBlocksPerMinute}/min` };
    }
    return null;
  }
}
