/**
 * Counts over sliding windows, grouped by a fact (usually `src_ip`): "5 alerts of this
 * category from one source within 10 minutes". Time is the events' own timestamps, so
 * replaying a log gives the same counts as watching it live.
 *
 * Every declared window sees every event before the rules run. Counting inside a rule
 * condition would miss events whenever json-rules-engine short-circuits an `all`.
 */
import type { VerdictFacts } from './facts';

/** A window as a rule set declares it (durations already in ms). */
export interface WindowDefinition {
  name: string;
  /** The fact whose value groups the counts. */
  groupBy: keyof VerdictFacts;
  windowMs: number;
  /** Which events count: fact → value (or any of a list of values). */
  where: Record<string, string | number | boolean | (string | number | boolean)[]>;
}

/** Bounds that keep a flood of distinct sources from exhausting memory. */
export interface WindowLimits {
  /** Distinct groups per window; past it the stalest groups are forgotten. */
  maxGroups: number;
}

interface Group {
  /** Event times (ms), oldest first; `head` skips the expired ones without shifting. */
  times: number[];
  head: number;
}

/** Sliding-window counters for a rule set. */
export class SlidingWindows {
  private readonly groups: Map<string, Group>[];

  constructor(
    private readonly definitions: readonly WindowDefinition[],
    private readonly limits: WindowLimits = { maxGroups: 100_000 },
  ) {
    this.groups = definitions.map(() => new Map());
  }

  /** Counts `facts` into every window it matches; returns each window's count for this event's group. */
  record(facts: VerdictFacts): Record<string, number> {
    const counts: Record<string, number> = {};
    for (let i = 0; i < this.definitions.length; i++) {
      const def = this.definitions[i]!;
      const groups = this.groups[i]!;
      const key = facts[def.groupBy];
      if (key === undefined || !matches(def.where, facts)) {
        counts[def.name] = 0;
        continue;
      }
      const groupKey = String(key);
      let group = groups.get(groupKey);
      if (!group) {
        if (groups.size >= this.limits.maxGroups) evict(groups, facts.time_ms - def.windowMs, this.limits.maxGroups);
        group = { times: [], head: 0 };
        groups.set(groupKey, group);
      } else {
        // Map order is insertion order: re-inserting keeps the busiest groups at the end,
        // so eviction drops the stalest first.
        groups.delete(groupKey);
        groups.set(groupKey, group);
      }
      group.times.push(facts.time_ms);
      const cutoff = facts.time_ms - def.windowMs;
      while (group.head < group.times.length && group.times[group.head]! <= cutoff) group.head++;
      if (group.head > 1024 && group.head * 2 > group.times.length) {
        group.times = group.times.slice(group.head);
        group.head = 0;
      }
      counts[def.name] = group.times.length - group.head;
    }
    return counts;
  }

  /** Number of groups tracked, per window (for metrics and tests). */
  sizes(): Record<string, number> {
    return Object.fromEntries(this.definitions.map((d, i) => [d.name, this.groups[i]!.size]));
  }
}

function matches(where: WindowDefinition['where'], facts: VerdictFacts): boolean {
  for (const field in where) {
    const want = where[field]!;
    const have = (facts as unknown as Record<string, unknown>)[field];
    if (Array.isArray(want) ? !want.includes(have as string) : have !== want) return false;
  }
  return true;
}

function evict(groups: Map<string, Group>, cutoff: number, maxGroups: number): void {
  for (const [key, group] of groups) {
    if ((group.times[group.times.length - 1] ?? 0) <= cutoff) groups.delete(key);
  }
  if (groups.size < maxGroups) return;
  // Nothing (or too little) expired: forget the stalest tenth, the front of the insertion order.
  let drop = Math.max(1, Math.floor(groups.size / 10));
  for (const key of groups.keys()) {
    if (drop-- <= 0) break;
    groups.delete(key);
  }
}
