/**
 * The approval policy from the cluster (FOS1_APPROVAL_POLICY_NAME): the ApprovalPolicy CRD
 * installed on a real apiserver, the object read by the cluster worker's activity with the
 * file's validation, refusals naming the field, and a missing object refusing (never "no
 * approval needed").
 */
import { createApprovalActivities, readApprovalPolicyObject, APPROVAL_POLICY_API_VERSION } from '../../activities/approval';
import type { KubeApiServer } from '../../k8s/harness';
import { parseApprovalPolicy } from '../../model/approval-policy';
import { describeKube, startKubeWithCrds } from '../helpers/kube';

describeKube('approval policy as an ApprovalPolicy object (real apiserver)', [], () => {
  let kube: KubeApiServer;

  beforeAll(async () => {
    kube = await startKubeWithCrds();
  }, 300_000);
  afterAll(async () => {
    await kube?.stop();
  });

  const policy = {
    rules: [{ name: 'edge-needs-two', match: { nodes: ['edge-*'] }, approvals: 2, approverRole: 'netops' }],
    windows: [{ days: ['Sat'], start: '22:00', end: '02:00', timeZone: 'Europe/Berlin' }],
  };
  const write = (name: string, spec: unknown) => kube.client.apply({ apiVersion: APPROVAL_POLICY_API_VERSION, kind: 'ApprovalPolicy', metadata: { name }, spec } as never, { fieldManager: 'test', force: true });

  test('the object is the policy: read through the apiserver and checked like the file', async () => {
    await write('fleet', policy);
    const expected = parseApprovalPolicy(policy);
    if (!expected.ok) throw new Error(expected.issues.join('; '));
    const activities = createApprovalActivities({ policyObject: { kube: kube.client, name: 'fleet' } });
    expect(await activities.loadApprovalPolicy()).toEqual(expected.policy);
    // An edit applies to the next change without a restart.
    await write('fleet', { ...policy, rules: [{ ...policy.rules[0], approvals: 3 }] });
    expect((await activities.loadApprovalPolicy()).rules[0]?.approvals).toBe(3);
  });

  test('a bad object is refused naming spec.<field> and the rule; a missing one refuses too', async () => {
    await write('broken', { rules: [{ name: 'x', approvals: -1 }] });
    await expect(readApprovalPolicyObject({ kube: kube.client, name: 'broken' })).rejects.toMatchObject({
      type: 'InvalidApprovalPolicy',
      message: expect.stringMatching(/ApprovalPolicy broken is invalid:\nspec\.rules\[0\]\.approvals: /),
    });
    await expect(readApprovalPolicyObject({ kube: kube.client, name: 'absent' })).rejects.toMatchObject({
      type: 'InvalidApprovalPolicy',
      message: expect.stringContaining('ApprovalPolicy absent does not exist'),
    });
  });
});
