/**
 * How long the node's network steps take to apply and to roll back, in a throwaway
 * network namespace, with the contenders side by side in one run:
 *
 *   policy rules:  one `ip rule` process per rule (how fos1 first applied them)
 *                  vs one `ip -batch -` per family (RuleTable.sync, what ships)
 *   routes:        RuleTable's sibling RouteTable.sync (one `ip -batch -`), for scale
 *   NAT:           NatTable.sync (one nft JSON transaction), for scale
 *
 * Each cell: apply N items to an empty namespace, then roll back to empty; median of
 * `--rounds` rounds. Usage:
 *
 *   npx tsx bench/network/apply.ts --sizes 100,500 --rounds 3 --json bench/network/results/apply.json
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createIpRunner, type IpRunner } from '../../activities/system/ip-runner';
import { NatTable } from '../../activities/system/nat-table';
import { createNftRunner } from '../../activities/system/nft-runner';
import { RouteTable } from '../../activities/system/route-table';
import { RuleTable } from '../../activities/system/rule-table';
import { nodeStateSchema, type NodeState, type PolicyRule } from '../../model/node-state';
import { planRules } from '../../model/plan';

const PROTOCOL = 241;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : (process.argv[i + 1] ?? fallback);
}

/** The per-operation contender: one `ip rule` process per rule, as fos1 first did it. */
async function rulesOnePerProcess(ip: IpRunner, table: RuleTable, desired: PolicyRule[]): Promise<void> {
  for (const op of planRules(await table.read(), desired)) {
    const r = op.rule;
    const args = [`-${r.family}`, 'rule', op.action === 'add' ? 'add' : 'del', 'priority', String(r.priority)];
    if (r.from) args.push('from', r.from);
    args.push('table', String(r.table), 'protocol', String(PROTOCOL));
    await ip.run(args);
  }
}

function state(n: number): NodeState {
  const prefix = (i: number) => `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`;
  return nodeStateSchema.parse({
    routes: Array.from({ length: n }, (_, i) => ({ destination: prefix(i), gateway: '10.0.1.2', table: 100 })),
    rules: Array.from({ length: n }, (_, i) => ({ priority: 1000 + i, from: prefix(i), table: 100 })),
    nat: { sourceNat: Array.from({ length: n }, (_, i) => ({ source: prefix(i), outInterface: 'b1' })) },
  });
}

async function main(): Promise<void> {
  const sizes = arg('sizes', '100,500').split(',').map(Number);
  const rounds = Number(arg('rounds', '3'));
  const jsonPath = arg('json', '');
  const ns = `fos1bench-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const sh = (...a: string[]) => execFileSync('ip', ['-n', ns, ...a]);
    sh('link', 'add', 'b0', 'type', 'veth', 'peer', 'name', 'b1');
    sh('link', 'set', 'b0', 'up');
    sh('link', 'set', 'b1', 'up');
    sh('address', 'add', '10.0.0.1/16', 'dev', 'b0');
    const ip = createIpRunner({ netns: ns });
    const rules = new RuleTable(ip, PROTOCOL);
    const routes = new RouteTable(ip, PROTOCOL);
    const nat = new NatTable(createNftRunner({ netns: ns }), 'fos1bench');

    const contenders: { name: string; apply: (s: NodeState) => Promise<unknown>; clear: () => Promise<unknown> }[] = [
      { name: 'rules: one ip process per rule', apply: (s) => rulesOnePerProcess(ip, rules, s.rules), clear: () => rulesOnePerProcess(ip, rules, []) },
      { name: 'rules: ip -batch per family (shipped)', apply: (s) => rules.sync(s.rules), clear: () => rules.sync([]) },
      { name: 'routes: ip -batch (shipped)', apply: (s) => routes.sync(s.routes), clear: () => routes.sync([]) },
      { name: 'nat: one nft JSON transaction (shipped)', apply: (s) => nat.sync(s.nat), clear: () => nat.sync({ sourceNat: [], portForwards: [] }) },
    ];
    const results: { size: number; contender: string; applyMs: number; rollbackMs: number }[] = [];
    for (const size of sizes) {
      const s = state(size);
      for (const c of contenders) {
        const apply: number[] = [];
        const rollback: number[] = [];
        for (let r = 0; r < rounds; r++) {
          let t = process.hrtime.bigint();
          await c.apply(s);
          apply.push(Number(process.hrtime.bigint() - t) / 1e6);
          t = process.hrtime.bigint();
          await c.clear();
          rollback.push(Number(process.hrtime.bigint() - t) / 1e6);
        }
        results.push({ size, contender: c.name, applyMs: median(apply), rollbackMs: median(rollback) });
      }
    }
    const load = loadavg().map((l) => l.toFixed(2)).join(' ');
    console.log(`network apply / rollback in a namespace (median of ${rounds} rounds; load average ${load})`);
    console.log('| N | contender | apply ms | rollback ms | apply vs one-per-process |');
    console.log('| ---: | --- | ---: | ---: | ---: |');
    for (const r of results) {
      const base = results.find((b) => b.size === r.size && b.contender.startsWith('rules: one'));
      const ratio = r.contender.startsWith('rules') && base ? `${(base.applyMs / r.applyMs).toFixed(1)}× faster` : '';
      console.log(`| ${r.size} | ${r.contender} | ${r.applyMs.toFixed(1)} | ${r.rollbackMs.toFixed(1)} | ${r.contender.startsWith('rules: one') ? '1.0' : ratio} |`);
    }
    if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ rounds, loadAverage: load, results }, null, 2) + '\n');
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
