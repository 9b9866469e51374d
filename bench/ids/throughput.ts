/**
 * EVE events per second through parse + rules on one core.
 *
 *   taskset -c 1 npx tsx bench/ids/throughput.ts [--seconds 2] [--rounds 3] [--json bench/ids/results/throughput.json]
 *
 * Every cell runs once per round, rounds interleave the cells, and the median round is
 * reported: on a shared machine, load that comes and goes then hits every contender alike.
 *
 * Contenders, run side by side in one process on the same inputs:
 *   parse only                 — rules/eve.ts (JSON.parse + zod for the fields rules read)
 *   parse + rules (cache)      — the ingest path: windows, json-rules-engine, decision cache
 *   parse + rules (no cache)   — json-rules-engine runs for every event (worst case: no repeats)
 * Inputs:
 *   samples  — the 58 shared EVE lines (../shared/data/suricata/eve beside the repository), repeated
 *   alerts   — eve-alerts.log only (21 alerts + 1 tls), repeated
 *   alerts, 65,536 sources — the alert lines with src_ip rewritten to distinct addresses
 *                            (every event a new window group; the cache key does not
 *                            contain src_ip for the default set)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { parseEveLine } from '../../rules/eve';
import { RuleEvaluator } from '../../rules/evaluator';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { loadRuleSetFile } from '../../rules/rule-set';
import { sharedDataDir } from '../../scripts/paths';

const EVE_DIR = join(sharedDataDir(), 'suricata', 'eve');
const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf('--seconds') + 1] ?? 2) || 2;
const rounds = Number(args[args.indexOf('--rounds') + 1] ?? 3) || 3;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;

const read = (f: string) => readFileSync(join(EVE_DIR, f), 'utf8').split('\n').filter((l) => l !== '');
const samples = ['eve-small.log', 'eve-alerts.log', 'eve-dns-4.1.4.log'].flatMap(read);
const alerts = read('eve-alerts.log');
const manySources = Array.from({ length: 65_536 }, (_, i) => alerts[i % alerts.length]!.replace(/"src_ip":"[^"]+"/, `"src_ip":"10.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}"`));

const guard = new EnforcementGuard(guardConfigSchema.parse({}));
const ruleSet = loadRuleSetFile(DEFAULT_RULES_FILE);

type Contender = { name: string; make: () => (line: string) => Promise<unknown> | unknown };
const contenders: Contender[] = [
  { name: 'parse only', make: () => (line: string) => parseEveLine(line) },
  {
    name: 'parse + rules (cache)',
    make: () => {
      const evaluator = new RuleEvaluator(ruleSet, guard);
      return async (line: string) => {
        const p = parseEveLine(line);
        if (p.ok) await evaluator.evaluate(p.facts);
      };
    },
  },
  {
    name: 'parse + rules (no cache)',
    make: () => {
      const evaluator = new RuleEvaluator(ruleSet, guard, 0);
      return async (line: string) => {
        const p = parseEveLine(line);
        if (p.ok) await evaluator.evaluate(p.facts);
      };
    },
  },
];

async function measure(lines: string[], make: Contender['make']): Promise<number> {
  const run = make();
  // Warm-up: let V8 optimise before the clock starts.
  for (let i = 0; i < 20_000; i++) await run(lines[i % lines.length]!);
  let n = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(seconds * 1e9);
  while (process.hrtime.bigint() - start < budget) {
    for (let k = 0; k < 1000; k++) await run(lines[n++ % lines.length]!);
  }
  return n / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function main(): Promise<void> {
  const inputs: [string, string[]][] = [
    ['samples (58 lines, 22 alerts)', samples],
    ['alerts (eve-alerts.log)', alerts],
    ['alerts, 65,536 sources', manySources],
  ];
  const runs = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    for (const [input, lines] of inputs) {
      for (const c of contenders) {
        const key = `${input}\u0000${c.name}`;
        runs.set(key, [...(runs.get(key) ?? []), await measure(lines, c.make)]);
      }
    }
  }
  const rows = [...runs].map(([key, values]) => {
    const [input, contender] = key.split('\u0000') as [string, string];
    const sorted = [...values].sort((a, b) => a - b);
    return { input, contender, eventsPerSecond: Math.round(sorted[Math.floor(sorted.length / 2)]!), rounds: values.map(Math.round) };
  });
  const meta = { node: process.version, seconds, rounds, loadavg: loadavg().map((l) => Number(l.toFixed(2))), at: new Date().toISOString() };
  console.log(`EVE parse + rules, one core (median of ${rounds} rounds of ${seconds}s per cell; load average ${meta.loadavg.join(' ')})`);
  console.log('| input | contender | events/s | vs parse only |');
  console.log('| --- | --- | ---: | ---: |');
  for (const r of rows) {
    const base = rows.find((x) => x.input === r.input && x.contender === 'parse only')!.eventsPerSecond;
    console.log(`| ${r.input} | ${r.contender} | ${r.eventsPerSecond.toLocaleString('en')} | ${(r.eventsPerSecond / base).toFixed(2)} |`);
  }
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ meta, rows }, null, 2)}\n`);
}

void main();
