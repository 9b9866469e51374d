/**
 * The ingest pipeline never crashes and never lets Temporal's speed stall the stream
 * beyond a bound: an evaluator that throws is counted and logged, a bridge that throws
 * is counted, and decisions in flight are capped (lines wait, memory does not grow).
 */
import pino from 'pino';
import { IngestPipeline } from '../../ingest/pipeline';
import type { Decision } from '../../model/enforcement-decision';
import type { RuleEvaluator } from '../../rules/evaluator';
import { describePrivileged } from '../helpers/capabilities';
import { sharedLines } from '../helpers/shared-data';

const ALERT = sharedLines('suricata', 'eve', 'eve-alerts.log')[0]!;
const silent = pino({ level: 'silent' });

function decision(): Decision {
  return { rule: 'r', action: 'block', target: '198.51.100.7/32', durationMs: 1000, escalation: { factor: 2, maxDurationMs: 2000 }, memoryMs: 1000, reason: 'r', evidence: { source: 'suricata', eventType: 'alert', timestamp: 't' } };
}

describePrivileged('ingest pipeline', ['shared-data'], () => {
  test('an evaluator failure is counted and the next line is handled', async () => {
    let calls = 0;
    const evaluator = {
      evaluate: async () => {
        if (calls++ === 0) throw new Error('boom');
        return { decision: null, matched: [] };
      },
    } as unknown as RuleEvaluator;
    const p = new IngestPipeline({ evaluator, logger: silent });
    expect(await p.eveLine(ALERT)).toEqual({ ok: true, decision: null });
    expect(await p.eveLine(ALERT)).toEqual({ ok: true, decision: null });
    expect(p.stats).toMatchObject({ lines: 2, accepted: 2, errors: 1 });
    expect(await p.eveLine('   ')).toEqual({ skipped: true });
  });

  test('decisions in flight are bounded: the stream waits for the bridge instead of queueing without end', async () => {
    const evaluator = { evaluate: async () => ({ decision: decision(), matched: ['r'] }) } as unknown as RuleEvaluator;
    const releases: (() => void)[] = [];
    let peak = 0;
    let open = 0;
    const bridge = {
      submit: () =>
        new Promise<'signalled'>((resolve) => {
          open++;
          peak = Math.max(peak, open);
          releases.push(() => {
            open--;
            resolve('signalled');
          });
        }),
    };
    const p = new IngestPipeline({ evaluator, bridge, logger: silent, maxInFlight: 3 });
    for (let i = 0; i < 3; i++) await p.eveLine(ALERT);
    // The fourth line cannot finish while three decisions are in flight.
    let fourthDone = false;
    const fourth = p.eveLine(ALERT).then(() => (fourthDone = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(fourthDone).toBe(false);
    releases.shift()!();
    await fourth;
    releases.splice(0).forEach((r) => r());
    await p.drain();
    releases.splice(0).forEach((r) => r());
    await p.drain();
    expect(peak).toBe(3);
    expect(p.stats.outcomes).toEqual({ signalled: 4 });
  });

  test('a bridge that throws is counted as an error, not a crash', async () => {
    const evaluator = { evaluate: async () => ({ decision: decision(), matched: ['r'] }) } as unknown as RuleEvaluator;
    const bridge = { submit: async () => Promise.reject(new Error('temporal down')) };
    const p = new IngestPipeline({ evaluator, bridge, logger: silent });
    await p.eveLine(ALERT);
    await p.drain();
    expect(p.stats).toMatchObject({ accepted: 1, errors: 1, decisions: { block: 1 } });
  });
});
