/**
 * Quarantine workflow (cluster task queue): isolates the endpoint that owns an address by
 * labelling its Pod, with the one fos1-owned CiliumClusterwideNetworkPolicy that selects the
 * label; and lifts it again. The enforcement workflow runs it as a child (see
 * {@link enforceQuarantine} and {@link liftQuarantine}, the whole hook it calls).
 *
 *   apply: find the pod (status.podIP / podIPs)
 *          → policy: render → snapshot → if absent or different: policy-map check → dry-run
 *            → apply → read back (restore the snapshot on failure)
 *          → label: read (what was there) → server-side apply of the label → read back: pod
 *            labelled, policy present and selecting it
 *          └─ on any failure after the label: take the label off, read back that the pod is
 *             as it was, fail `QuarantineRolledBack` (or `QuarantineRollbackFailed`)
 *   lift:  take the label off (fos1's field only) → read back: fos1 no longer owns it
 *
 * The policy is shared by every endpoint quarantined with that label and stays when the last
 * one is lifted: it then selects nothing, so it costs no policy-map entries and enforces
 * nothing. Pruning it on the last lift would race a quarantine starting at the same moment
 * (that pod labelled, its policy deleted under it); keeping it means a label is never on a
 * pod without its policy. For the same reason a failed label step does not remove the policy.
 */
import { executeChild, log, proxyLocalActivities, workflowInfo, type RetryPolicy } from '@temporalio/workflow';
import type { CiliumActivities, PolicySnapshot } from '../activities/cilium-policy';
import type { EndpointLabelState, EndpointRef, QuarantineActivities } from '../activities/quarantine';
import type { AuditRecord } from '../model/audit';
import { failure, FailureType, summariseFailure, TemporalFailureType, type FailureTypeName } from '../model/failures';
import { objectSetDifferences, type KubeObject } from '../model/firewall-translate';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { DEFAULT_QUARANTINE_LABEL, parseQuarantineLabel, policySelects, samePolicy, quarantineAddress, QuarantineInputError, quarantineSource, type QuarantineLabel } from '../model/quarantine';
import { shortHash } from '../model/short-hash';
import { AuditTrail, Compensations, failedBeforeChange, retryUntil, rollbackFailure } from './support';

// NotFoundError: this cluster worker lacks the activities; retrying it will not grow them.
const retry: RetryPolicy = { initialInterval: '500ms', backoffCoefficient: 2, maximumAttempts: 5, nonRetryableErrorTypes: [TemporalFailureType.NotFound, FailureType.QuarantineUnavailable] };
// Local activities: the workflow runs on the cluster worker, which holds the Kubernetes
// client, so skipping the server's activity dispatch saves a round trip per step (about
// 100 ms each on the loaded dev machine; bench/quarantine). scheduleToClose bounds a step,
// retries included: the enforcement workflow waits on this one and must get a refusal
// rather than stall.
const timeouts = { startToCloseTimeout: '1 minute', scheduleToCloseTimeout: '3 minutes', retry } as const;
const { findEndpoint, renderQuarantinePolicy, readEndpointLabel, labelEndpoint, unlabelEndpoint } = proxyLocalActivities<QuarantineActivities>(timeouts);
const { readPolicies, checkPolicyMap, applyPolicies, restorePolicies } = proxyLocalActivities<CiliumActivities>(timeouts);

/** How {@link quarantineWorkflow} ends after a rollback. */
const QUARANTINE_ROLLBACK = { rolledBack: FailureType.QuarantineRolledBack, rollbackFailed: FailureType.QuarantineRollbackFailed } as const;

/** Input of {@link quarantineWorkflow}. */
export interface QuarantineRequest {
  changeId: string;
  author: string;
  operation: 'apply' | 'lift';
  /** `key=value` Pod label (default `fos1.io/quarantine=true`). */
  label?: string;
  /** apply: the endpoint's address (a /32 or /128 prefix, or a bare address). */
  target?: string;
  /** lift: the endpoint apply labelled. */
  endpoint?: EndpointRef;
  /**
   * Test hook: fail after this step as if it had gone wrong (the rollback is real). Only
   * `label` (after the label is applied, before it is verified) exists.
   */
  failAfter?: 'label';
}

/** What the workflow did. */
export interface QuarantineResult {
  changeId: string;
  outcome: 'quarantined' | 'lifted';
  endpoint: EndpointRef;
  /** Name of the CiliumClusterwideNetworkPolicy. */
  policy: string;
  /** Whether this run created or changed the policy. */
  policyApplied: boolean;
  audit: AuditRecord[];
}

/** Labels (or unlabels) one endpoint; restores what was there on failure. */
export async function quarantineWorkflow(input: QuarantineRequest): Promise<QuarantineResult> {
  let label: QuarantineLabel;
  let address = '';
  try {
    if (!input || typeof input.changeId !== 'string' || !/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/.test(input.changeId)) throw new QuarantineInputError('changeId', 'must be 1–63 of lower-case letters, digits, "-" and "."');
    if (input.operation !== 'apply' && input.operation !== 'lift') throw new QuarantineInputError('operation', 'must be "apply" or "lift"');
    label = parseQuarantineLabel(input.label ?? DEFAULT_QUARANTINE_LABEL, 'label');
    if (input.operation === 'apply') address = quarantineAddress(String(input.target ?? ''), 'target');
    else if (!input.endpoint?.name || !input.endpoint.namespace || !input.endpoint.uid) throw new QuarantineInputError('endpoint', 'lift needs the endpoint (namespace, name, uid) apply labelled');
  } catch (err) {
    if (!(err instanceof QuarantineInputError)) throw err;
    throw failure(FailureType.InvalidQuarantine, `invalid quarantine: ${err.message}`);
  }
  const labelText = `${label.key}=${label.value}`;
  const source = quarantineSource(label);
  const trail = new AuditTrail(input.changeId, input.author);
  const { records } = trail;
  const step = trail.step.bind(trail);
  // Activity failures keep their own type (NoEndpoint, LabelConflict, …) so callers branch on it.
  const fail = (err: unknown): never => {
    throw failedBeforeChange(err, records);
  };

  if (input.operation === 'lift') {
    const endpoint = input.endpoint!;
    try {
      const { podGone } = await step('unlabel', () => unlabelEndpoint({ endpoint }), (r) => (r.podGone ? 'pod gone: nothing to remove' : `${endpoint.namespace}/${endpoint.name}`));
      if (!podGone) {
        await step('verify unlabel', async () => {
          const after = await readEndpointLabel({ endpoint, label: labelText });
          if (after.exists && after.ownedByFos1) throw failure(FailureType.QuarantineVerificationFailed, `fos1 still owns ${labelText} on ${endpoint.namespace}/${endpoint.name}`);
          return after;
        }, (after) => (after.value === undefined ? 'label absent' : `label kept: also set by ${after.otherOwners.join(', ')}`));
      }
    } catch (err) {
      fail(err);
    }
    return { changeId: input.changeId, outcome: 'lifted', endpoint, policy: source.name, policyApplied: false, audit: records };
  }

  // ── apply ──
  let endpoint: EndpointRef;
  let desired: KubeObject;
  let snapshot: PolicySnapshot;
  let policyApplied = false;
  try {
    endpoint = await step('find endpoint', () => findEndpoint({ address }), (e) => `${address} is pod ${e.namespace}/${e.name}`);
    desired = await step('render policy', () => renderQuarantinePolicy({ label: labelText, changeId: input.changeId }), (p) => p.metadata.name);
    snapshot = await step('snapshot policy', () => readPolicies({ source }), (s) => `${s.objects.length} objects`);
  } catch (err) {
    return fail(err);
  }
  const current = snapshot.objects.find((o) => o.metadata.name === desired.metadata.name);
  // Written only when absent or different: concurrent quarantines with one label then do not
  // rewrite (or roll back) the policy under each other.
  if (!samePolicy(desired, current) || snapshot.objects.length !== 1) {
    try {
      await step('policy-map check', () => checkPolicyMap({ source, desired: [desired] }), (e) => `largest ${e[0]?.entries ?? 0} entries`);
      await step('dry-run policy', () => applyPolicies({ source, desired: [desired], dryRun: true }));
    } catch (err) {
      return fail(err);
    }
    // Registered before the apply: one that fails half way has already written the policy.
    const policyUndo = new Compensations(trail);
    policyUndo.add('restore policy', () => restorePolicies({ snapshot }));
    try {
      const applied = await step('apply policy', () => applyPolicies({ source, desired: [desired] }), (r) => `${r.applied.join(', ')}${r.pruned.length ? `; pruned ${r.pruned.join(', ')}` : ''}`);
      await step('verify policy', async () => {
        const d = objectSetDifferences(applied.stored, (await readPolicies({ source })).objects);
        if (d.length > 0) throw failure(FailureType.QuarantineVerificationFailed, d.join('\n'));
      });
      policyApplied = true;
    } catch (err) {
      const cause = summariseFailure(err);
      const differences = await policyUndo.run({ step: 'verify policy restore', differences: async () => objectSetDifferences(snapshot.objects, (await readPolicies({ source })).objects), ok: 'equal to snapshot' });
      throw rollbackFailure(QUARANTINE_ROLLBACK, cause, differences, records);
    }
  } else {
    trail.record('policy', 'skipped', Date.now(), `${desired.metadata.name} already in place`);
  }

  let before: EndpointLabelState;
  try {
    before = await step('read label', () => readEndpointLabel({ endpoint, label: labelText }), describeLabel);
    if (before.value !== undefined && before.value !== label.value) {
      throw failure(FailureType.LabelConflict, `${endpoint.namespace}/${endpoint.name} already has ${label.key}=${before.value} (set by ${before.otherOwners.join(', ') || 'someone else'}); fos1 does not overwrite it`);
    }
  } catch (err) {
    return fail(err);
  }
  const labelUndo = new Compensations(trail);
  try {
    // Registered before the label: an apply that times out may still have landed.
    labelUndo.add('unlabel (rollback)', () => unlabelEndpoint({ endpoint }));
    await step('label', () => labelEndpoint({ endpoint, label: labelText }), () => `${labelText} on ${endpoint.namespace}/${endpoint.name}`);
    if (input.failAfter === 'label') throw failure(FailureType.InjectedFailure, 'injected failure after the label step (failAfter: label)');
    await step('verify', async () => {
      const after = await readEndpointLabel({ endpoint, label: labelText });
      const policy = (await readPolicies({ source })).objects.find((o) => o.metadata.name === desired.metadata.name);
      const problems = [
        ...(after.exists ? [] : [`pod ${endpoint.namespace}/${endpoint.name} (uid ${endpoint.uid}) is gone`]),
        ...(after.value === label.value && after.ownedByFos1 ? [] : [`pod does not carry ${labelText} under fos1's field manager`]),
        ...(policy ? [] : [`${desired.metadata.name} is missing`]),
        ...(policy && !policySelects(policy, after.labels) ? [`${desired.metadata.name} does not select the pod`] : []),
      ];
      if (problems.length > 0) throw failure(FailureType.QuarantineVerificationFailed, problems.join('; '));
    }, () => `pod labelled and selected by ${desired.metadata.name}`);
  } catch (err) {
    const cause = summariseFailure(err);
    log.warn('quarantine failed after the label step; taking the label off', { changeId: input.changeId, cause });
    const differences = await labelUndo.run({
      step: 'verify rollback',
      differences: async () => {
        const after = await readEndpointLabel({ endpoint, label: labelText });
        return after.exists && (after.value !== before.value || after.ownedByFos1 !== before.ownedByFos1)
          ? [`label is ${after.value ?? 'absent'} (fos1 owns it: ${after.ownedByFos1}), was ${before.value ?? 'absent'} (fos1 owned it: ${before.ownedByFos1})`]
          : [];
      },
      ok: `label as before (${describeLabel(before)})`,
    });
    throw rollbackFailure(QUARANTINE_ROLLBACK, cause, differences, records);
  }
  return { changeId: input.changeId, outcome: 'quarantined', endpoint, policy: desired.metadata.name, policyApplied, audit: records };
}

function describeLabel(s: EndpointLabelState): string {
  if (!s.exists) return 'pod gone';
  return s.value === undefined ? 'label absent' : `label ${s.value}${s.ownedByFos1 ? ' (fos1)' : ''}${s.otherOwners.length ? ` (${s.otherOwners.join(', ')})` : ''}`;
}

// ─── the enforcement hook ───────────────────────────────────────────────────────────

/** Refusal codes a quarantine adds to the guard's (the enforcement workflow audits them). */
export type QuarantineRefusalCode = 'no-endpoint' | 'ambiguous-endpoint' | 'host-network-endpoint' | 'protected-namespace' | 'label-conflict' | 'invalid-quarantine' | 'quarantine-unavailable' | 'quarantine-failed';

const REFUSAL_BY_TYPE: Partial<Record<FailureTypeName | (typeof TemporalFailureType)['NotFound'], QuarantineRefusalCode>> = {
  [FailureType.NoEndpoint]: 'no-endpoint',
  [FailureType.AmbiguousEndpoint]: 'ambiguous-endpoint',
  [FailureType.HostNetworkEndpoint]: 'host-network-endpoint',
  [FailureType.ProtectedNamespace]: 'protected-namespace',
  [FailureType.LabelConflict]: 'label-conflict',
  [FailureType.InvalidQuarantine]: 'invalid-quarantine',
  // The cluster worker was started without Kubernetes (FOS1_KUBECONFIG unset).
  [FailureType.QuarantineUnavailable]: 'quarantine-unavailable',
  [TemporalFailureType.NotFound]: 'quarantine-unavailable',
};

/** An endpoint in quarantine, as the enforcement workflow remembers it for the lift. */
export interface QuarantinedEndpoint extends EndpointRef {
  label: string;
}

/**
 * Quarantines the endpoint owning `target` through a child {@link quarantineWorkflow}.
 * The enforcement workflow calls this for a `quarantine` decision the guard let through.
 */
export async function enforceQuarantine(
  target: string,
  decision: { quarantineLabel?: string },
  author: string,
): Promise<{ ok: true; changeId: string; endpoint: QuarantinedEndpoint } | { ok: false; code: QuarantineRefusalCode; reason: string }> {
  const changeId = quarantineChangeId('quarantine', target);
  const label = decision.quarantineLabel ?? DEFAULT_QUARANTINE_LABEL;
  try {
    const request: QuarantineRequest = { changeId, author, operation: 'apply', target, label };
    const result = await executeChild(quarantineWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `quarantine-${changeId}`, args: [request] });
    return { ok: true, changeId, endpoint: { ...result.endpoint, label } };
  } catch (err) {
    const cause = summariseFailure(err);
    return { ok: false, code: REFUSAL_BY_TYPE[cause.type as FailureTypeName] ?? 'quarantine-failed', reason: `quarantine ${changeId} (${cause.type}): ${cause.message}` };
  }
}

/**
 * Lifts a quarantine; retries every 30 s until the label is off (a lift must not be lost),
 * reporting each failed attempt through `onFailure` for the audit trail.
 */
export async function liftQuarantine(endpoint: QuarantinedEndpoint, author: string, onFailure: (attempt: number, reason: string) => void): Promise<string> {
  const { changeId } = await retryUntil(async () => {
    const changeId = quarantineChangeId('unquarantine', `${endpoint.namespace}/${endpoint.name}`);
    const { label, ...ref } = endpoint;
    try {
      await executeChild(quarantineWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `quarantine-${changeId}`, args: [{ changeId, author, operation: 'lift', label, endpoint: ref }] });
      return { ok: true as const, changeId };
    } catch (err) {
      return { ok: false as const, reason: `${changeId}: ${summariseFailure(err).message}` };
    }
  }, onFailure);
  return changeId;
}

function quarantineChangeId(step: string, what: string): string {
  // DNS-label ids; the workflow clock and attempt make them unique per run and step.
  return `enf-${step}-${shortHash(`${workflowInfo().workflowId}/${what}`)}-${Date.now().toString(36)}`;
}
