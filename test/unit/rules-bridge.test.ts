/**
 * The decision → workflow bridge: guard refusals never reach Temporal and are audited;
 * a burst about one target is one workflow reached by a handful of signals.
 * The Temporal client is a recording fake (this is logic; the integration test runs the
 * real thing).
 */
import pino from 'pino';
import { Writable } from 'node:stream';
import { EnforcementBridge, type WorkflowStarter } from '../../rules/bridge';
import type { Decision } from '../../rules/decision';
import { EnforcementGuard, guardConfigSchema } from '../../rules/guard';

function decision(target: string, action: Decision['action'] = 'block'): Decision {
  return {
    rule: 'test',
    action,
    target,
    durationMs: 60_000,
    escalation: { factor: 2, maxDurationMs: 3_600_000 },
    memoryMs: 600_000,
    reason: 'test',
    evidence: { source: 'suricata', eventType: 'alert', timestamp: '2026-01-01T00:00:00Z' },
  };
}

function setup(coalesceMs = 5000) {
  const calls: { workflowId: string; signalArgs: unknown[] }[] = [];
  const workflows = {
    signalWithStart: async (_wf: unknown, options: { workflowId: string; signalArgs: unknown[] }) => {
      calls.push({ workflowId: options.workflowId, signalArgs: options.signalArgs });
      return {} as never;
    },
  } as unknown as WorkflowStarter;
  const logs: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        logs.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  );
  let now = 1_000_000;
  const guard = new EnforcementGuard(guardConfigSchema.parse({ allowLists: { management: ['10.0.0.0/24'] } }));
  const bridge = new EnforcementBridge({ workflows, guard, nodes: ['node-a'], logger, coalesceMs, now: () => now });
  return { bridge, calls, logs, advance: (ms: number) => (now += ms) };
}

describe('enforcement bridge', () => {
  test('10,000 block verdicts about one source are one workflow and one signal', async () => {
    const { bridge, calls } = setup();
    await Promise.all(Array.from({ length: 10_000 }, () => bridge.submit(decision('198.51.100.7/32'))));
    expect(calls).toEqual([{ workflowId: 'enforce-198.51.100.7_32', signalArgs: [expect.objectContaining({ action: 'block' })] }]);
    expect(bridge.counts).toMatchObject({ signalled: 1, coalesced: 9_999 });
  });

  test('a stronger verdict, or one after the coalescing window, is sent', async () => {
    const { bridge, calls, advance } = setup(5000);
    await bridge.submit(decision('198.51.100.7/32', 'rate-limit'));
    await bridge.submit(decision('198.51.100.7/32', 'rate-limit'));
    await bridge.submit(decision('198.51.100.7/32', 'block'));
    advance(5001);
    await bridge.submit(decision('198.51.100.7/32', 'block'));
    await bridge.submit(decision('203.0.113.9/32', 'block'));
    expect(calls.map((c) => `${c.workflowId} ${(c.signalArgs[0] as Decision).action}`)).toEqual([
      'enforce-198.51.100.7_32 rate-limit',
      'enforce-198.51.100.7_32 block',
      'enforce-198.51.100.7_32 block',
      'enforce-203.0.113.9_32 block',
    ]);
  });

  test('an allow-listed target is refused before Temporal, with an audit record naming the list', async () => {
    const { bridge, calls, logs } = setup();
    expect(await bridge.submit(decision('10.0.0.7/32'))).toBe('refused');
    expect(calls).toEqual([]);
    expect(logs).toEqual([
      expect.objectContaining({
        level: 40,
        audit: expect.objectContaining({ changeId: 'enforce-10.0.0.7_32', actor: 'fos1-enforcer', step: 'refused', result: 'failed', detail: 'allow-listed: 10.0.0.7/32 overlaps 10.0.0.0/24 on allow-list "management" (rule test, block)' }),
      }),
    ]);
  });

  test('notify and allow end in the log; a failing signal is counted and retried by the next verdict', async () => {
    const { bridge, calls } = setup();
    expect(await bridge.submit(decision('10.0.0.7/32', 'notify'))).toBe('notified');
    expect(await bridge.submit(decision('198.51.100.8/32', 'allow'))).toBe('allowed');
    expect(calls).toEqual([]);
    let fail = true;
    const flaky = {
      signalWithStart: async () => {
        if (fail) throw new Error('unavailable');
        return {} as never;
      },
    } as unknown as WorkflowStarter;
    const b2 = new EnforcementBridge({ workflows: flaky, guard: new EnforcementGuard(guardConfigSchema.parse({})), nodes: ['n'], logger: pino({ level: 'silent' }), coalesceMs: 5000 });
    expect(await b2.submit(decision('198.51.100.9/32'))).toBe('failed');
    fail = false;
    expect(await b2.submit(decision('198.51.100.9/32'))).toBe('signalled');
  });
});
