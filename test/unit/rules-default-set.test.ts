/**
 * The default rule set makes exactly the decisions rules/README.md documents on the
 * shared Suricata EVE samples (real sensor output, Suricata 4.x–6.x).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuleEvaluator } from '../../rules/evaluator';
import { parseEveLine } from '../../rules/eve';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { loadRuleSetFile } from '../../rules/rule-set';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { describePrivileged } from '../helpers/capabilities';
import { sharedData } from '../helpers/shared-data';

const EVE_DIR = sharedData('suricata', 'eve');

/** file:line → action target (rule). The same table is in rules/README.md. */
const DOCUMENTED: Record<string, string> = {
  'eve-small.log:2': 'block 192.168.86.85/32 (block-severity-1)',
  'eve-alerts.log:1': 'notify 192.168.1.146/32 (notify-other-alerts)',
  'eve-alerts.log:2': 'notify 192.168.1.146/32 (notify-other-alerts)',
  'eve-alerts.log:3': 'notify 192.168.1.146/32 (notify-other-alerts)',
  'eve-alerts.log:4': 'notify 192.168.1.146/32 (notify-other-alerts)',
  'eve-alerts.log:5': 'quarantine 192.168.1.146/32 (quarantine-repeated-information-leak)',
  'eve-alerts.log:6': 'notify 192.168.1.146/32 (notify-other-alerts)',
  ...Object.fromEntries(Array.from({ length: 14 }, (_, i) => [`eve-alerts.log:${i + 7}`, 'notify 192.168.1.146/32 (notify-other-alerts)'])),
  'eve-alerts.log:22': 'rate-limit 10.137.3.54/32 (rate-limit-tls-on-unusual-port)',
};

async function decide(files: string[]): Promise<{ decisions: Record<string, string>; accepted: number; rejected: number }> {
  const ruleSet = loadRuleSetFile(DEFAULT_RULES_FILE);
  const evaluator = new RuleEvaluator(ruleSet, new EnforcementGuard(guardConfigSchema.parse({})));
  const decisions: Record<string, string> = {};
  let accepted = 0;
  let rejected = 0;
  for (const file of files) {
    const lines = readFileSync(join(EVE_DIR, file), 'utf8').split('\n').filter((l) => l !== '');
    for (const [index, line] of lines.entries()) {
      const parsed = parseEveLine(line);
      if (!parsed.ok) {
        rejected++;
        continue;
      }
      accepted++;
      const { decision } = await evaluator.evaluate(parsed.facts);
      if (decision) decisions[`${file}:${index + 1}`] = `${decision.action} ${decision.target} (${decision.rule})`;
    }
  }
  return { decisions, accepted, rejected };
}

describePrivileged('default rule set on the shared EVE samples', ['shared-data'], () => {
  test('makes exactly the documented decisions, and none on the other 37 lines', async () => {
    const { decisions, accepted, rejected } = await decide(['eve-small.log', 'eve-alerts.log', 'eve-dns-4.1.4.log']);
    expect(decisions).toEqual(DOCUMENTED);
    // Every one of the 58 lines is accepted, including the 20 that the 8.x schema rejects.
    expect({ accepted, rejected }).toEqual({ accepted: 58, rejected: 0 });
  });

  test('the documentation lists the same decisions as the test', () => {
    const readme = readFileSync(join(__dirname, '../../rules/README.md'), 'utf8');
    for (const [where, what] of Object.entries(DOCUMENTED)) {
      const [file, line] = where.split(':');
      const [action, target] = what.split(' ');
      // Runs of lines are documented as ranges (7–20); check the single lines and the range rows.
      const row = readme.split('\n').find((l) => l.includes(`| ${file} |`) && lineCovered(l, Number(line)));
      expect({ where, row: row !== undefined && row.includes(action!) && row.includes(target!) }).toEqual({ where, row: true });
    }
  });

  test('a block decision carries escalation and memory from the rule set', async () => {
    const ruleSet = loadRuleSetFile(DEFAULT_RULES_FILE);
    const evaluator = new RuleEvaluator(ruleSet, new EnforcementGuard(guardConfigSchema.parse({})));
    const line = readFileSync(join(EVE_DIR, 'eve-small.log'), 'utf8').split('\n')[1]!;
    const parsed = parseEveLine(line);
    if (!parsed.ok) throw new Error(parsed.reason);
    const { decision, matched } = await evaluator.evaluate(parsed.facts);
    expect(matched).toEqual(['block-severity-1', 'notify-other-alerts']);
    expect(decision).toMatchObject({
      action: 'block',
      durationMs: 3_600_000,
      escalation: { factor: 2, maxDurationMs: 168 * 3_600_000 },
      memoryMs: 24 * 3_600_000,
      evidence: { source: 'suricata', eventType: 'alert', signatureId: 2024833, flowId: '904992230150281', srcIp: '192.168.86.85' },
    });
  });
});

/** True when a README row's line column (`2`, `7–20`, `1–4, 6`) covers `line`. */
function lineCovered(row: string, line: number): boolean {
  const cell = row.split('|')[2]?.trim() ?? '';
  return cell.split(',').some((part) => {
    const [from, to] = part.trim().split('–').map(Number);
    return to === undefined ? from === line : line >= from! && line <= to;
  });
}
