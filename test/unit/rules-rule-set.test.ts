/**
 * Rule sets are validated at load with errors naming the field and the rule; custom
 * operators, sliding windows, escalation and the lock-out guard behave as documented.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escalatedDuration, enforcementWorkflowId, prefixOf } from '../../model/enforcement-decision';
import { RuleEvaluator } from '../../rules/evaluator';
import type { VerdictFacts } from '../../rules/facts';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { loadRuleSetFile, RuleSetError, validateRuleSet } from '../../rules/rule-set';
import { SlidingWindows } from '../../rules/windows';

const guard = new EnforcementGuard(
  guardConfigSchema.parse({ allowLists: { management: ['10.0.0.0/24'], dns: ['10.0.2.3', '2001:db8:53::/64'] }, minPrefixLengthV4: 24, minPrefixLengthV6: 64 }),
);

function ruleSet(rules: unknown[], windows: unknown[] = []): unknown {
  return { name: 'test', windows, rules };
}

function rule(conditions: unknown, decision: unknown = { action: 'block' }, extra: Record<string, unknown> = {}): unknown {
  return { name: 'r1', description: 'test rule', eventTypes: ['alert'], conditions, decision, ...extra };
}

function issuesOf(input: unknown, allowListNames?: Set<string>): string[] {
  try {
    validateRuleSet(input, 'test.json', allowListNames ? { allowListNames } : {});
  } catch (err) {
    if (err instanceof RuleSetError) return err.issues.map((i) => `${i.field}: ${i.message}`);
    throw err;
  }
  return [];
}

function alert(overrides: Partial<VerdictFacts>): VerdictFacts {
  return { source: 'suricata', event_type: 'alert', timestamp: '2026-01-01T00:00:00Z', time_ms: Date.parse('2026-01-01T00:00:00Z'), signature_id: 1, severity: 2, action: 'allowed', src_ip: '198.51.100.7', dest_ip: '192.0.2.1', ...overrides };
}

describe('rule-set validation', () => {
  test('a misspelt operator and an unknown fact are both named, with their paths', () => {
    const issues = issuesOf(ruleSet([rule({ all: [{ fact: 'severity', operator: 'severityAtleast', value: 1 }, { fact: 'sig_id', operator: 'equal', value: 1 }] })]));
    expect(issues).toEqual([
      expect.stringMatching(/^rules\[0\]\.conditions\.all\[0\]\.operator: "severityAtleast" is not an operator; operators are inCidr, /),
      expect.stringMatching(/^rules\[0\]\.conditions\.all\[1\]\.fact: "sig_id" is not a fact; facts are source, /),
    ]);
  });

  test('operator values are checked: a CIDR with host bits, a severity out of range, an undefined allow-list', () => {
    const issues = issuesOf(
      ruleSet([
        rule({
          any: [
            { fact: 'src_ip', operator: 'inCidr', value: ['10.0.0.1/24'] },
            { fact: 'severity', operator: 'severityAtLeast', value: 0 },
            { fact: 'src_ip', operator: 'inAllowList', value: 'mgmt' },
          ],
        }),
      ]),
      new Set(['management']),
    );
    expect(issues).toEqual([
      'rules[0].conditions.any[0].value: "10.0.0.1/24" has host bits set; did you mean 10.0.0.0/24?',
      'rules[0].conditions.any[1].value: needs a Suricata severity 1–255 (1 is the most severe)',
      'rules[0].conditions.any[2].value: names allow-list(s) "mgmt" that the configuration does not define (defined: management; "*" means any)',
    ]);
  });

  test('decisions, windows and names are checked by the schema', () => {
    expect(issuesOf(ruleSet([rule({ all: [{ fact: 'severity', operator: 'equal', value: 1 }] }, { action: 'rate-limit', duration: '10 minutes' })]))).toEqual([
      'rules[0].decision.duration: must be a duration like "90s", "5m", "1h" or "500ms"',
      'rules[0].decision.rateLimitPps: a rate-limit decision needs rateLimitPps',
    ]);
    expect(issuesOf(ruleSet([rule({ all: [{ fact: 'severity', operator: 'equal', value: 1 }] }, { action: 'rate-limit' })]))).toEqual([
      'rules[0].decision.rateLimitPps: a rate-limit decision needs rateLimitPps',
    ]);
    expect(issuesOf(ruleSet([rule({ all: [{ fact: 'window', params: { name: 'nope' }, operator: 'greaterThan', value: 1 }] })]))).toEqual([
      'rules[0].conditions.all[0].params.name: must name a declared window (declared: none)',
    ]);
    expect(issuesOf(ruleSet([rule({ fact: 'severity', operator: 'equal', value: 1 })]))).toEqual([
      'rules[0].conditions: the top level must be exactly one of "all", "any" or "not"',
    ]);
    expect(issuesOf(ruleSet([rule({ all: [] }), rule({ all: [{ fact: 'severity', operator: 'equal', value: 1 }] })]))).toEqual([
      'rules[0].conditions.all: must be a non-empty list of conditions',
      'rules[1].name: duplicate rule "r1"',
    ]);
  });

  test('a file that is not JSON is refused with the file named', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fos1-rules-'));
    writeFileSync(join(dir, 'bad.json'), '{ "name": ');
    expect(() => loadRuleSetFile(join(dir, 'bad.json'))).toThrow(new RegExp(`^invalid rule set ${dir}/bad.json:\\n\\(file\\): is not JSON`));
  });
});

describe('custom operators', () => {
  async function matches(conditions: unknown, facts: VerdictFacts): Promise<boolean> {
    const set = validateRuleSet(ruleSet([rule(conditions, { action: 'notify' })]), 'inline', { allowListNames: new Set(['management', 'dns']) });
    return (await new RuleEvaluator(set, guard, 0).evaluate(facts)).decision !== null;
  }

  test('inCidr / notInCidr test membership in either family; an absent address matches neither', async () => {
    const inDoc = { all: [{ fact: 'src_ip', operator: 'inCidr', value: ['198.51.100.0/24', '2001:db8::/32'] }] };
    expect(await matches(inDoc, alert({ src_ip: '198.51.100.7' }))).toBe(true);
    expect(await matches(inDoc, alert({ src_ip: '2001:db8::1' }))).toBe(true);
    expect(await matches(inDoc, alert({ src_ip: '198.51.101.7' }))).toBe(false);
    const notIn = { all: [{ fact: 'dest_ip', operator: 'notInCidr', value: '192.0.2.0/24' }] };
    expect(await matches(notIn, alert({ dest_ip: '203.0.113.9' }))).toBe(true);
    expect(await matches(notIn, alert({ dest_ip: '192.0.2.200' }))).toBe(false);
    expect(await matches(notIn, alert({ dest_ip: undefined }))).toBe(false);
  });

  test('inAllowList names lists (or "*"); severityAtLeast counts down from 1', async () => {
    expect(await matches({ all: [{ fact: 'src_ip', operator: 'inAllowList', value: 'dns' }] }, alert({ src_ip: '10.0.2.3' }))).toBe(true);
    expect(await matches({ all: [{ fact: 'src_ip', operator: 'inAllowList', value: 'management' }] }, alert({ src_ip: '10.0.2.3' }))).toBe(false);
    expect(await matches({ all: [{ fact: 'src_ip', operator: 'inAllowList', value: '*' }] }, alert({ src_ip: '2001:db8:53::9' }))).toBe(true);
    expect(await matches({ all: [{ fact: 'src_ip', operator: 'notInAllowList', value: '*' }] }, alert({ src_ip: '10.0.0.9' }))).toBe(false);
    const sev2 = { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 2 }] };
    expect(await matches(sev2, alert({ severity: 1 }))).toBe(true);
    expect(await matches(sev2, alert({ severity: 2 }))).toBe(true);
    expect(await matches(sev2, alert({ severity: 3 }))).toBe(false);
  });
});

describe('sliding windows', () => {
  test('count per source over the window, by event time, forgetting what slid out', () => {
    const windows = new SlidingWindows([{ name: 'w', groupBy: 'src_ip', windowMs: 60_000, where: { event_type: 'alert' } }]);
    const at = (s: number, src = '198.51.100.7', type = 'alert') => windows.record(alert({ src_ip: src, time_ms: s * 1000, event_type: type })).w;
    expect([at(0), at(10), at(20), at(20, '203.0.113.1'), at(30, '198.51.100.7', 'dns')]).toEqual([1, 2, 3, 1, 0]);
    // 0 s slid out at 61 s; 10 s and 20 s are still inside.
    expect(at(61)).toBe(3);
    expect(at(200)).toBe(1);
  });

  test('a flood of distinct sources is bounded by maxGroups', () => {
    const windows = new SlidingWindows([{ name: 'w', groupBy: 'src_ip', windowMs: 3_600_000, where: {} }], { maxGroups: 100 });
    for (let i = 0; i < 1000; i++) windows.record(alert({ src_ip: `10.9.${i >> 8}.${i & 255}`, time_ms: i }));
    expect(windows.sizes().w).toBeLessThanOrEqual(100);
  });
});

describe('priorities and the decision cache', () => {
  test('the highest-priority match decides; the cache gives the same answer without re-running the engine', async () => {
    const set = validateRuleSet(
      ruleSet([
        rule({ all: [{ fact: 'severity', operator: 'severityAtLeast', value: 3 }] }, { action: 'notify' }, { name: 'low', priority: 1 }),
        rule({ all: [{ fact: 'src_ip', operator: 'inCidr', value: '198.51.100.0/24' }] }, { action: 'allow' }, { name: 'exempt', priority: 90 }),
        rule({ all: [{ fact: 'severity', operator: 'severityAtLeast', value: 2 }] }, { action: 'block', duration: '2h' }, { name: 'block', priority: 50 }),
      ]),
    );
    const evaluator = new RuleEvaluator(set, guard);
    expect(await evaluator.evaluate(alert({ src_ip: '198.51.100.7', severity: 1 }))).toMatchObject({ decision: { action: 'allow', rule: 'exempt' }, matched: ['exempt', 'block', 'low'] });
    const first = await evaluator.evaluate(alert({ src_ip: '203.0.113.7', severity: 2 }));
    const second = await evaluator.evaluate(alert({ src_ip: '203.0.113.7', severity: 2 }));
    expect(first.decision).toMatchObject({ action: 'block', target: '203.0.113.7/32', durationMs: 7_200_000 });
    expect(second).toEqual(first);
    expect(evaluator.stats).toEqual({ engineRuns: 2, cacheHits: 1 });
  });
});

describe('escalation, targets and workflow ids', () => {
  test('the n-th offence lasts base × factor^(n-1), capped, never below the base', () => {
    const esc = { factor: 2, maxDurationMs: 5 * 3_600_000 };
    expect([1, 2, 3, 4, 5].map((n) => escalatedDuration(3_600_000, esc, n) / 3_600_000)).toEqual([1, 2, 4, 5, 5]);
    expect(escalatedDuration(3_600_000, { factor: 2, maxDurationMs: 60_000 }, 1)).toBe(3_600_000);
  });

  test('targets are prefixes with host bits cleared; ids are stable per target', () => {
    expect(prefixOf('198.51.100.77', 24)).toBe('198.51.100.0/24');
    expect(prefixOf('2001:db8::dead:beef', 64)).toBe('2001:db8::/64');
    expect(prefixOf('not an ip', 32)).toBeNull();
    expect(enforcementWorkflowId('2001:db8::/64')).toBe('enforce-2001-db8--_64');
    expect(enforcementWorkflowId('198.51.100.7/32')).toBe('enforce-198.51.100.7_32');
  });
});

describe('lock-out guard', () => {
  test('refuses targets overlapping an allow-list either way, and prefixes wider than the bound', () => {
    expect(guard.checkTarget('10.0.0.5/32')).toEqual({ code: 'allow-listed', reason: '10.0.0.5/32 overlaps 10.0.0.0/24 on allow-list "management"' });
    expect(guard.checkTarget('10.0.2.0/24')).toEqual({ code: 'allow-listed', reason: '10.0.2.0/24 overlaps 10.0.2.3/32 on allow-list "dns"' });
    expect(guard.checkTarget('203.0.112.0/23')).toEqual({ code: 'prefix-too-short', reason: '203.0.112.0/23 is wider than /24, the shortest IPv4 prefix automated enforcement may block' });
    expect(guard.checkTarget('2001:db8:1::/48')?.code).toBe('prefix-too-short');
    expect(guard.checkTarget('203.0.113.0/24')).toBeNull();
    expect(guard.checkTarget('2001:db8:1::/64')).toBeNull();
  });

  test('caps on active blocks and on new blocks per minute', () => {
    const capped = new EnforcementGuard(guardConfigSchema.parse({ maxActiveBlocks: 2, maxNewBlocksPerMinute: 3 }));
    expect(capped.checkCaps(2, [], 0)?.code).toBe('too-many-active-blocks');
    expect(capped.checkCaps(1, [1000, 2000, 3000], 30_000)).toEqual({ code: 'rate-limited', reason: '3 new automated blocks in the last minute; the cap is 3/min' });
    expect(capped.checkCaps(1, [1000, 2000, 3000], 61_500)).toBeNull();
  });

  test('bad guard configuration names the field', () => {
    const parsed = guardConfigSchema.safeParse({ allowLists: { management: ['10.0.0.1/8'] }, minPrefixLengthV4: 40 });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      'allowLists.management.0: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?',
      'minPrefixLengthV4: Too big: expected number to be <=32',
    ]);
  });
});
