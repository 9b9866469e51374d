/**
 * DPIProfile → rules (rules/dpi-profile.ts) and the reloadable rule set (ingest/rule-source.ts):
 * what each application becomes, what a bad profile is told, and that a refused change
 * leaves the rules in force.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { compileLocalNetworks } from '../../model/local-networks';
import { translateDpiProfile } from '../../rules/dpi-profile';
import type { RuleEvaluator } from '../../rules/evaluator';
import type { VerdictFacts } from '../../rules/facts';
import { RuleSource } from '../../ingest/rule-source';

const REF = { namespace: 'edge', name: 'no-p2p' };
const LAN = compileLocalNetworks({ prefixes: ['10.91.1.0/24'] });

function flow(protocol: string, src: string, dest: string, confidence = 3): VerdictFacts {
  const [master, app] = protocol.split('.') as [string, string | undefined];
  return { source: 'ndpi', event_type: 'ndpi', timestamp: '2026-01-01T00:00:00Z', time_ms: 0, src_ip: src, dest_ip: dest, ndpi_protocol: protocol, ndpi_master_protocol: master, ndpi_app_protocol: app ?? master, ndpi_confidence_level: confidence };
}

describe('translateDpiProfile', () => {
  test('each application becomes one rule; block and rate-limit aim at the remote endpoint', () => {
    const t = translateDpiProfile(REF, { applications: [{ protocol: 'BitTorrent', action: 'block', blockFor: '2h' }, { protocol: 'YouTube', action: 'rate-limit', rateLimitKbps: 1200 }, { protocol: 'DNS', action: 'allow' }, { protocol: 'Tor', action: 'log' }] });
    if (!t.ok) throw new Error(JSON.stringify(t.issues));
    expect(t.rules.map((r) => [r.decision.action, r.decision.target, r.priority])).toEqual([
      ['block', 'remote', 640],
      ['rate-limit', 'remote', 620],
      ['allow', 'src_ip', 600],
      ['notify', 'src_ip', 610],
    ]);
    expect(t.rules[0]!.decision.duration).toBe(2 * 3_600_000);
    // 1200 kbps = 150,000 bytes/s = 100 full-size packets/s.
    expect(t.rules[1]!.decision.rateLimitPps).toBe(100);
    expect(t.rules[0]!.name).toMatch(/^dpi-[a-z0-9]+-0-bittorrent$/);
  });

  test('defaultAction block adds a catch-all below the listed applications; allow adds none', () => {
    const t = translateDpiProfile(REF, { defaultAction: 'block', applications: [{ protocol: 'DNS', action: 'allow' }] });
    expect(t.ok && t.rules.map((r) => `${r.decision.action}@${r.priority}`)).toEqual(['allow@600', 'block@504']);
    expect(translateDpiProfile(REF, {})).toEqual({ ok: true, rules: [] });
  });

  test.each([
    [{ applications: [{ protocol: 'BitTorrent', action: 'block', blockFor: '0s' }] }, 'spec.applications[0].blockFor', 'must be at least 1s'],
    [{ applications: [{ protocol: 'BitTorrent', action: 'block' }, { protocol: 'BitTorrent', action: 'allow' }] }, 'spec.applications[1].protocol', 'BitTorrent is listed twice (also at spec.applications[0])'],
    [{ applications: [{ protocol: 'YouTube', action: 'rate-limit' }] }, 'spec.applications[0].rateLimitKbps', 'a rate-limit application needs rateLimitKbps'],
    [{ applications: [{ protocol: 'DNS', action: 'allow', blockFor: '1h' }] }, 'spec.applications[0].blockFor', 'applies to actions block and rate-limit only'],
    [{ applications: [{ protocol: 'Bit Torrent', action: 'block' }] }, 'spec.applications[0].protocol', 'must be an nDPI protocol name'],
    [{ minConfidence: 'certain' }, 'spec.minConfidence', ''],
  ])('a bad profile is refused naming the field and the rule: %j', (spec, field, message) => {
    const t = translateDpiProfile(REF, spec);
    expect(t.ok).toBe(false);
    if (!t.ok) expect(t.issues).toEqual(expect.arrayContaining([expect.objectContaining({ field, message: expect.stringContaining(message) })]));
  });
});

describe('RuleSource', () => {
  let dir: string;
  let source: RuleSource;
  let swapped: RuleEvaluator[];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-rules-'));
    writeFileSync(join(dir, 'base.json'), JSON.stringify({ name: 'base', rules: [{ name: 'notify-ndpi', description: 'every flow', eventTypes: ['ndpi'], conditions: { all: [{ fact: 'source', operator: 'equal', value: 'ndpi' }] }, decision: { action: 'notify' } }] }));
    swapped = [];
    source = new RuleSource({ baseFile: join(dir, 'base.json'), guard: new EnforcementGuard(guardConfigSchema.parse({})), allowListNames: new Set(), context: { localNetworks: () => LAN }, onReload: (e) => swapped.push(e), logger: pino({ level: 'silent' }), watchFile: false });
  });
  afterEach(() => {
    source.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a profile's rules are swapped in, aim at the remote side whatever its position, and go with the profile", async () => {
    const t = translateDpiProfile(REF, { applications: [{ protocol: 'BitTorrent', action: 'block' }] });
    if (!t.ok) throw new Error('translation');
    expect(source.setProfile('edge/no-p2p', t.rules).ok).toBe(true);
    expect(swapped).toHaveLength(1);
    const out = await source.evaluator.evaluate(flow('BitTorrent', '10.91.1.2', '198.51.100.7'));
    expect(out.decision).toMatchObject({ action: 'block', target: '198.51.100.7/32' });
    expect((await source.evaluator.evaluate(flow('BitTorrent', '198.51.100.8', '10.91.1.2'))).decision).toMatchObject({ target: '198.51.100.8/32' });
    const lan = await source.evaluator.evaluate(flow('BitTorrent', '10.91.1.2', '10.91.1.3'));
    expect(lan).toMatchObject({ decision: null, withheld: { reason: 'local-to-local' } });
    // Below minConfidence (medium): a guess by port decides nothing of the profile's.
    expect((await source.evaluator.evaluate(flow('BitTorrent', '10.91.1.2', '198.51.100.7', 1))).decision).toMatchObject({ action: 'notify', rule: 'notify-ndpi' });
    source.setProfile('edge/no-p2p', null);
    expect((await source.evaluator.evaluate(flow('BitTorrent', '10.91.1.2', '198.51.100.7'))).decision).toMatchObject({ action: 'notify' });
  });

  test('a bad base file on reload keeps the rules in force', () => {
    const before = source.evaluator;
    writeFileSync(join(dir, 'base.json'), '{"name": "base", "rules": []}');
    const change = source.reloadFile();
    expect(change).toMatchObject({ ok: false, issues: [{ field: 'rules', message: 'a rule set needs at least one rule' }] });
    expect(source.evaluator).toBe(before);
  });
});
