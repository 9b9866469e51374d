/**
 * Cluster-only changes (workflows/cluster-only-change.ts): a change request with
 * `clusterPolicy` and no node part runs through the change workflow with 0 nodes — identity,
 * the approval policy, dry-run, apply, read-back, commit-confirmed revert — on Temporal's
 * time-skipping server, with the real cluster policy activities over an in-memory apiserver
 * (test/helpers/fake-node.ts FakeKube). The real apiserver path is in
 * test/integration/change-cilium.privileged.test.ts and the controllers' tests.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { signIdentity } from '../../auth/identity-assertion';
import { approvalAssertionSubject } from '../../model/approval-policy';
import { CLUSTER_TASK_QUEUE, SearchAttributes } from '../../model/naming';
import type { ChangeStatus } from '../../workflows/change';
import { eventually } from '../helpers/eventually';
import { FakeCluster, startFakeWorkers, type FakeWorkers } from '../helpers/fake-node';
import { describeTimeSkipping, startTimeSkipping, workflowBundle } from '../helpers/time-skipping';

const KEY = randomBytes(32);
const ROLES: Record<string, string[]> = { alice: ['operator'], bob: ['approver'] };
const NS = 'shop';

function policy(port: string, name = 'allow-web') {
  return { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name }, spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port, protocol: 'TCP' }] }] }] } };
}

describeTimeSkipping('cluster-only changes (time-skipping server, in-memory apiserver)', () => {
  let env: TestWorkflowEnvironment;
  let workers: FakeWorkers;
  const cluster = new FakeCluster();
  const policyFile = join(mkdtempSync(join(tmpdir(), 'fos1-cluster-only-')), 'policy.yaml');
  let sequence = 0;

  beforeAll(async () => {
    writeFileSync(policyFile, '{}');
    env = await startTimeSkipping();
    workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle: await workflowBundle(), nodes: [], cluster, identityKey: KEY, approvalPolicyFile: policyFile });
  });
  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
  });
  beforeEach(() => writeFileSync(policyFile, '{}'));

  const stored = () => cluster.kube.objects.get(`CiliumNetworkPolicy ${NS}/allow-web`);
  async function submit(shape: Record<string, unknown>, options: Record<string, unknown> = {}, author = 'alice'): Promise<{ handle: WorkflowHandle; id: string }> {
    const id = `co-${++sequence}`;
    const request = { id, author, reason: 'cluster-only test', ...shape, options };
    const assertion = signIdentity(KEY, { principal: author, roles: ROLES[author] ?? [] }, id, request, await env.currentTimeMs());
    return { id, handle: await env.client.workflow.start('changeWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `change-${id}`, args: [request, assertion] }) };
  }
  const status = (handle: WorkflowHandle) => handle.query<ChangeStatus>('status');
  const failureOf = async (handle: WorkflowHandle) => {
    const err = await handle.result().then(() => new Error('expected the change to fail'), (e: unknown) => e);
    if (!(err instanceof WorkflowFailedError)) throw err;
    const cause = err.cause as { type?: string; message?: string; details?: unknown[] };
    return { type: cause.type, message: cause.message ?? '', status: cause.details?.[0] as ChangeStatus };
  };
  const steps = (s: ChangeStatus) => s.audit.map((r) => `${r.step}:${r.result}`);

  it('applies and verifies a Cilium document with 0 nodes: status says "cluster policy only", audit verified, search attributes set', async () => {
    const { handle, id } = await submit({ clusterPolicy: { namespace: NS, cilium: [policy('80')] } });
    const result = (await handle.result()) as ChangeStatus;
    expect(result).toMatchObject({ changeId: id, phase: 'applied', progress: { nodesDone: 0, nodesTotal: 0 }, nodes: {}, waves: [], clusterPolicy: { phase: 'applied', plan: [`+ CiliumNetworkPolicy ${NS}/allow-web`] } });
    expect(result.message).toContain('cluster policy only (0 nodes)');
    expect(steps(result)).toEqual(['validate:ok', 'cluster policy: validate:ok', 'cluster policy: apply:ok', 'cluster policy: verify:ok']);
    expect(result.audit.every((r) => r.actorVerified === true && r.actor === 'alice' && r.changeId === id)).toBe(true);
    expect(result.audit[0]?.detail).toBe('cluster policy only (0 nodes)');
    expect(stored()?.spec).toEqual(policy('80').spec);
    const described = await handle.describe();
    expect(described.typedSearchAttributes.get(SearchAttributes.status)).toBe('applied');
    expect(described.typedSearchAttributes.get(SearchAttributes.changeId)).toBe(id);
    expect(described.typedSearchAttributes.get(SearchAttributes.targetNodes) ?? []).toEqual([]);

    // The same policy again changes nothing.
    const again = (await (await submit({ clusterPolicy: { namespace: NS, cilium: [policy('80')] } })).handle.result()) as ChangeStatus;
    expect(again.phase).toBe('unchanged');
  });

  it('a dry run plans (server-side dry-run) and writes nothing', async () => {
    const before = stored();
    const result = (await (await submit({ clusterPolicy: { namespace: NS, cilium: [policy('8080')] } }, { dryRun: true })).handle.result()) as ChangeStatus;
    expect(result).toMatchObject({ phase: 'planned', clusterPolicy: { phase: 'planned', plan: [`~ CiliumNetworkPolicy ${NS}/allow-web`] } });
    expect(stored()).toEqual(before);
  });

  it('the approval policy decides: a rule without node criteria holds it for approval; approved, it applies', async () => {
    writeFileSync(policyFile, JSON.stringify({ rules: [{ name: 'everything', approvals: 1, approverRole: 'approver', expiresAfter: '1h' }] }));
    const { handle, id } = await submit({ clusterPolicy: { namespace: NS, cilium: [policy('443')] } });
    const pending = await eventually(() => status(handle), (s) => s.phase === 'awaiting-approval', 'awaiting approval', 15_000);
    expect(pending.approval).toMatchObject({ state: 'pending', required: 1, plan: {} });
    expect(stored()?.spec).toEqual(policy('80').spec); // nothing applied while it waits
    const action = { by: 'bob', planDigest: pending.approval?.planDigest, reason: 'reviewed' };
    const assertion = signIdentity(KEY, { principal: 'bob', roles: ROLES.bob ?? [] }, id, approvalAssertionSubject(id, 'bob', 'approve', action), await env.currentTimeMs());
    await handle.executeUpdate('approve', { args: [{ ...action, assertion }] });
    const result = (await handle.result()) as ChangeStatus;
    expect(result.phase).toBe('applied');
    expect(result.approval?.state).toBe('approved');
    expect(stored()?.spec).toEqual(policy('443').spec);
  });

  it('commit-confirmed: not confirmed in time, the cluster policy is restored exactly and verified', async () => {
    const before = stored();
    const { handle } = await submit({ clusterPolicy: { namespace: NS, cilium: [policy('9090')] } }, { confirmTimeout: '30s' });
    await eventually(() => status(handle), (s) => s.phase === 'awaiting-confirmation', 'awaiting confirmation', 15_000);
    expect(stored()?.spec).toEqual(policy('9090').spec);
    const result = (await handle.result()) as ChangeStatus;
    expect(result.phase).toBe('reverted');
    expect(result.clusterPolicy?.phase).toBe('restored');
    expect(steps(result)).toContain('cluster policy: verify restore:ok');
    expect(stored()?.spec).toEqual(before?.spec);
  });

  it('refuses a request with neither a node part nor clusterPolicy, naming the fields and the rule', async () => {
    const { handle } = await submit({});
    const failure = await failureOf(handle);
    expect(failure.type).toBe('InvalidChangeRequest');
    expect(failure.status.issues).toEqual([
      { field: 'desired', message: 'give exactly one of "desired" (full state) or "patch", or only "clusterPolicy" (a cluster-only change)' },
      { field: 'targets', message: 'give exactly one of "targets" (node names) or "targetSelector" (labels over the inventory), or only "clusterPolicy" (a cluster-only change)' },
    ]);
  });

  it('refuses a clusterPolicy with a node part half given (targets without desired/patch)', async () => {
    const failure = await failureOf((await submit({ targets: ['n1'], clusterPolicy: { namespace: NS, cilium: [policy('80')] } })).handle);
    expect(failure.type).toBe('InvalidChangeRequest');
    expect(failure.status.issues).toEqual([{ field: 'desired', message: 'give exactly one of "desired" (full state) or "patch"' }]);
  });
});
