/**
 * The rollout strategy's validation (errors name the field and the rule) and the pure wave
 * planner (every target in exactly one wave, order stable, deterministic).
 */
import { validateChangeRequest } from '../../model/change-request';
import type { InventoryNode } from '../../model/inventory';
import { defaultStrategy, planWaves, rolloutStrategySchema, type RolloutStrategyInput } from '../../model/rollout-strategy';

const nodes = (n: number, labels: (i: number) => Record<string, string> = () => ({})): InventoryNode[] =>
  Array.from({ length: n }, (_, i) => ({ name: `r${i + 1}`, labels: labels(i) }));

function plan(strategy: RolloutStrategyInput, targets: InventoryNode[]) {
  const parsed = rolloutStrategySchema.parse(strategy);
  const result = planWaves(parsed, targets);
  if (!result.ok) throw new Error(result.issues.map((i) => `${i.field}: ${i.message}`).join('\n'));
  return result.waves;
}

const base = { id: 'c1', author: 'alice', reason: 'test', patch: { blocklist: { upsert: [{ cidr: '192.0.2.1', reason: 'x' }] } } };

describe('wave planning', () => {
  test('explicit nodes, a selector, a percentage of the remaining, then the rest: each target once, in target order', () => {
    const targets = nodes(10, (i) => ({ site: i % 2 === 0 ? 'ams' : 'fra' }));
    const waves = plan(
      { waves: [{ name: 'canary', nodes: ['r4'] }, { selector: { matchLabels: { site: 'ams' } }, parallelism: 2 }, { percent: 50 }, {}] },
      targets,
    );
    expect(waves.map((w) => [w.name, w.nodes])).toEqual([
      ['canary', ['r4']],
      ['wave-2', ['r1', 'r3', 'r5', 'r7', 'r9']],
      ['wave-3', ['r2', 'r6']], // 50% of the 4 remaining
      ['wave-4', ['r8', 'r10']],
    ]);
    expect(waves[1]?.concurrency).toBe(2);
    const all = waves.flatMap((w) => w.nodes);
    expect(new Set(all).size).toBe(10);
    expect(all.sort()).toEqual(targets.map((t) => t.name).sort());
  });

  test('a percentage rounds up while nodes remain, so a small share of a small fleet still takes one', () => {
    expect(plan({ waves: [{ percent: 1 }, {}] }, nodes(3)).map((w) => w.nodes)).toEqual([['r1'], ['r2', 'r3']]);
    expect(plan({ waves: [{ percent: 100 }] }, nodes(3)).map((w) => w.nodes)).toEqual([['r1', 'r2', 'r3']]);
  });

  test('parallelism is capped by maxUnavailable and by the wave size; a selector may leave a wave empty', () => {
    const waves = plan({ waves: [{ selector: { matchLabels: { role: 'edge' } } }, { parallelism: 10, maxUnavailable: 3 }] }, nodes(5));
    expect(waves[0]).toMatchObject({ nodes: [], concurrency: 1 });
    expect(waves[1]).toMatchObject({ nodes: ['r1', 'r2', 'r3', 'r4', 'r5'], concurrency: 3 });
  });

  test('the same input plans the same waves', () => {
    const strategy = { waves: [{ size: 1 }, { percent: 33 }, { percent: 50 }, {}] };
    expect(plan(strategy, nodes(100))).toEqual(plan(strategy, nodes(100)));
    expect(plan(strategy, nodes(100)).map((w) => w.nodes.length)).toEqual([1, 33, 33, 33]);
  });

  test('targets left in no wave, strangers and nodes already taken are refused, naming the field', () => {
    const parsed = rolloutStrategySchema.parse({ waves: [{ nodes: ['r1', 'zz'] }, { nodes: ['r1'] }] });
    const result = planWaves(parsed, nodes(3));
    expect(result.ok).toBe(false);
    expect(!result.ok && result.issues.map((i) => `${i.field}: ${i.message}`)).toEqual([
      'strategy.waves[0].nodes[1]: "zz" is not one of the change\'s targets',
      'strategy.waves[1].nodes[0]: "r1" is already in wave "wave-1"',
      expect.stringMatching(/^strategy\.waves: leave 2 target\(s\) in no wave \(r2, r3\)/),
    ]);
  });

  test('the default strategy: one canary, bake, half of the rest, bake, then the rest; one wave for one node', () => {
    const waves = plan(defaultStrategy(10, 30), nodes(10));
    expect(waves.map((w) => [w.name, w.nodes.length, w.bakeSeconds])).toEqual([
      ['canary', 1, 30],
      ['half', 5, 30],
      ['rest', 4, 0],
    ]);
    expect(plan(defaultStrategy(1), nodes(1)).map((w) => [w.name, w.nodes, w.bakeSeconds])).toEqual([['all', ['r1'], 0]]);
    expect(plan(defaultStrategy(2, 5), nodes(2)).map((w) => [w.name, w.nodes, w.bakeSeconds])).toEqual([
      ['canary', ['r1'], 5],
      ['rest', ['r2'], 0],
    ]);
  });
});

describe('strategy validation in the change request', () => {
  const issues = (input: unknown) => {
    const result = validateChangeRequest(input, 0);
    return result.ok ? [] : result.issues.map((i) => `${i.field}: ${i.message}`);
  };

  test('a wave naming an unknown gate, two ways to pick nodes, a bad percentage', () => {
    expect(issues({ ...base, targets: ['a', 'b'], strategy: { waves: [{ nodes: ['a'], percent: 10 }, { percent: 0, gates: ['ping'] }] } })).toEqual([
      'strategy.waves[0].percent: give at most one of nodes, selector, percent or size (this wave has nodes and percent)',
      'strategy.waves[1].percent: must be more than 0',
      'strategy.waves[1].gates[0]: names no gate of strategy.gates (it defines none)',
    ]);
  });

  test('a gate spec is checked field by field, and onGateFailure has two values', () => {
    expect(
      issues({
        ...base,
        targets: ['a'],
        strategy: { waves: [{ gates: ['ping'] }], gates: { ping: { kind: 'reachability', targets: [{ protocol: 'tcp', address: '10.0.0.1' }] } }, onGateFailure: 'ignore' },
      }),
    ).toEqual(['strategy.gates.ping.targets[0].port: is required for a tcp probe', 'strategy.onGateFailure: must be "rollback" or "pause"']);
  });

  test('with named targets, a strategy that leaves one out is refused before anything runs', () => {
    expect(issues({ ...base, targets: ['a', 'b', 'c'], strategy: { waves: [{ nodes: ['a'] }, { nodes: ['b'] }] } })).toEqual([
      expect.stringMatching(/^strategy\.waves: leave 1 target\(s\) in no wave \(c\)/),
    ]);
  });

  test('exactly one of targets and targetSelector', () => {
    expect(issues({ ...base })).toEqual(['targets: give exactly one of "targets" (node names) or "targetSelector" (labels over the inventory)']);
    expect(issues({ ...base, targets: ['a'], targetSelector: { matchLabels: { site: 'ams' } } })).toHaveLength(1);
    const ok = validateChangeRequest({ ...base, targetSelector: { matchLabels: { site: 'ams' } }, strategy: { waves: [{ selector: { matchLabels: { zone: 'a' } } }, {}] } }, 0);
    expect(ok.ok).toBe(true);
  });

  test('duplicate wave names are refused; defaults fill in', () => {
    expect(issues({ ...base, targets: ['a', 'b'], strategy: { waves: [{ name: 'x', size: 1 }, { name: 'x' }] } })).toEqual(['strategy.waves[1].name: "x" is also the name of waves[0]']);
    const ok = validateChangeRequest({ ...base, targets: ['a'], strategy: { waves: [{}] } }, 0);
    expect(ok.ok && ok.request.strategy).toEqual({ waves: [{ bakeSeconds: 0, gates: [] }], gates: {}, onGateFailure: 'rollback' });
    expect(ok.ok && ok.request.options.defaultBakeSeconds).toBe(30);
  });
});
