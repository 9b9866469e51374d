/**
 * The enforcement coordinator's caps and admissions, and escalation of repeat offences,
 * on the time-skipping test server with a fake node: a minute's rate window, a 60 s
 * admission lifetime and blocks of minutes pass in milliseconds. The privileged tests
 * (test/integration/enforcement-*.test.ts) keep the checks on real maps and traffic.
 *
 * Workflows, signals, updates and queries are named by their type names, so moving the
 * coordinator or the decision logic between files does not touch this.
 */
import { WithStartWorkflowOperation, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { CLUSTER_TASK_QUEUE } from '../../model/naming';
import { FakeCluster, FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { eventually } from '../helpers/eventually';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';

/** The coordinator enforcement workflows talk to (a singleton with a fixed id). */
const COORDINATOR_ID = 'fos1-enforcement-coordinator';
const MINUTE = 60_000;

interface Admit {
  granted: boolean;
  token?: string;
  expiresAt?: string;
  code?: string;
  reason?: string;
}
interface CoordinatorStatus {
  activeBlocks: string[];
  recentStarts: number[];
  reservations: { token: string; target: string }[];
  granted: number;
  refused: number;
}
interface EnforcementStatus {
  phase: string;
  offences: number;
  active?: { action: string; durationMs: number; expiresAt: string; enforced: boolean };
  blocks: { durationMs: number }[];
  refusals: { code: string; reason: string }[];
}

/** The cluster worker's guard configuration (the fake cluster's `readEnforcementConfig`): requests carry no caps. */
const guard = (caps: { maxActiveBlocks?: number; maxNewBlocksPerMinute?: number } = {}) =>
  guardConfigSchema.parse({ allowLists: { management: ['10.77.0.0/24'] }, minPrefixLengthV4: 24, minPrefixLengthV6: 64, maxActiveBlocks: caps.maxActiveBlocks ?? 100, maxNewBlocksPerMinute: caps.maxNewBlocksPerMinute ?? 100 });

describeTimeSkipping('enforcement coordinator and escalation (time-skipping server, fake node)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const node = new FakeNode('ts-enf');
  const cluster = new FakeCluster();
  let sequence = 0;

  beforeAll(async () => {
    env = await startTimeSkipping();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes: [node], cluster });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });

  describe('admissions (the admit update)', () => {
    /** A coordinator of its own per test, so counts start at zero; `caps` are the worker's configuration it reads. */
    async function coordinator(caps: { maxActiveBlocks: number; maxNewBlocksPerMinute: number } = { maxActiveBlocks: 10, maxNewBlocksPerMinute: 10 }): Promise<WorkflowHandle> {
      cluster.guard = guard(caps);
      return env.client.workflow.start('enforcementCoordinatorWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `ts-coordinator-${++sequence}`, args: [undefined] });
    }
    // The caps argument documents the test's configuration; the coordinator read it from the worker.
    const admit = async (handle: WorkflowHandle, target: string, _caps?: { maxActiveBlocks: number; maxNewBlocksPerMinute: number }): Promise<Admit> =>
      handle.executeUpdate<Admit, [unknown]>('admit', { args: [{ target, deadline: new Date((await env.currentTimeMs()) + MINUTE).toISOString() }] });
    const status = (handle: WorkflowHandle) => handle.query<CoordinatorStatus>('coordinator');

    it('reserves a slot per admitted block and refuses past the active cap until reservations expire', async () => {
      const caps = { maxActiveBlocks: 2, maxNewBlocksPerMinute: 100 };
      const handle = await coordinator(caps);
      const a = await admit(handle, '198.51.100.1/32', caps);
      const b = await admit(handle, '198.51.100.2/32', caps);
      expect([a.granted, b.granted]).toEqual([true, true]);
      expect(a.token).not.toBe(b.token);
      const refused = await admit(handle, '198.51.100.3/32', caps);
      expect(refused).toMatchObject({ granted: false, code: 'too-many-active-blocks' });
      expect((await status(handle)).reservations.map((r) => r.target).sort()).toEqual(['198.51.100.1/32', '198.51.100.2/32']);
      // Nobody claims them: after the admission lifetime (60 s) the slots are free again.
      await env.sleep(61_000);
      expect(await admit(handle, '198.51.100.3/32', caps)).toMatchObject({ granted: true });
      expect(await status(handle)).toMatchObject({ granted: 3, refused: 1, reservations: [expect.objectContaining({ target: '198.51.100.3/32' })] });
    });

    it('counts new blocks per minute, and a slot handed back unused is not a new start', async () => {
      const caps = { maxActiveBlocks: 100, maxNewBlocksPerMinute: 2 };
      const handle = await coordinator(caps);
      const first = await admit(handle, '198.51.100.11/32', caps);
      await admit(handle, '198.51.100.12/32', caps);
      expect(await admit(handle, '198.51.100.13/32', caps)).toMatchObject({ granted: false, code: 'rate-limited' });
      // The first admission was not needed after all (an extension): handing it back frees its start.
      await handle.signal('release', { requester: 'test', requestId: first.token, target: '198.51.100.11/32', unused: true });
      expect(await admit(handle, '198.51.100.13/32', caps)).toMatchObject({ granted: true });
      expect(await admit(handle, '198.51.100.14/32', caps)).toMatchObject({ granted: false, code: 'rate-limited' });
      // A minute later the window has moved on.
      await env.sleep(MINUTE + 1000);
      expect(await admit(handle, '198.51.100.14/32', caps)).toMatchObject({ granted: true });
    });

    it('a claimed admission is an active block until released, and an active target needs no new slot', async () => {
      const caps = { maxActiveBlocks: 1, maxNewBlocksPerMinute: 100 };
      const handle = await coordinator(caps);
      const a = await admit(handle, '198.51.100.21/32', caps);
      await handle.signal('claim', { requester: 'test', requestId: a.token, target: '198.51.100.21/32' });
      await env.sleep(2 * MINUTE); // long past the admission's lifetime: a claimed block stays counted
      expect((await status(handle)).activeBlocks).toEqual(['198.51.100.21/32']);
      expect(await admit(handle, '198.51.100.22/32', caps)).toMatchObject({ granted: false, code: 'too-many-active-blocks' });
      const repeat = await admit(handle, '198.51.100.21/32', caps);
      expect(repeat).toMatchObject({ granted: true });
      // Lifted: no longer active. Its repeat admission still holds a slot until handed back.
      await handle.signal('release', { requester: 'test', requestId: 'lifted', target: '198.51.100.21/32', blockActive: false });
      expect(await admit(handle, '198.51.100.22/32', caps)).toMatchObject({ granted: false, code: 'too-many-active-blocks' });
      await handle.signal('release', { requester: 'test', requestId: repeat.token, target: '198.51.100.21/32', unused: true });
      expect(await admit(handle, '198.51.100.22/32', caps)).toMatchObject({ granted: true });
    });

    it('refuses an admission asked for too late', async () => {
      const handle = await coordinator();
      const answer = await handle.executeUpdate<Admit, [unknown]>('admit', {
        args: [{ target: '198.51.100.31/32', deadline: new Date((await env.currentTimeMs()) - 1000).toISOString() }],
      });
      expect(answer).toMatchObject({ granted: false, code: 'too-late' });
    });

    it('rejects an admission that brings its own caps, and reads the caps from the worker', async () => {
      const handle = await coordinator({ maxActiveBlocks: 1, maxNewBlocksPerMinute: 100 });
      await expect(
        handle.executeUpdate<Admit, [unknown]>('admit', { args: [{ target: '198.51.100.41/32', maxActiveBlocks: 1_000_000, deadline: new Date((await env.currentTimeMs()) + MINUTE).toISOString() }] }),
      ).rejects.toThrow();
      expect(await admit(handle, '198.51.100.41/32')).toMatchObject({ granted: true });
      expect(await admit(handle, '198.51.100.42/32')).toMatchObject({ granted: false, code: 'too-many-active-blocks', reason: '1 automated blocks are active; the cap is 1' });
    });
  });

  describe('enforcement workflows under the caps, and escalation', () => {
    const verdict = (target: string, durationMs: number, memoryMs = 60 * MINUTE, admission?: { token: string; expiresAt: string }) => ({
      rule: 'test-rule',
      action: 'block',
      target,
      durationMs,
      escalation: { factor: 2, maxDurationMs: 45 * MINUTE },
      memoryMs,
      reason: 'test verdict',
      evidence: { source: 'suricata', eventType: 'alert', timestamp: new Date().toISOString() },
      ...(admission ? { admission } : {}),
    });
    /** Sets the worker's caps; a coordinator running with others is replaced, so the next request reads them. */
    const useCaps = async (caps: Parameters<typeof guard>[0] = {}) => {
      const next = guard(caps);
      if (JSON.stringify(next) === JSON.stringify(cluster.guard)) return;
      cluster.guard = next;
      await env.client.workflow.getHandle(COORDINATOR_ID).terminate('caps changed').catch(() => undefined);
    };
    const enforce = async (target: string, decision: unknown, caps: Parameters<typeof guard>[0] = {}) => {
      await useCaps(caps);
      return env.client.workflow.signalWithStart('enforcementWorkflow', {
        workflowId: `enforce-${target.replace(/\//g, '_')}`,
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [{ target, nodes: [node.name] }],
        signal: 'verdict',
        signalArgs: [decision],
      });
    };
    const status = (handle: WorkflowHandle) => handle.query<EnforcementStatus>('enforcement');
    /**
     * Waits (real time, workflow time standing still) until `ok` holds: changes and lifts
     * run activities and child workflows, which need no timer; expiries are reached with
     * `env.sleep`, which moves workflow time by exactly that much.
     */
    const settle = (handle: WorkflowHandle, ok: (s: EnforcementStatus) => boolean, what: string) => eventually(() => status(handle), ok, what, 20_000);

    it('a repeat offender within memory is blocked twice as long; the offence is forgotten after memory', async () => {
      const target = '203.0.113.7/32';
      const handle = await enforce(target, verdict(target, 10 * MINUTE));
      const first = await settle(handle, (s) => s.active?.enforced === true, 'the first block');
      expect(first).toMatchObject({ offences: 1, active: { action: 'block', durationMs: 10 * MINUTE } });
      expect(node.blocklist.has(target)).toBe(true);
      // The durable timer lifts it at expiry.
      await env.sleep(10 * MINUTE);
      const lifted = await settle(handle, (s) => s.active === undefined, 'the lift at expiry');
      expect(lifted.phase).toBe('remembering');
      expect(node.blocklist.has(target)).toBe(false);

      // Within memory: the second offence lasts base × factor = 20 min, on the node too.
      await handle.signal('verdict', verdict(target, 10 * MINUTE));
      const second = await settle(handle, (s) => s.offences === 2 && s.active?.enforced === true, 'the repeat block');
      expect(second.active?.durationMs).toBe(20 * MINUTE);
      expect(second.blocks.map((b) => b.durationMs)).toEqual([10 * MINUTE, 20 * MINUTE]);
      const expiry = node.blocklist.get(target);
      expect(expiry).toBe(Math.floor(Date.parse(second.active!.expiresAt) / 1000));

      // Lifted after 20 min, then forgotten after the memory (60 min): the workflow completes.
      await env.sleep(20 * MINUTE);
      expect(await settle(handle, (s) => s.active === undefined, 'the second lift')).toMatchObject({ phase: 'remembering', offences: 2 });
      expect(node.blocklist.has(target)).toBe(false);
      await env.sleep(60 * MINUTE);
      expect(await settle(handle, (s) => s.phase === 'done', 'the offences to be forgotten')).toMatchObject({ phase: 'done', offences: 2 });

      // A verdict after the memory lapsed starts over: a first offence, the base duration.
      const again = await enforce(target, verdict(target, 10 * MINUTE));
      const fresh = await settle(again, (s) => s.active?.enforced === true, 'the fresh block');
      expect(fresh).toMatchObject({ offences: 1, active: { durationMs: 10 * MINUTE } });
      await again.signal('lift', { by: 'tester', reason: 'cleanup' });
      await settle(again, (s) => s.phase === 'done', 'the operator lift');
    });

    it('escalation stops at the maximum duration', async () => {
      const target = '203.0.113.8/32';
      const handle = await enforce(target, verdict(target, 20 * MINUTE));
      await settle(handle, (s) => s.active?.enforced === true, 'the first block');
      await env.sleep(20 * MINUTE);
      await settle(handle, (s) => s.active === undefined, 'the first lift');
      await handle.signal('verdict', verdict(target, 20 * MINUTE));
      // 20 min × 2 = 40 min, under the 45 min cap; the third would be 80 min, capped at 45.
      await settle(handle, (s) => s.offences === 2 && s.active?.enforced === true, 'the second block');
      await env.sleep(40 * MINUTE);
      await settle(handle, (s) => s.active === undefined, 'the second lift');
      await handle.signal('verdict', verdict(target, 20 * MINUTE));
      const third = await settle(handle, (s) => s.offences === 3 && s.active?.enforced === true, 'the third block');
      expect(third.blocks.map((b) => b.durationMs)).toEqual([20 * MINUTE, 40 * MINUTE, 45 * MINUTE]);
      await handle.signal('lift', { by: 'tester' });
      await settle(handle, (s) => s.phase === 'done', 'the operator lift');
    });

    it('a new block beyond the active cap is refused by the coordinator (acquire path) and audited', async () => {
      const caps = { maxActiveBlocks: 1 };
      const first = await enforce('203.0.113.20/32', verdict('203.0.113.20/32', 30 * MINUTE), caps);
      await settle(first, (s) => s.active?.enforced === true, 'the first block');
      const second = await enforce('203.0.113.21/32', verdict('203.0.113.21/32', 30 * MINUTE), caps);
      const refused = await settle(second, (s) => s.refusals.length > 0, 'a refusal');
      expect(refused.refusals[0]?.code).toBe('too-many-active-blocks');
      expect(refused.active).toBeUndefined();
      expect(node.blocklist.has('203.0.113.21/32')).toBe(false);
      expect((await env.client.workflow.getHandle(COORDINATOR_ID).query<CoordinatorStatus>('coordinator')).activeBlocks).toContain('203.0.113.20/32');

      // Once the first block is lifted, the coordinator hears it and the next block goes through.
      // Nothing active and nothing to remember (a refusal is no offence): the workflow ends.
      await settle(second, (s) => s.phase === 'done', 'the refused workflow to end');

      await first.signal('lift', { by: 'tester' });
      await settle(first, (s) => s.phase === 'done', 'the operator lift');
      const retried = await enforce('203.0.113.21/32', verdict('203.0.113.21/32', 30 * MINUTE), caps);
      await settle(retried, (s) => s.active?.enforced === true, 'the second block after the lift');
      expect(node.blocklist.has('203.0.113.21/32')).toBe(true);
      await retried.signal('lift', { by: 'tester' });
      await settle(retried, (s) => s.phase === 'done', 'the operator lift');
    });

    it('uses an admission that came with the verdict: the reservation becomes an active block', async () => {
      const coordinator = env.client.workflow.getHandle(COORDINATOR_ID);
      const target = '203.0.113.30/32';
      await useCaps();
      // Started by this update if the caps change replaced it.
      const admission = await env.client.workflow.executeUpdateWithStart<(carried?: unknown) => Promise<void>, Admit, [unknown]>('admit', {
        args: [{ target, deadline: new Date((await env.currentTimeMs()) + MINUTE).toISOString() }],
        startWorkflowOperation: new WithStartWorkflowOperation<(carried?: unknown) => Promise<void>>('enforcementCoordinatorWorkflow', { workflowId: COORDINATOR_ID, taskQueue: CLUSTER_TASK_QUEUE, args: [undefined], workflowIdConflictPolicy: 'USE_EXISTING' }),
      });
      expect(admission.granted).toBe(true);
      const handle = await enforce(target, verdict(target, 30 * MINUTE, MINUTE, { token: admission.token!, expiresAt: admission.expiresAt! }));
      await settle(handle, (s) => s.active?.enforced === true, 'the admitted block');
      const after = await coordinator.query<CoordinatorStatus>('coordinator');
      expect(after.activeBlocks).toContain(target);
      expect(after.reservations.map((r) => r.token)).not.toContain(admission.token);
      await handle.signal('lift', { by: 'tester' });
      await settle(handle, (s) => s.phase === 'done', 'the operator lift');
      expect((await coordinator.query<CoordinatorStatus>('coordinator')).activeBlocks).not.toContain(target);
    });
  });
});
