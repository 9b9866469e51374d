/**
 * Per-source rate limits (the eBPF firewall's `ratelimit_v4`/`_v6` maps) as a subsystem,
 * on the blocklist's intent protocol: a patch reads, snapshots and checks only the sources
 * it touches; a full list reads the maps whole. Rate limits are few (at most the maps'
 * size, 16384 a family by default), so every snapshot travels by value.
 */
import type { KernelRateLimit, RateLimitMaps } from '../../bpf/ratelimit-maps';
import { canonicalCidr } from '../../model/ip';
import { patchRateLimits, planRateLimits, renderOperation, type RateLimitOperation } from '../../model/plan';
import { type MapRateLimit, type RateLimitCheck, type RateLimitIntent, type SubsystemContract, countLines } from '../../model/subsystem';

/** What planning an intent reads: the touched sources (a patch) or every limit (a full list). */
type RateLimitRead = { mode: 'keep' } | { mode: 'patch'; present: MapRateLimit[]; absent: string[] } | { mode: 'all'; entries: MapRateLimit[] };

/** Builds the rate-limit subsystem around the node's maps (opened lazily). */
export function createRateLimitsSubsystem(maps: () => RateLimitMaps): SubsystemContract<'ratelimits', RateLimitRead> {
  /** The touched sources of a patch, canonical; an upsert wins over a remove of the same source. */
  const patchParts = (intent: Extract<RateLimitIntent, { mode: 'patch' }>) => {
    const upsert = new Map(intent.upsert.map((e) => [canonicalCidr(e.cidr), { ...e, cidr: canonicalCidr(e.cidr) }]));
    const remove = [...new Set(intent.remove.map((c) => canonicalCidr(c)))].filter((c) => !upsert.has(c));
    return { upsert: [...upsert.values()], remove };
  };
  const readTouched = (cidrs: string[]) => {
    const present: MapRateLimit[] = [];
    const absent: string[] = [];
    for (const cidr of cidrs) {
      const entry = maps().get(cidr);
      if (entry) present.push(fromKernel(entry));
      else absent.push(cidr);
    }
    return { present, absent };
  };
  /** Runs the model's plan against the maps (all or nothing). */
  const execute = (ops: RateLimitOperation[]): string[] => {
    maps().update(
      ops.filter((op) => op.action !== 'delete').map((op) => op.entry),
      ops.filter((op) => op.action === 'delete').map((op) => op.entry.cidr),
    );
    return ops.map(renderOperation);
  };
  const converge = (desired: MapRateLimit[]) => execute(planRateLimits(maps().readAll().map(fromKernel), desired));
  const restorePart = (present: MapRateLimit[], absent: string[]) => {
    const current = readTouched([...present.map((e) => e.cidr), ...absent]);
    return execute(planRateLimits(current.present, present));
  };

  return {
    name: 'ratelimits',

    async read(intent) {
      if (intent.mode === 'keep') return { mode: 'keep' };
      if (intent.mode === 'patch') {
        const { upsert, remove } = patchParts(intent);
        return { mode: 'patch', ...readTouched([...upsert.map((e) => e.cidr), ...remove]) };
      }
      return { mode: 'all', entries: maps().readAll().map(fromKernel) };
    },

    async plan(observed, intent) {
      let ops: RateLimitOperation[] = [];
      let expected: RateLimitCheck = { kind: 'entries', present: [], absent: [] };
      if (intent.mode === 'patch' && observed.mode === 'patch') {
        const { upsert, remove } = patchParts(intent);
        ops = planRateLimits(observed.present, patchRateLimits(observed.present, upsert, remove));
        expected = { kind: 'entries', present: upsert, absent: remove };
      } else if (intent.mode === 'replace' && observed.mode === 'all') {
        const entries = intent.entries.map((e) => ({ ...e, cidr: canonicalCidr(e.cidr) }));
        ops = planRateLimits(observed.entries, entries);
        expected = { kind: 'all', entries };
      }
      const operations = ops.map(renderOperation);
      return { plan: { operations, counts: countLines(operations) }, expected };
    },

    async snapshot(observed) {
      if (observed.mode === 'keep') return undefined;
      return { check: observed.mode === 'patch' ? { kind: 'entries', present: observed.present, absent: observed.absent } : { kind: 'all', entries: observed.entries } };
    },

    describe(observed) {
      if (observed.mode === 'keep') return 'rate limits untouched';
      if (observed.mode === 'all') return `${observed.entries.length} rate limits`;
      return `${observed.present.length + observed.absent.length} touched rate-limited sources (${observed.present.length} present)`;
    },

    async apply(intent) {
      if (intent.mode === 'keep') return { operations: [] };
      if (intent.mode === 'replace') return { operations: converge(intent.entries) };
      const { upsert, remove } = patchParts(intent);
      const current = readTouched([...upsert.map((e) => e.cidr), ...remove]);
      return { operations: execute(planRateLimits(current.present, patchRateLimits(current.present, upsert, remove))) };
    },

    async check(check) {
      if (check.kind === 'all') return planRateLimits(maps().readAll().map(fromKernel), check.entries).map((op) => `missing change: ${renderOperation(op)}`);
      const current = readTouched([...check.present.map((e) => e.cidr), ...check.absent]);
      return planRateLimits(current.present, check.present).map((op) => `missing change: ${renderOperation(op)}`);
    },

    async restore(snapshot) {
      const { check } = snapshot;
      return { operations: check.kind === 'all' ? converge(check.entries) : restorePart(check.present, check.absent) };
    },
  };
}

function fromKernel(r: KernelRateLimit): MapRateLimit {
  return { cidr: r.cidr, pps: r.pps, burst: r.burst, ...(r.expiresAt ? { expiresAt: r.expiresAt } : {}) };
}
