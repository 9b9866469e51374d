/**
 * Approvals through the real API, Temporal dev server and a real node (netns): the API
 * authenticates the approver and signs the vote, the cluster worker verifies it. The
 * author's own approval is refused (403), a second user's approval lets the change apply,
 * and the route is in the namespace afterwards. Privileged: root, netns, bpffs, Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import type { TestPrincipals } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { LAN_GATEWAY_V4, type TestNamespace } from '../helpers/netns';
import { startTestApi, type TestApi } from '../helpers/test-api';
import { startTestNode, type TestNode } from '../helpers/test-node';

const NODE = 'approval-node';
const IDENTITY_KEY = randomBytes(32);
const PRINCIPALS = { alice: ['operator', 'approver'], bob: ['approver'], vic: ['viewer'] } satisfies TestPrincipals;

describePrivileged('approvals through the HTTP API (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let node: TestNode;
  let api: TestApi<typeof PRINCIPALS>;
  let ns: TestNamespace;
  let base: string;

  beforeAll(async () => {
    const policyFile = join(mkdtempSync(join(tmpdir(), 'fos1-approval-api-')), 'policy.yaml');
    writeFileSync(policyFile, 'rules:\n  - name: routes-need-one\n    match: { subsystems: [routes] }\n    approvals: 1\n    approverRole: approver\n    expiresAfter: 10m\n');
    node = await startTestNode({ node: NODE, nsPrefix: 'fos1appr', pinPrefix: 'fos1-test-approval', workers: { identityKey: IDENTITY_KEY, approvalPolicyFile: policyFile } });
    ns = node.ns!;
    api = await startTestApi(node.env.client, PRINCIPALS, { identityKey: IDENTITY_KEY });
    base = api.base;
  });

  afterAll(async () => {
    await api?.close();
    await node?.stop();
  });

  async function call(method: string, path: string, as: keyof typeof PRINCIPALS, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${api.tokens[as]}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }
  const phaseOf = (changeId: string, phase: string) =>
    eventually(() => call('GET', `/v1/changes/${changeId}`, 'vic'), (r) => r.status === 200 && r.json.phase === phase, `change ${changeId} ${phase}`, 30_000).then((r) => r.json);
  const routes = () => (ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][])[0]?.map((r) => r.dst) ?? [];

  test('the author cannot approve their own change (403); a second user\'s approval applies it', async () => {
    const changeId = `appr-${randomBytes(3).toString('hex')}`;
    const submitted = await call('POST', '/v1/changes', 'alice', { id: changeId, reason: 'approval api test', targets: [NODE], patch: { routes: { upsert: [{ destination: '10.93.0.0/24', gateway: LAN_GATEWAY_V4 }] } } });
    expect(submitted.status).toBe(202);
    const pending = await phaseOf(changeId, 'awaiting-approval');
    const approval = pending.approval as { planDigest: string; eligibleRoles: string[]; excluded: string[]; plan: Record<string, string[]> };
    expect(approval).toMatchObject({ eligibleRoles: ['approver'], excluded: ['alice'], plan: { [NODE]: [`+ route 10.93.0.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`] } });
    expect(routes()).not.toContain('10.93.0.0/24');

    const self = await call('POST', `/v1/changes/${changeId}/approve`, 'alice', { planDigest: approval.planDigest });
    expect(self.status).toBe(403);
    expect(self.json).toMatchObject({ type: 'SelfApprovalRefused', error: expect.stringContaining('alice is the author') });
    // A viewer lacks the approve permission altogether.
    expect((await call('POST', `/v1/changes/${changeId}/approve`, 'vic', { planDigest: approval.planDigest })).status).toBe(403);
    // Someone else's name in the body is refused.
    expect((await call('POST', `/v1/changes/${changeId}/approve`, 'bob', { by: 'alice', planDigest: approval.planDigest })).status).toBe(403);
    expect((await phaseOf(changeId, 'awaiting-approval')).phase).toBe('awaiting-approval');

    const approved = await call('POST', `/v1/changes/${changeId}/approve`, 'bob', { planDigest: approval.planDigest, reason: 'reviewed' });
    expect(approved.status).toBe(200);
    expect(approved.json.received).toEqual([expect.objectContaining({ by: 'bob', verified: true, counts: true, decision: 'approve' })]);

    const done = await phaseOf(changeId, 'applied');
    expect(routes()).toContain('10.93.0.0/24');
    const audit = done.audit as { actor: string; step: string; result: string; actorVerified?: boolean }[];
    expect(audit.filter((r) => r.step === 'approve').map((r) => `${r.actor}:${r.result}`)).toEqual(['alice:failed', 'bob:ok']);
    // Approving again once it is applied is a conflict.
    expect((await call('POST', `/v1/changes/${changeId}/approve`, 'bob', {})).status).toBe(409);
  });
});
