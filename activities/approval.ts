/**
 * The `loadApprovalPolicy` local activity: reads the approval policy file
 * (FOS1_APPROVAL_POLICY_FILE, YAML or JSON; model/approval-policy.ts) on the cluster
 * worker. As a local activity its result is recorded in the change's history, so the
 * policy a change was judged by is part of its record and a replay sees the same one;
 * an edited file applies to the next change without a restart.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { EMPTY_POLICY, parseApprovalPolicy, type ApprovalPolicy } from '../model/approval-policy';
import { failure, FailureType } from '../model/failures';

/** What the approval activities need: the policy file, or none (no approvals, no windows). */
export interface ApprovalActivityDeps {
  policyFile: string | undefined;
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

/** Creates the approval activities. */
export function createApprovalActivities(deps: ApprovalActivityDeps) {
  return {
    /** The policy in force now; the empty policy (nothing required) when no file is configured. */
    async loadApprovalPolicy(): Promise<ApprovalPolicy> {
      return deps.policyFile ? readApprovalPolicyFile(deps.policyFile) : EMPTY_POLICY;
    },
  };
}

/** The approval activities' interface, for `proxyLocalActivities`. */
export type ApprovalActivities = ReturnType<typeof createApprovalActivities>;
