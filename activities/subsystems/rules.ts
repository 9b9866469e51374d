/**
 * fos1's policy routing rules (`ip rule`, tagged with fos1's protocol) as a subsystem:
 * the smallest one, and the worked example of docs/adding-a-subsystem.md.
 */
import { patchRules, planRules } from '../../model/plan';
import type { RuleTable } from '../system/rule-table';
import { resolveTable, tableSubsystem } from './table';

export function createRulesSubsystem(rules: RuleTable) {
  return tableSubsystem({
    name: 'rules',
    read: () => rules.read(),
    resolve: (observed, intent) => resolveTable(observed, intent, patchRules),
    plan: planRules,
    sync: (desired) => rules.sync(desired),
    describe: (observed) => `${observed.length} rules`,
  });
}
