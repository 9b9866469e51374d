/**
 * The approval gate and change windows on the time-skipping test server, with fake nodes
 * and the real identity and approval-policy activities on the cluster worker: the author's
 * own approval is refused; two approvals from the approver role let the change run; an
 * approval given before the plan changed is void (on a later wave too: every touched node is
 * restored); an unanswered approval expires with
 * nothing applied; a change outside its window waits and runs when it opens; a freeze holds
 * it; an override without the emergency role is refused. Hours pass in milliseconds.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowClient, WorkflowFailedError, WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { signIdentity } from '../../auth/identity-assertion';
import { approvalAssertionSubject } from '../../model/approval-policy';
import { CLUSTER_TASK_QUEUE } from '../../model/naming';
import { FakeNode, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';
import { eventually } from '../helpers/eventually';

interface Status {
  phase: string;
  message: string;
  nodes: Record<string, { outcome: string; diff: string[] }>;
  approval?: { state: string; plan: Record<string, string[]>; required: number; received: { by: string; counts: boolean; verified: boolean }[]; eligibleRoles: string[]; excluded: string[]; expiresAt: string; planDigest: string };
  window?: { waitingUntil: string; why: string };
  audit: { step: string; result: string; actor: string; node?: string; detail?: string }[];
}

const BLOCKED = '198.51.100.9/32';
const KEY = randomBytes(32);
const ROLES: Record<string, string[]> = { alice: ['operator', 'approver'], bob: ['approver'], carol: ['approver'], dave: ['operator'], erin: ['operator', 'emergency'] };

describeTimeSkipping('approvals and change windows (time-skipping server, fake nodes)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const node = new FakeNode('ap-a');
  /** The second wave's node in the staged-rollout case. */
  const second = new FakeNode('ap-b');
  const policyFile = join(mkdtempSync(join(tmpdir(), 'fos1-approval-')), 'policy.yaml');
  let sequence = 0;

  beforeAll(async () => {
    writeFileSync(policyFile, '{}');
    env = await startTimeSkipping();
    workers = await startFakeWorkers({
      connection: env.nativeConnection,
      workflowBundle: await workflowBundle(),
      nodes: [node, second],
      identityKey: KEY,
      approvalPolicyFile: policyFile,
    });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });
  beforeEach(() => {
    node.blocklist.clear();
    second.blocklist.clear();
  });

  const policy = (doc: unknown) => writeFileSync(policyFile, JSON.stringify(doc));
  const twoApprovers = { rules: [{ name: 'two', approvals: 2, approverRole: 'approver', expiresAfter: '1h' }] };

  /** Submits, as `author` with a signed assertion (as the API would), a change blocking {@link BLOCKED}. */
  async function submit(author: string, options: Record<string, unknown> = {}, shape: Record<string, unknown> = { targets: [node.name] }): Promise<{ handle: WorkflowHandle; id: string }> {
    const id = `ap-change-${++sequence}`;
    const now = await env.currentTimeMs();
    const request = { id, author, reason: 'approval test', ...shape, patch: { blocklist: { upsert: [{ cidr: BLOCKED, reason: 'test', expiresAt: new Date(now + 30 * 86_400_000).toISOString() }] } }, options };
    const assertion = signIdentity(KEY, { principal: author, roles: ROLES[author] ?? [] }, id, request, now);
    const handle = await env.client.workflow.start('changeWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `change-${id}`, args: [request, assertion] });
    return { handle, id };
  }

  /** Votes as `by` the way the API does: a signed assertion over the vote. */
  async function vote(handle: WorkflowHandle, id: string, by: string, decision: 'approve' | 'reject', planDigest: string): Promise<Status['approval']> {
    const action = { by, planDigest, reason: `${by} reviewed it` };
    const assertion = signIdentity(KEY, { principal: by, roles: ROLES[by] ?? [] }, id, approvalAssertionSubject(id, by, decision, action), await env.currentTimeMs());
    return handle.executeUpdate(decision, { args: [{ ...action, assertion }] });
  }
  const updateFailure = (p: Promise<unknown>) =>
    p.then(
      () => ({ type: 'none', message: 'the update was accepted' }),
      (err: unknown) => {
        if (!(err instanceof WorkflowUpdateFailedError)) throw err;
        const cause = err.cause as { type?: string; message?: string };
        return { type: cause.type, message: cause.message ?? '' };
      },
    );
  const status = (handle: WorkflowHandle) => handle.query<Status>('status');
  const waitForPhase = (handle: WorkflowHandle, phase: string) => eventually(() => status(handle), (s) => s.phase === phase, `phase ${phase}`, 15_000);
  const failureOf = async (handle: WorkflowHandle): Promise<{ type?: string; status: Status }> => {
    const err = await handle.result().then(() => new Error('expected the change to fail'), (e: unknown) => e);
    if (!(err instanceof WorkflowFailedError)) throw err;
    const cause = err.cause as { type?: string; details?: unknown[] };
    return { type: cause.type, status: cause.details?.[0] as Status };
  };

  it('refuses the author\'s own approval, and runs once two approvers agree', async () => {
    policy(twoApprovers);
    const { handle, id } = await submit('alice');
    const pending = await waitForPhase(handle, 'awaiting-approval');
    expect(pending.approval).toMatchObject({ state: 'pending', required: 2, received: [], eligibleRoles: ['approver'], excluded: ['alice'], planDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(node.blocklist.has(BLOCKED)).toBe(false);
    // The Web UI sees who may approve.
    const described = await handle.describe();
    expect(described.searchAttributes).toMatchObject({ Fos1Approval: ['pending'], Fos1Approvers: ['approver'], Fos1Status: ['awaiting-approval'] });
    const digest = pending.approval?.planDigest ?? '';

    // alice holds the approver role, and is still refused: she wrote the change.
    expect(await updateFailure(vote(handle, id, 'alice', 'approve', digest))).toEqual({ type: 'SelfApprovalRefused', message: expect.stringContaining('alice is the author') });
    // dave lacks the role; a digest of another plan is refused before it reaches the workflow.
    expect(await updateFailure(vote(handle, id, 'dave', 'approve', digest))).toMatchObject({ type: 'ApprovalRefused', message: expect.stringContaining('role "approver"') });
    expect((await updateFailure(vote(handle, id, 'bob', 'approve', `sha256:${'0'.repeat(64)}`))).message).toMatch(/not the plan awaiting approval/);
    // An approval from the Web UI (no assertion) is recorded self-asserted and does not count.
    const unverified = (await handle.executeUpdate('approve', { args: [{ by: 'mallory', planDigest: digest }] })) as Status['approval'];
    expect(unverified?.received).toEqual([expect.objectContaining({ by: 'mallory', verified: false, counts: false })]);

    const afterBob = await vote(handle, id, 'bob', 'approve', digest);
    expect(afterBob?.received.filter((v) => v.counts).map((v) => v.by)).toEqual(['bob']);
    expect((await status(handle)).phase).toBe('awaiting-approval');
    // The Web UI's Current Details (workflow metadata) say who may approve, and what came in.
    const metadata = (await handle.query('__temporal_workflow_metadata')) as { currentDetails?: string };
    expect(metadata.currentDetails).toContain('1 of 2 from role `approver`, not by the author alice');
    expect(metadata.currentDetails).toContain(`fos1 approve ${id}`);
    expect(metadata.currentDetails).toContain('- bob: approve');
    await vote(handle, id, 'carol', 'approve', digest);

    const result = (await handle.result()) as Status;
    expect(result.phase).toBe('applied');
    expect(result.approval?.state).toBe('approved');
    expect(((await handle.query('__temporal_workflow_metadata')) as { currentDetails?: string }).currentDetails ?? '').toBe('');
    expect(node.blocklist.has(BLOCKED)).toBe(true);
    const steps = result.audit.filter((r) => !r.node).map((r) => `${r.actor} ${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining(['alice approve:failed', 'dave approve:failed', 'mallory approve:ok', 'bob approve:ok', 'carol approve:ok', 'alice approved:ok']));
    expect((await handle.describe()).searchAttributes).toMatchObject({ Fos1Approval: ['approved'] });
  });

  it('voids an approval given before the plan changed: PlanChanged, the node restored', async () => {
    policy({ rules: [{ name: 'one', approvals: 1 }] });
    const notBefore = new Date((await env.currentTimeMs()) + 3_600_000).toISOString();
    const { handle, id } = await submit('alice', { notBefore });
    const pending = await waitForPhase(handle, 'awaiting-approval');
    // Approvers see the plan they approve.
    expect(pending.approval?.plan?.[node.name]).toEqual([expect.stringContaining(`+ block ${BLOCKED}`)]);
    await vote(handle, id, 'bob', 'approve', pending.approval?.planDigest ?? '');
    const waiting = await waitForPhase(handle, 'waiting-for-window');
    expect(waiting.window).toEqual({ waitingUntil: new Date(notBefore).toISOString(), why: expect.stringContaining('notBefore') });
    // Meanwhile someone else blocks the prefix with another expiry: the approved "+ block" is now a "~ block".
    const theirs = Math.floor((await env.currentTimeMs()) / 1000) + 7200;
    node.blocklist.set(BLOCKED, theirs);

    const { type, status: final } = await failureOf(handle);
    expect(type).toBe('PlanChanged');
    expect(final.message).toMatch(/plan on node ap-a changed since it was approved/);
    expect(final.approval?.state).toBe('void');
    expect(final.nodes[node.name]?.outcome).toBe('restored');
    // What the node had before this change is what it has now.
    expect(node.blocklist.get(BLOCKED)).toBe(theirs);
  });

  it('checks each wave\'s plan: a drift on the second wave restores the first wave\'s node too (PlanChanged)', async () => {
    policy({ rules: [{ name: 'one', approvals: 1 }] });
    const strategy = { waves: [{ name: 'canary', nodes: [node.name], bakeSeconds: 3600 }, { name: 'rest' }] };
    const { handle, id } = await submit('alice', {}, { targets: [node.name, second.name], strategy });
    const pending = await waitForPhase(handle, 'awaiting-approval');
    expect(Object.keys(pending.approval?.plan ?? {}).sort()).toEqual([node.name, second.name]);
    await vote(handle, id, 'bob', 'approve', pending.approval?.planDigest ?? '');
    // The canary applied the approved plan and bakes; meanwhile the second node's state moves.
    await waitForPhase(handle, 'baking');
    expect(node.blocklist.has(BLOCKED)).toBe(true);
    const theirs = Math.floor((await env.currentTimeMs()) / 1000) + 7200;
    second.blocklist.set(BLOCKED, theirs);

    const { type, status: final } = await failureOf(handle);
    expect(type).toBe('PlanChanged');
    expect(final.message).toMatch(/plan on node ap-b changed since it was approved/);
    expect(final.approval?.state).toBe('void');
    expect(final.nodes[node.name]?.outcome).toBe('restored');
    expect(final.nodes[second.name]?.outcome).toBe('restored');
    expect(node.blocklist.has(BLOCKED)).toBe(false);
    expect(second.blocklist.get(BLOCKED)).toBe(theirs);
  });

  it('expires an unanswered approval: nothing applied', async () => {
    policy({ rules: [{ name: 'one', approvals: 1, expiresAfter: '2h' }] });
    const before = await env.currentTimeMs();
    const { handle } = await submit('alice');
    const { type, status: final } = await failureOf(handle);
    expect(type).toBe('ApprovalExpired');
    expect(final.phase).toBe('expired');
    expect(final.message).toMatch(/0 of 1 approval\(s\) within 7200s/);
    expect((await env.currentTimeMs()) - before).toBeGreaterThanOrEqual(7_200_000);
    expect(node.blocklist.has(BLOCKED)).toBe(false);
    expect(final.nodes[node.name]?.outcome).toBe('pending');
  });

  it('waits outside the maintenance window (time-zone aware, in the workflow) and runs when it opens', async () => {
    const now = await env.currentTimeMs();
    const opens = Math.ceil((now + 3 * 3_600_000) / 60_000) * 60_000;
    // Berlin's wall clock for the window; the workflow converts with Intl inside its sandbox.
    const berlin = (t: number) => new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(t));
    policy({ windows: [{ days: ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'], start: berlin(opens), end: berlin(opens + 3_600_000), timeZone: 'Europe/Berlin' }] });
    const { handle } = await submit('alice');
    const waiting = await waitForPhase(handle, 'waiting-for-window');
    expect(waiting.window?.waitingUntil).toBe(new Date(opens).toISOString());
    expect(waiting.message).toContain(`waiting until ${new Date(opens).toISOString()}`);
    expect(node.blocklist.has(BLOCKED)).toBe(false);
    const result = (await handle.result()) as Status;
    expect(result.phase).toBe('applied');
    expect(await env.currentTimeMs()).toBeGreaterThanOrEqual(opens);
    expect(node.blocklist.has(BLOCKED)).toBe(true);
    expect(result.audit.map((r) => r.step)).toEqual(expect.arrayContaining(['wait for window', 'window open']));
  });

  it('holds a change during a freeze, and lets an emergency override through it', async () => {
    const now = await env.currentTimeMs();
    const to = new Date(now + 5 * 3_600_000).toISOString();
    policy({ freezes: [{ from: new Date(now - 60_000).toISOString(), to, reason: 'year-end freeze' }] });
    const held = await submit('dave');
    const waiting = await waitForPhase(held.handle, 'waiting-for-window');
    expect(waiting.window).toEqual({ waitingUntil: to, why: `freeze until ${to}: year-end freeze` });
    // erin holds the emergency role: her override skips the freeze (and is audited).
    const urgent = await submit('erin', { override: { reason: 'active attack' } });
    // Awaited through a plain client: the time-skipping one would skip past the freeze meanwhile.
    const urgentResult = (await new WorkflowClient({ connection: env.connection }).getHandle(urgent.handle.workflowId).result()) as Status;
    expect(urgentResult.phase).toBe('applied');
    expect(urgentResult.audit).toEqual(expect.arrayContaining([expect.objectContaining({ step: 'override', result: 'ok', detail: expect.stringContaining('active attack') })]));
    expect((await status(held.handle)).phase).toBe('waiting-for-window');
    const result = (await held.handle.result()) as Status;
    // erin's block is in place by now: the held change finds it applied, or refreshes its expiry.
    expect(['applied', 'unchanged']).toContain(result.phase);
    expect(await env.currentTimeMs()).toBeGreaterThanOrEqual(Date.parse(to));
  });

  it('refuses an override without the emergency role: nothing applied', async () => {
    policy({});
    const { handle } = await submit('dave', { override: { reason: 'in a hurry' } });
    const { type, status: final } = await failureOf(handle);
    expect(type).toBe('OverrideRefused');
    expect(final.message).toMatch(/options.override needs the "emergency" role.*dave holds operator.*nothing was applied/);
    expect(node.blocklist.has(BLOCKED)).toBe(false);
  });
});
