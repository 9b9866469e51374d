/**
 * Policy change workflow (cluster task queue): turns fos1 firewall rules into Cilium policies
 * on the Kubernetes API, with a verified rollback.
 *
 *   validate + translate (pure, here) → policy-map check → snapshot → server-side dry-run
 *   → (dryRun stops) → apply + prune → read back and compare
 *   └─ on any failure after the apply began: restore the snapshot, read back, compare
 *
 * **Superseded, kept registered so runs already in flight finish: nothing starts it any more.**
 * The FirewallRule and FirewallZone controllers change Cilium policy with cluster-only changes
 * of the change workflow (workflows/cluster-only-change.ts: approvals, revisions and the durable
 * audit like every change); operators do the same with a change request's `clusterPolicy`
 * (docs/change-workflow.md). Add no new callers.
 *
 * One workflow covers one fos1 source object (a FirewallRule, or a set an operator names):
 * its Cilium objects carry the source's labels, and only those are ever pruned or restored.
 * The controller started it with a workflow id derived from the object, so one change per
 * object ran at a time.
 */
import { log, proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { ApplyResult, CiliumActivities, PolicySnapshot } from '../activities/cilium-policy';
import type { AuditRecord } from '../model/audit';
import { failure, FailureType, summariseFailure } from '../model/failures';
import { SearchAttributes } from '../model/naming';
import { cidrGroupSchema, firewallRuleSchema, firewallZoneSchema, type FirewallIssue } from '../model/firewall';
import { formatPath } from '../model/issue-path';
import { objectSetDifferences, translateCidrGroup, translateRule, TranslateError, type KubeObject, type PolicyMapEstimate, type PolicySource } from '../model/firewall-translate';
import { z } from 'zod';
import { AuditTrail, Compensations, failedBeforeChange, rollbackFailure } from './support';

const { readPolicies, checkPolicyMap, applyPolicies, restorePolicies } = proxyActivities<CiliumActivities>({
  startToCloseTimeout: '1 minute',
  // 429/5xx are retried (KubeUnavailable); conflicts and rejections are non-retryable.
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumAttempts: 5, nonRetryableErrorTypes: [FailureType.PolicyConflict, FailureType.PolicyRejected, FailureType.PolicyMapOverflow] },
});

const sourceSchema = z
  .object({
    kind: z.string().regex(/^[A-Za-z][A-Za-z0-9]{0,62}$/, 'must be a Kubernetes kind'),
    namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a namespace name'),
    name: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS-1123 label'),
  })
  .strict();

/** Input of {@link policyChangeWorkflow}: one JSON object (the Web UI's start form sends one). */
export const policyChangeInputSchema = z
  .object({
    changeId: z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/, 'must be 1–63 of lower-case letters, digits, "-" and "."'),
    author: z.string().min(1).max(256).default('system'),
    /** The fos1 object these policies belong to; pruning and restore stay inside it. */
    source: sourceSchema,
    /** Namespace of the rules (and of the pod zones and CiliumNetworkPolicies). */
    namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a namespace name'),
    /** The whole desired set for `source`: an empty list removes its policies. */
    rules: z.array(firewallRuleSchema).max(256).default([]),
    zones: z.array(firewallZoneSchema).max(256).default([]),
    cidrGroups: z.array(cidrGroupSchema).max(256).default([]),
    dryRun: z.boolean().default(false),
  })
  .strict();
export type PolicyChangeInput = z.input<typeof policyChangeInputSchema>;

/** What the workflow did. */
export interface PolicyChangeResult {
  changeId: string;
  outcome: 'planned' | 'applied';
  /** `Kind ns/name` applied, and pruned. */
  applied: string[];
  pruned: string[];
  estimates: PolicyMapEstimate[];
  audit: AuditRecord[];
}

/** Applies a set of firewall rules as Cilium policies; restores the previous objects on failure. */
export async function policyChangeWorkflow(rawInput: unknown): Promise<PolicyChangeResult> {
  const parsed = policyChangeInputSchema.safeParse(rawInput);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i): FirewallIssue => ({ field: formatPath(i.path), message: i.message }));
    throw failure(FailureType.InvalidPolicyChange, `invalid policy change:\n${issues.map((i) => `${i.field}: ${i.message}`).join('\n')}`, [issues]);
  }
  const input = parsed.data;
  const source: PolicySource = input.source;
  // The same attributes as change workflows, so the Web UI finds policy changes the same way.
  upsertSearchAttributes([
    { key: SearchAttributes.changeId, value: input.changeId },
    { key: SearchAttributes.author, value: input.author },
    { key: SearchAttributes.status, value: 'applying' },
  ]);
  const setStatus = (status: string) => upsertSearchAttributes([{ key: SearchAttributes.status, value: status }]);
  const trail = new AuditTrail(input.changeId, input.author);
  const { records } = trail;
  const step = trail.step.bind(trail);

  let desired: KubeObject[];
  try {
    desired = [
      ...input.cidrGroups.map((g) => translateCidrGroup(g, source, input.changeId)),
      ...input.rules.map((rule, i) => {
        try {
          return translateRule({ rule, zones: input.zones, namespace: input.namespace, source, changeId: input.changeId });
        } catch (err) {
          if (err instanceof TranslateError) throw new TranslateError(`rules[${i}].${err.field}`, err.message.slice(err.field.length + 2));
          throw err;
        }
      }),
    ];
  } catch (err) {
    if (!(err instanceof TranslateError)) throw err;
    setStatus('failed');
    throw failure(FailureType.InvalidPolicyChange, `invalid policy change:\n${err.message}`);
  }
  trail.record('translate', 'ok', Date.now(), `${desired.length} objects`);

  let estimates: PolicyMapEstimate[];
  let snapshot: PolicySnapshot;
  let planned: ApplyResult;
  try {
    estimates = await step('policy-map check', () => checkPolicyMap({ source, desired }), (e) => `largest ${e[0]?.entries ?? 0} entries`);
    snapshot = await step('snapshot', () => readPolicies({ source }), (s) => `${s.objects.length} objects`);
    // The apiserver's own validation (schema, CEL) of every object before anything is written.
    planned = await step('dry-run', () => applyPolicies({ source, desired, dryRun: true }), (r) => `${r.applied.length} to apply, ${r.pruned.length} to prune`);
  } catch (err) {
    // Nothing was written yet: fail with the activity's own type (PolicyMapOverflow, PolicyRejected, …).
    setStatus('failed');
    throw failedBeforeChange(err, records);
  }
  if (input.dryRun) {
    setStatus('planned');
    return { changeId: input.changeId, outcome: 'planned', applied: planned.applied, pruned: planned.pruned, estimates, audit: records };
  }

  // Registered before the apply: one that fails half way has already written some objects.
  const compensations = new Compensations(trail);
  compensations.add('restore', () => restorePolicies({ snapshot }));
  let applied: ApplyResult | undefined;
  try {
    applied = await step('apply', () => applyPolicies({ source, desired }), (r) => `${r.applied.length} applied, ${r.pruned.length} pruned`);
    const result = applied;
    await step('verify', async () => {
      const differences = objectSetDifferences(result.stored, (await readPolicies({ source })).objects);
      if (differences.length > 0) throw failure(FailureType.PolicyVerificationFailed, differences.join('\n'));
    });
    setStatus('applied');
    return { changeId: input.changeId, outcome: 'applied', applied: result.applied, pruned: result.pruned, estimates, audit: records };
  } catch (err) {
    const cause = summariseFailure(err);
    log.warn('policy change failed; restoring the snapshot', { changeId: input.changeId, cause });
    const differences = await compensations.run({ step: 'verify restore', differences: async () => objectSetDifferences(snapshot.objects, (await readPolicies({ source })).objects), ok: 'equal to snapshot' });
    setStatus(differences.length === 0 ? 'rolled-back' : 'rollback-failed');
    throw rollbackFailure(POLICY_ROLLBACK, cause, differences, records);
  }
}

/** How {@link policyChangeWorkflow} ends after a rollback. */
const POLICY_ROLLBACK = { rolledBack: FailureType.PolicyRolledBack, rollbackFailed: FailureType.PolicyRollbackFailed } as const;
