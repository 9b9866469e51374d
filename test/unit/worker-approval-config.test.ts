/**
 * Where the cluster worker's approval policy comes from: a file (FOS1_APPROVAL_POLICY_FILE) or
 * an ApprovalPolicy object (FOS1_APPROVAL_POLICY_NAME, which needs a cluster) — one of them.
 */
import { parseWorkerConfig } from '../../workers/config';

describe('worker configuration: the approval policy source', () => {
  const base = { FOS1_NODE_NAME: 'n1' };

  test('an ApprovalPolicy name with a kubeconfig is kept', () => {
    expect(parseWorkerConfig({ ...base, FOS1_KUBECONFIG: 'default', FOS1_APPROVAL_POLICY_NAME: 'fleet' })).toMatchObject({ approvalPolicyName: 'fleet', approvalPolicyFile: undefined });
  });

  test('a name without a cluster, both sources, or a name that is no object name are refused, naming the variable', () => {
    expect(() => parseWorkerConfig({ ...base, FOS1_APPROVAL_POLICY_NAME: 'fleet' })).toThrow(/FOS1_APPROVAL_POLICY_NAME: needs FOS1_KUBECONFIG/);
    expect(() => parseWorkerConfig({ ...base, FOS1_KUBECONFIG: 'default', FOS1_APPROVAL_POLICY_NAME: 'fleet', FOS1_APPROVAL_POLICY_FILE: '/etc/fos1/approvals.yaml' })).toThrow(/set one/);
    expect(() => parseWorkerConfig({ ...base, FOS1_KUBECONFIG: 'default', FOS1_APPROVAL_POLICY_NAME: 'Fleet Policy' })).toThrow(/FOS1_APPROVAL_POLICY_NAME must be a Kubernetes object name/);
  });
});
