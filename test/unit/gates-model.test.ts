/**
 * The gate model: spec validation (errors name the field), Argo Rollouts' analysis
 * semantics, and the datapath judgement against a baseline.
 */
import { analyse, compare, DROP_REASONS, gatesSchema, gateVerdict, judgeDatapath, parseGateSpec, VERDICT_MEASUREMENTS_KEPT, type DatapathBaseline, type Measurement, type MeasurementResult } from '../../model/gates';

const m = (...results: MeasurementResult[]) => results.map((result, i) => ({ at: new Date(i * 1000).toISOString(), result, detail: result }) satisfies Measurement);

describe('analyse (Argo Rollouts semantics)', () => {
  const spec = { count: 3, failureLimit: 0, inconclusiveLimit: 0 };

  it('is running until count measurements are in, then success', () => {
    expect(analyse(spec, [])).toBe('running');
    expect(analyse(spec, m('success', 'success'))).toBe('running');
    expect(analyse(spec, m('success', 'success', 'success'))).toBe('success');
  });

  it('fails as soon as failures exceed failureLimit, without waiting for count', () => {
    expect(analyse(spec, m('failure'))).toBe('failure');
    expect(analyse({ ...spec, failureLimit: 1 }, m('failure'))).toBe('running');
    expect(analyse({ ...spec, failureLimit: 1 }, m('failure', 'success', 'success'))).toBe('success');
    expect(analyse({ ...spec, failureLimit: 1 }, m('failure', 'failure'))).toBe('failure');
  });

  it('is inconclusive once inconclusives exceed inconclusiveLimit: never a pass', () => {
    expect(analyse(spec, m('success', 'inconclusive'))).toBe('inconclusive');
    expect(analyse({ ...spec, inconclusiveLimit: 1 }, m('inconclusive', 'success', 'success'))).toBe('success');
    expect(analyse({ ...spec, inconclusiveLimit: 1 }, m('inconclusive', 'inconclusive'))).toBe('inconclusive');
    // A run of nothing but unmeasurable results within a generous limit still never passes early.
    expect(analyse({ count: 3, failureLimit: 0, inconclusiveLimit: 5 }, m('inconclusive', 'inconclusive'))).toBe('running');
  });

  it('decides in measurement order and ignores measurements after count', () => {
    expect(analyse(spec, m('failure', 'inconclusive'))).toBe('failure');
    expect(analyse(spec, m('inconclusive', 'failure'))).toBe('inconclusive');
    expect(analyse(spec, m('success', 'success', 'success', 'failure'))).toBe('success');
  });

  it('keeps only the last few measurements in a verdict', () => {
    const parsed = parseGateSpec({ kind: 'routes', count: 10, routes: [{ destination: 'default' }] });
    if (!parsed.ok) throw new Error('spec');
    const v = gateVerdict('routes', parsed.spec, m(...Array<MeasurementResult>(8).fill('success')));
    expect(v).toMatchObject({ gate: 'routes', kind: 'routes', phase: 'running', tally: { successes: 8, failures: 0, inconclusives: 0 } });
    expect(v.measurements).toHaveLength(VERDICT_MEASUREMENTS_KEPT);
  });
});

describe('gate specs', () => {
  it('fills in the analysis defaults (interval 10 s, count 3, limits 0)', () => {
    const parsed = parseGateSpec({ kind: 'reachability', targets: [{ protocol: 'icmp', address: '10.200.255.1' }] });
    expect(parsed).toEqual({
      ok: true,
      spec: { kind: 'reachability', intervalSeconds: 10, count: 3, failureLimit: 0, inconclusiveLimit: 0, targets: [{ protocol: 'icmp', address: '10.200.255.1', timeoutMs: 1000 }] },
    });
  });

  it.each([
    [{ kind: 'reachability', targets: [{ protocol: 'tcp', address: '10.0.0.1' }] }, 'targets[0].port', 'is required for a tcp probe'],
    [{ kind: 'reachability', targets: [{ protocol: 'icmp', address: '10.0.0.1', port: 80 }] }, 'targets[0].port', 'is not allowed'],
    [{ kind: 'reachability', targets: [{ protocol: 'icmp', address: 'gateway.example' }] }, 'targets[0].address', ''],
    [{ kind: 'reachability', targets: [] }, 'targets', 'at least one target'],
    [{ kind: 'datapath', reasons: ['cosmic-rays'] }, 'reasons[0]', 'must be one of'],
    [{ kind: 'routes' }, 'routes', 'at least one entry'],
    [{ kind: 'routes', routes: [{ destination: '10.0.0.1/8' }] }, 'routes[0].destination', ''],
    [{ kind: 'prometheus', address: 'ftp://x:1', query: 'up', successCondition: { op: '>', value: 0 } }, 'address', 'http(s) URL'],
    [{ kind: 'prometheus', address: 'http://u:p@x:9090', query: 'up', successCondition: { op: '>', value: 0 } }, 'address', 'without credentials'],
    [{ kind: 'prometheus', address: 'http://x:9090', query: 'up', successCondition: { op: '!=', value: 0 } }, 'successCondition.op', 'must be one of'],
    [{ kind: 'prometheus', address: 'http://x:9090', query: '', successCondition: { op: '>', value: 0 } }, 'query', 'must not be empty'],
    [{ kind: 'routes', routes: [{ destination: 'default' }], count: 0 }, 'count', 'at least 1'],
    [{ kind: 'routes', routes: [{ destination: 'default' }], failureLimit: -1 }, 'failureLimit', '0 or more'],
    [{ kind: 'routes', routes: [{ destination: 'default' }], intervalSeconds: 0 }, 'intervalSeconds', 'more than 0'],
    [{ kind: 'smoke-test' }, 'kind', 'must have kind'],
    [{ kind: 'routes', routes: [{ destination: 'default' }], extra: 1 }, '', 'extra'],
  ])('rejects %j naming %s', (input, field, message) => {
    const parsed = parseGateSpec(input);
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    const issue = parsed.issues.find((i) => i.field === field);
    expect(issue).toBeDefined();
    expect(issue?.message).toContain(message);
  });

  it('normalises route destinations and neighbour addresses', () => {
    const parsed = parseGateSpec({ kind: 'routes', routes: [{ destination: 'default' }, { destination: 'default6' }, { destination: '10.1.0.0/16', table: 'main' }], neighbours: ['FD00:200::1'] });
    expect(parsed.ok && parsed.spec.kind === 'routes' && parsed.spec).toMatchObject({
      routes: [{ destination: '0.0.0.0/0', table: 254 }, { destination: '::/0', table: 254 }, { destination: '10.1.0.0/16', table: 254 }],
      neighbours: ['fd00:200::1'],
    });
  });

  it('names gates under a strategy: bad names are refused', () => {
    expect(gatesSchema.safeParse({ ping: { kind: 'routes', routes: [{ destination: 'default' }] } }).success).toBe(true);
    const bad = gatesSchema.safeParse({ 'Bad Name': { kind: 'routes', routes: [{ destination: 'default' }] } });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.message).toContain('gate names must be lowercase');
  });
});

describe('compare', () => {
  it.each([
    [1, '<', 2, true],
    [2, '<', 2, false],
    [2, '<=', 2, true],
    [3, '>', 2, true],
    [2, '>=', 2, true],
    [2, '==', 2, true],
    [2.5, '==', 2, false],
  ] as const)('%d %s %d is %s', (a, op, b, want) => expect(compare(a, op, b)).toBe(want));
});

describe('judgeDatapath', () => {
  const rates = (over: Partial<Record<(typeof DROP_REASONS)[number], number>> = {}) =>
    ({ ...Object.fromEntries(DROP_REASONS.map((r) => [r, 0])), ...over }) as DatapathBaseline['ratePerSecond'];
  const sample = (over: Partial<Record<(typeof DROP_REASONS)[number], number>> = {}, available = true): DatapathBaseline => ({ at: '2026-01-01T00:00:00Z', windowSeconds: 1, ratePerSecond: rates(over), available });
  const spec = { maxDropRateIncreasePerSecond: 10, reasons: undefined };

  it('passes a drop rate within the allowed increase over the baseline', () => {
    expect(judgeDatapath(spec, sample({ 'zone-default': 100 }), sample({ 'zone-default': 105 }))).toMatchObject({ result: 'success', value: 5 });
  });

  it('fails the reason whose rate grew past the limit and names it', () => {
    const v = judgeDatapath(spec, sample(), sample({ 'blocklist-host': 50 }));
    expect(v).toMatchObject({ result: 'failure', value: 50 });
    expect(v.detail).toContain('blocklist-host');
  });

  it('watches only the listed reasons', () => {
    expect(judgeDatapath({ ...spec, reasons: ['zone-rule'] }, sample(), sample({ 'blocklist-host': 50 })).result).toBe('success');
  });

  it('is inconclusive without a baseline or without counters', () => {
    expect(judgeDatapath(spec, undefined, sample()).result).toBe('inconclusive');
    expect(judgeDatapath(spec, sample({}, false), sample()).result).toBe('inconclusive');
    expect(judgeDatapath(spec, sample(), sample({}, false)).result).toBe('inconclusive');
  });
});
