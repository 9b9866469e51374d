/**
 * The `loadApprovalPolicy` local activity: reads the approval policy on the cluster worker,
 * from a file (FOS1_APPROVAL_POLICY_FILE, YAML or JSON) or, when a cluster is configured,
 * from an ApprovalPolicy object (FOS1_APPROVAL_POLICY_NAME; deploy/crds), both checked by
 * model/approval-policy.ts. As a local activity its result is recorded in the change's history, so the
 * policy a change was judged by is part of its record and a replay sees the same one;
 * an edited file applies to the next change without a restart.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { EMPTY_POLICY, parseApprovalPolicy, type ApprovalPolicy } from '../model/approval-policy';
import { failure, FailureType } from '../model/failures';

/** The ApprovalPolicy kind (deploy/crds/security.fos1.io_approvalpolicies.yaml). */
export const APPROVAL_POLICY_API_VERSION = 'security.fos1.io/v1alpha1';

/** Where a cluster's policy lives: one cluster-scoped ApprovalPolicy, read through the apiserver. */
export interface ApprovalPolicyObjectSource {
  kube: { get(ref: { apiVersion: string; kind: string; name: string }): Promise<{ spec?: unknown } | undefined> };
  name: string;
}

/** What the approval activities need: the policy file, the policy object, or neither (no approvals, no windows). */
export interface ApprovalActivityDeps {
  policyFile?: string | undefined;
  policyObject?: ApprovalPolicyObjectSource | undefined;
}

/** Reads and validates a policy file; the error names the file and every `field: rule`, never the content. */
export async function readApprovalPolicyFile(path: string): Promise<ApprovalPolicy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw failure(FailureType.InvalidApprovalPolicy, `approval policy file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let doc: unknown;
  try {
    // YAML is a superset of JSON: one parser for both.
    doc = parseYaml(text);
  } catch (err) {
    throw failure(FailureType.InvalidApprovalPolicy, `approval policy file ${path} is not valid YAML/JSON${(err as { linePos?: { line: number }[] }).linePos?.[0] ? ` (line ${(err as { linePos: { line: number }[] }).linePos[0]?.line})` : ''}`);
  }
  const parsed = parseApprovalPolicy(doc);
  if (!parsed.ok) throw failure(FailureType.InvalidApprovalPolicy, `approval policy file ${path} is invalid:\n${parsed.issues.join('\n')}`);
  return parsed.policy;
}

/**
 * Reads and validates the ApprovalPolicy object. A missing object is an error, not "no
 * approvals": a worker told to take its policy from the cluster refuses changes (nothing
 * applied) rather than letting them through unreviewed because the object was deleted.
 */
export async function readApprovalPolicyObject(source: ApprovalPolicyObjectSource): Promise<ApprovalPolicy> {
  const what = `ApprovalPolicy ${source.name}`;
  let stored: { spec?: unknown } | undefined;
  try {
    stored = await source.kube.get({ apiVersion: APPROVAL_POLICY_API_VERSION, kind: 'ApprovalPolicy', name: source.name });
  } catch (err) {
    // Retryable (not an ApplicationFailure): the apiserver may be back on the next attempt.
    throw new Error(`${what} cannot be read from the cluster: ${(err as Error).message}`);
  }
  if (stored === undefined) throw failure(FailureType.InvalidApprovalPolicy, `${what} does not exist: create it (docs/approvals.md) or unset FOS1_APPROVAL_POLICY_NAME`);
  const parsed = parseApprovalPolicy(stored.spec);
  if (!parsed.ok) throw failure(FailureType.InvalidApprovalPolicy, `${what} is invalid:\n${parsed.issues.map((i) => `spec.${i}`).join('\n')}`);
  return parsed.policy;
}

/** Creates the approval activities. */
export function createApprovalActivities(deps: ApprovalActivityDeps) {
  return {
    /** The policy in force now; the empty policy (nothing required) when neither source is configured. */
    async loadApprovalPolicy(): Promise<ApprovalPolicy> {
      if (deps.policyObject) return readApprovalPolicyObject(deps.policyObject);
      return deps.policyFile ? readApprovalPolicyFile(deps.policyFile) : EMPTY_POLICY;
    },
  };
}

/** The approval activities' interface, for `proxyLocalActivities`. */
export type ApprovalActivities = ReturnType<typeof createApprovalActivities>;
