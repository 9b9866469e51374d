/**
 * The subsystem contract's pure parts: scopes, the workflow loop's step and compensation
 * order, the diff it reports, and the contract verbs of a table and of the rate-limit maps
 * against in-memory fakes (the real kernel versions run in the privileged tests).
 */
import type { KernelRateLimit, RateLimitMaps } from '../../bpf/ratelimit-maps';
import { createRateLimitsSubsystem } from '../../activities/subsystems/ratelimits';
import { prepareSubsystem } from '../../activities/subsystems';
import { onceScope, tableSubsystem } from '../../activities/subsystems/table';
import { patchRules, planRules } from '../../model/plan';
import type { PolicyRule } from '../../model/node-state';
import {
  changeScope,
  compensationsBefore,
  renderDiff,
  stepsOf,
  SUBSYSTEM_ORDER,
  type PreparedSubsystems,
  type Subsystem,
  subsystemIntents,
} from '../../model/subsystem';

const NETWORK: Subsystem[] = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zones', 'nat'];
const plan = (operations: string[], counts = { added: operations.length, changed: 0, removed: 0 }) => ({ plan: { operations, counts }, expected: { kind: 'entries', present: [], absent: [] }, summary: '' });

describe('the loop over the contract', () => {
  test('scope: a rate-limit-only patch covers only the rate limits; a route patch every network table, and neither map', () => {
    expect(changeScope(subsystemIntents({ patch: { rateLimits: { upsert: [{ cidr: '192.0.2.1/32', pps: 5, burst: 5, reason: 'x' }], remove: [] } } }))).toEqual(['ratelimits']);
    expect(changeScope(subsystemIntents({ patch: { routes: { upsert: [], remove: [{ destination: '10.0.0.0/8', table: 254, metric: 0 }] } } }))).toEqual(NETWORK);
    expect(changeScope(subsystemIntents({ patch: {} }))).toEqual([]);
  });

  test('steps: subsystems with operations, in SUBSYSTEM_ORDER whatever order the node answered in', () => {
    const prepared = { blocklist: plan(['+ block 192.0.2.1/32 (no expiry)']), routes: plan(['+ route …']), links: plan([]), ratelimits: plan([], { added: 0, changed: 0, removed: 1 }) } as unknown as PreparedSubsystems;
    expect(stepsOf(prepared)).toEqual(['routes', 'ratelimits', 'blocklist']);
  });

  test('compensations: before the first step of a group every member in scope is registered, once; restores run newest first', () => {
    const scope = [...NETWORK, 'blocklist'] as Subsystem[];
    const registered: Subsystem[] = [];
    for (const step of ['routes', 'nat', 'blocklist'] as Subsystem[]) registered.push(...compensationsBefore(step, scope, registered));
    expect(registered).toEqual([...NETWORK, 'blocklist']);
    expect([...registered].reverse()[0]).toBe('blocklist');
    // A group outside the scope is never registered (a rate-limit patch restores only rate limits).
    expect(compensationsBefore('ratelimits', ['ratelimits'], [])).toEqual(['ratelimits']);
    expect(compensationsBefore('routes', ['ratelimits'], [])).toEqual([]);
  });

  test('diff: every subsystem in apply order; a cut-short plan ends with a line giving the complete counts', () => {
    const prepared = { blocklist: plan(['+ block a'], { added: 3, changed: 1, removed: 0 }), routes: plan(['+ route r']) } as unknown as PreparedSubsystems;
    expect(renderDiff(prepared)).toEqual(['+ route r', '+ block a', '… and 3 more blocklist operations (3 added, 1 changed, 0 removed)']);
  });

  test('every subsystem in the order has a group', () => {
    for (const s of SUBSYSTEM_ORDER) expect(compensationsBefore(s, SUBSYSTEM_ORDER, [])).toContain(s);
  });
});

describe('a table subsystem (rules, against an in-memory table)', () => {
  const rule = (priority: number, table = 100): PolicyRule => ({ family: 4, priority, from: '10.0.0.0/8', table });
  function fakeRules(initial: PolicyRule[]) {
    let rules = [...initial];
    return {
      get: () => rules,
      subsystem: tableSubsystem({
        name: 'rules',
        read: async () => rules,
        resolve: (observed, intent) => (intent.mode === 'replace' ? intent.desired : intent.mode === 'patch' ? patchRules(observed, intent.patch) : observed),
        plan: planRules,
        sync: async (desired) => {
          const ops = planRules(rules, desired);
          rules = [...desired];
          return ops;
        },
        describe: (observed) => `${observed.length} rules`,
      }),
    };
  }

  test('prepare → apply → check passes; restore of the by-value snapshot brings the table back, and its check passes', async () => {
    const table = fakeRules([rule(100)]);
    const intent = { mode: 'patch' as const, patch: { upsert: [rule(200)], remove: [rule(100)] } };
    const prepared = await prepareSubsystem(table.subsystem, intent, { dryRun: true });
    expect(prepared.plan).toEqual({ operations: ['+ rule -4 priority 200 from 10.0.0.0/8 table 100', '- rule -4 priority 100 from 10.0.0.0/8 table 100'], counts: { added: 1, changed: 0, removed: 1 } });
    expect(prepared.summary).toBe('1 rules');
    expect(prepared.snapshot?.check).toEqual({ kind: 'state', state: [rule(100)], restore: true }); // by value, dry run or not

    expect(await table.subsystem.check(prepared.expected, onceScope())).toEqual(['missing change: + rule -4 priority 200 from 10.0.0.0/8 table 100', 'missing change: - rule -4 priority 100 from 10.0.0.0/8 table 100']);
    await table.subsystem.apply(intent);
    expect(await table.subsystem.check(prepared.expected, onceScope())).toEqual([]);
    expect((await table.subsystem.apply(intent)).operations).toEqual([]); // idempotent

    await table.subsystem.restore(prepared.snapshot!);
    expect(table.get()).toEqual([rule(100)]);
    expect(await table.subsystem.check(prepared.snapshot!.check, onceScope())).toEqual([]);
  });
});

describe('the rate-limit subsystem on the intent protocol (against in-memory maps)', () => {
  function fakeMaps(initial: KernelRateLimit[]) {
    const entries = new Map(initial.map((e) => [e.cidr, e]));
    const reads: string[] = [];
    const maps = {
      readAll: () => {
        reads.push('all');
        return [...entries.values()];
      },
      get: (cidr: string) => {
        reads.push(cidr);
        return entries.get(cidr);
      },
      update: (upsert: readonly KernelRateLimit[], remove: readonly string[]) => {
        for (const e of upsert) entries.set(e.cidr, e);
        for (const c of remove) entries.delete(c);
      },
    } as unknown as RateLimitMaps;
    return { maps, entries, reads };
  }

  test('a patch reads only the touched sources, snapshots them by value, and restore + check put exactly them back', async () => {
    const fake = fakeMaps([
      { cidr: '192.0.2.1/32', pps: 50, burst: 50 },
      { cidr: '192.0.2.9/32', pps: 7, burst: 7 },
    ]);
    const limits = createRateLimitsSubsystem(() => fake.maps);
    const intent = { mode: 'patch' as const, upsert: [{ cidr: '192.0.2.1/32', pps: 5, burst: 5 }, { cidr: '192.0.2.2/32', pps: 5, burst: 5, expiresAt: 1893456000 }], remove: ['192.0.2.3'] };
    const prepared = await prepareSubsystem(limits, intent, { dryRun: false });
    expect(fake.reads).toEqual(['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32']); // never the whole maps
    expect(prepared.summary).toBe('3 touched rate-limited sources (1 present)');
    expect(prepared.snapshot).toEqual({ check: { kind: 'entries', present: [{ cidr: '192.0.2.1/32', pps: 50, burst: 50 }], absent: ['192.0.2.2/32', '192.0.2.3/32'] } });
    expect(prepared.plan).toEqual({
      operations: ['~ rate-limit 192.0.2.1/32 50 pps burst 50 => 192.0.2.1/32 5 pps burst 5', '+ rate-limit 192.0.2.2/32 5 pps burst 5 until 2030-01-01T00:00:00.000Z'],
      counts: { added: 1, changed: 1, removed: 0 },
    });

    await limits.apply(intent);
    expect(await limits.check(prepared.expected, onceScope())).toEqual([]);
    await limits.restore(prepared.snapshot!);
    expect(await limits.check(prepared.snapshot!.check, onceScope())).toEqual([]);
    expect([...fake.entries.values()]).toEqual([
      { cidr: '192.0.2.1/32', pps: 50, burst: 50 },
      { cidr: '192.0.2.9/32', pps: 7, burst: 7 }, // untouched throughout
    ]);
  });

  test('a full list is read whole, and a check names what differs', async () => {
    const fake = fakeMaps([{ cidr: '192.0.2.1/32', pps: 50, burst: 50 }]);
    const limits = createRateLimitsSubsystem(() => fake.maps);
    const prepared = await prepareSubsystem(limits, { mode: 'replace', entries: [] }, { dryRun: false });
    expect(prepared.snapshot?.check).toEqual({ kind: 'all', entries: [{ cidr: '192.0.2.1/32', pps: 50, burst: 50 }] });
    expect(await limits.check(prepared.expected, onceScope())).toEqual(['missing change: - rate-limit 192.0.2.1/32 50 pps burst 50']);
  });
});
