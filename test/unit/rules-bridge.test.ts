/**
 * The decision → workflow bridge: guard refusals never reach Temporal and are audited;
 * a burst about one target is one workflow reached by a handful of signals.
 * The Temporal client is a recording fake (this is logic; the integration test runs the
 * real thing).
 */
import pino from 'pino';
import { Writable } from 'node:stream';
import { EnforcementBridge, type WorkflowStarter } from '../../ingest/bridge';
import type { Decision } from '../../model/enforcement-decision';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';

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
  const starts: unknown[][] = [];
  const workflows = {
    signalWithStart: async (_wf: unknown, options: { workflowId: string; signalArgs: unknown[]; args: unknown[] }) => {
      calls.push({ workflowId: options.workflowId, signalArgs: options.signalArgs });
      starts.push(options.args);
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
  return { bridge, calls, starts, logs, advance: (ms: number) => (now += ms) };
}

describe('enforcement bridge', () => {
  test('10,000 block verdicts about one source are one workflow and one signal', async () => {
    const { bridge, calls } = setup();
    await Promise.all(Array.from({ length: 10_000 }, () => bridge.submit(decision('198.51.100.7/32'))));
    expect(calls).toEqual([{ workflowId: 'enforce-198.51.100.7_32', signalArgs: [expect.objectContaining({ action: 'block' })] }]);
    expect(bridge.counts).toMatchObject({ signalled: 1, coalesced: 9_999 });
  });

  test('the workflow input carries neither the guard nor caps (the cluster worker has its own)', async () => {
    const { bridge, starts } = setup();
    await bridge.submit(decision('198.51.100.7/32'));
    expect(starts).toEqual([[{ target: '198.51.100.7/32', nodes: ['node-a'] }]]);
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

  describe('admission by the coordinator before a block is signalled', () => {
    /** A fake client whose `admit` update answers with `answer` (or hangs, or fails). */
    function admitting(answer: 'grant' | 'refuse' | 'hang' | 'fail') {
      const calls: { signalArgs: unknown[] }[] = [];
      const updates: { name: string; args: unknown[]; workflowId: string; conflict: string }[] = [];
      const workflows = {
        signalWithStart: async (_wf: unknown, options: { signalArgs: unknown[] }) => {
          calls.push({ signalArgs: options.signalArgs });
          return {} as never;
        },
        executeUpdateWithStart: async (def: { name: string }, options: { args: unknown[]; startWorkflowOperation: { options: { workflowId: string; workflowIdConflictPolicy: string } } }) => {
          updates.push({ name: def.name, args: options.args, workflowId: options.startWorkflowOperation.options.workflowId, conflict: options.startWorkflowOperation.options.workflowIdConflictPolicy });
          if (answer === 'hang') return new Promise(() => undefined);
          if (answer === 'fail') throw new Error('unavailable');
          return answer === 'grant'
            ? { granted: true, token: 'adm-1', expiresAt: '2030-01-01T00:00:00.000Z' }
            : { granted: false, code: 'rate-limited', reason: '600 new automated blocks in the last minute; the cap is 600/min' };
        },
      } as unknown as WorkflowStarter;
      const guard = new EnforcementGuard(guardConfigSchema.parse({ maxActiveBlocks: 50, maxNewBlocksPerMinute: 7 }));
      const bridge = new EnforcementBridge({ workflows, guard, nodes: ['node-a'], logger: pino({ level: 'silent' }), coalesceMs: 5000, admitTimeoutMs: 200 });
      return { bridge, calls, updates };
    }

    test('a granted admission travels with the block verdict; the coordinator is started if needed and asked without caps (they are its own)', async () => {
      const { bridge, calls, updates } = admitting('grant');
      expect(await bridge.submit(decision('198.51.100.7/32'))).toBe('signalled');
      expect(updates).toEqual([
        { name: 'admit', args: [{ target: '198.51.100.7/32', deadline: expect.any(String) }], workflowId: 'fos1-enforcement-coordinator', conflict: 'USE_EXISTING' },
      ]);
      expect(calls[0]!.signalArgs[0]).toMatchObject({ action: 'block', admission: { token: 'adm-1', expiresAt: '2030-01-01T00:00:00.000Z' } });
      expect(bridge.admissions).toEqual({ admitted: 1, refused: 0, failed: 0 });
    });

    test('only blocks are admitted: a rate limit goes out without asking', async () => {
      const { bridge, calls, updates } = admitting('grant');
      await bridge.submit(decision('198.51.100.7/32', 'rate-limit'));
      expect(updates).toEqual([]);
      expect(calls[0]!.signalArgs[0]).not.toHaveProperty('admission');
    });

    test.each([
      ['refuse', { admitted: 0, refused: 1, failed: 0 }],
      ['hang', { admitted: 0, refused: 0, failed: 1 }],
      ['fail', { admitted: 0, refused: 0, failed: 1 }],
    ] as const)('when the coordinator answers %s, the verdict still goes out, without an admission (the workflow asks and audits)', async (answer, counts) => {
      const { bridge, calls } = admitting(answer);
      expect(await bridge.submit(decision('198.51.100.7/32'))).toBe('signalled');
      expect(calls).toHaveLength(1);
      expect(calls[0]!.signalArgs[0]).not.toHaveProperty('admission');
      expect(bridge.admissions).toEqual(counts);
    });

    test('the deadline given to the coordinator is earlier than the bridge stops waiting', async () => {
      const { bridge, updates } = admitting('grant');
      const before = Date.now();
      await bridge.submit(decision('198.51.100.7/32'));
      const deadline = Date.parse((updates[0]!.args[0] as { deadline: string }).deadline);
      expect(deadline - before).toBeGreaterThanOrEqual(100);
      expect(deadline - before).toBeLessThan(200);
    });
  });
  describe('close waits for Temporal calls still in flight', () => {
    /** A fake client whose admission answers only when released (as a call the gRPC client keeps retrying). */
    function lateAdmission(closeTimeoutMs: number) {
      let release: () => void = () => undefined;
      const updateDone = new Promise<void>((resolve) => (release = resolve));
      const workflows = {
        signalWithStart: async () => ({}) as never,
        executeUpdateWithStart: async () => {
          await updateDone;
          throw new Error('unavailable');
        },
      } as unknown as WorkflowStarter;
      const logs: Record<string, unknown>[] = [];
      const logger = pino(
        { level: 'warn' },
        new Writable({
          write(chunk: Buffer, _enc, done) {
            logs.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
            done();
          },
        }),
      );
      const guard = new EnforcementGuard(guardConfigSchema.parse({}));
      const bridge = new EnforcementBridge({ workflows, guard, nodes: ['node-a'], logger, coalesceMs: 5000, admitTimeoutMs: 50, closeTimeoutMs });
      return { bridge, release, logs };
    }

    test('an admission the bridge stopped waiting for holds close() until it settles', async () => {
      const { bridge, release, logs } = lateAdmission(60_000);
      // The verdict went out without an admission; the admission call is still running.
      expect(await bridge.submit(decision('198.51.100.7/32'))).toBe('signalled');
      expect(bridge.callsInFlight).toBe(1);
      let closed = false;
      const closing = bridge.close().then(() => (closed = true));
      await new Promise((r) => setTimeout(r, 50));
      expect(closed).toBe(false);
      release();
      await closing;
      expect(bridge.callsInFlight).toBe(0);
      expect(logs.filter((l) => String(l.msg).includes('still in flight'))).toEqual([]);
    });

    test('close() gives up after closeTimeoutMs and says how many calls were left', async () => {
      const { bridge, release, logs } = lateAdmission(100);
      await bridge.submit(decision('198.51.100.7/32'));
      const started = Date.now();
      await bridge.close();
      expect(Date.now() - started).toBeGreaterThanOrEqual(90);
      expect(logs).toContainEqual(expect.objectContaining({ level: 40, callsInFlight: 1, msg: expect.stringContaining('stopping with 1 Temporal call(s) still in flight after 100 ms') }));
      release();
    });
  });
});
