/**
 * The change workflow's Cilium step: the cluster-scoped policy a change request carries
 * (`clusterPolicy`, model/cluster-policy.ts), validated, applied and rolled back together
 * with the node steps. The order, and why:
 *
 *   validate + translate (pure) → every target polling → **prepare**: policy-map estimate,
 *   server-side dry-run of every object against the cluster's CRDs, snapshot (before any node
 *   is touched; a dry-run change stops here with the plan in `status.clusterPolicy`) →
 *   approval gate (the cluster plan is part of the approved digest) → [first wave's window] →
 *   **apply** once, before the first wave (allow before routes: a route must never lead into
 *   traffic the policy does not admit yet), read back → waves → [confirm] → commit
 *
 *   rollback (a node failed, a gate, an abort, no confirmation): every node first, newest
 *   wave first, then **restore** the cluster policy (the reverse of apply), read back against
 *   the snapshot.
 *
 * Cluster policy is one cluster-wide object set: it cannot be staged by wave, so it lands
 * before the canary and stays through every bake; a rollout that fails at any wave takes it
 * back. A change with cluster policy on a cluster worker without Kubernetes is refused before
 * anything is applied (`ClusterPolicyUnavailable`).
 *
 * Replay: the step's commands only run for requests with `clusterPolicy`, behind
 * `patched('cilium-step')` (docs/workflow-versioning.md).
 */
import { patched, proxyActivities } from '@temporalio/workflow';
import type { ClusterPlan, ClusterPolicyActivities, ClusterRejection, ClusterSnapshot } from '../activities/cluster-policy';
import { clusterPolicyObjects, objectRefKey, rejectionIssue, type ClusterPolicyObjects } from '../model/cluster-policy';
import { formatIssues, type ChangeRequest, type ValidationIssue } from '../model/change-request';
import { FailureType, summariseFailure, type FailureTypeName } from '../model/failures';
import type { KubeObject } from '../model/firewall-translate';
import type { AuditTrail } from './support';

const NON_RETRYABLE = [FailureType.PolicyConflict, FailureType.PolicyRejected, FailureType.PolicyMapOverflow, FailureType.ClusterPolicyUnavailable];
/**
 * Validate, apply and its read-back: an unreachable apiserver (or 429/5xx: KubeUnavailable)
 * is retried 1 s, 2 s, 4 s, then every 5 s, for up to {@link CLUSTER_APPLY_RETRY_BOUND}; then
 * the change rolls back (or, before anything was applied, is refused). Attempts are not
 * counted: five (the old bound) gave up on an apiserver that was restarting for 20 s, and the
 * change rolled back although the apiserver was back moments later (test/chaos/apiserver-down).
 */
export const CLUSTER_APPLY_RETRY_BOUND = '10 minutes';
const { prepareClusterPolicy, applyClusterPolicy, readClusterPolicy } = proxyActivities<ClusterPolicyActivities>({
  startToCloseTimeout: '2 minutes',
  scheduleToCloseTimeout: CLUSTER_APPLY_RETRY_BOUND,
  // 429/5xx/unreachable are retried (KubeUnavailable); conflicts, rejections and a missing cluster are not.
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE },
});
/**
 * A rollback (the restore and its read-back) keeps trying, at most 5 s apart, for as long as
 * the apiserver is away: giving up leaves the cluster half-changed (the old bound, 12
 * attempts up to 30 s apart, ended `rollback-failed` after some 3.5 minutes of outage per
 * round), and 5 s apart it is back in step within seconds of the apiserver. What cannot heal
 * is not retried: no cluster, or the apiserver refusing the snapshot itself.
 */
const { restoreClusterPolicy, readClusterPolicy: readRestored } = proxyActivities<ClusterPolicyActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '5s', nonRetryableErrorTypes: [FailureType.ClusterPolicyUnavailable, FailureType.PolicyRejected] },
});

/** The cluster policy part of the change's status. */
export interface ClusterPolicyStatus {
  phase: 'planned' | 'applying' | 'applied' | 'restoring' | 'restored' | 'restore-failed';
  /** One line per object: `+` created, `~` changed, `=` unchanged, `-` pruned. */
  plan: string[];
  /** After a failed apply, verify or restore: what differs. */
  differences?: string[];
}

/** What the step needs from the change workflow. */
export interface ClusterPolicyHost {
  request: ChangeRequest;
  trail: AuditTrail;
  status: { clusterPolicy?: ClusterPolicyStatus; issues?: ValidationIssue[] };
  /** Ends the change before anything was applied (the workflow's finishError). */
  fail(phase: 'rejected', message: string, type: FailureTypeName): Error;
}

/** One change's cluster policy, prepared; see the module comment for the order. */
export class ClusterPolicyStep {
  private started = false;
  private restored = false;
  private restoreClean = true;

  private constructor(
    private readonly host: ClusterPolicyHost,
    private readonly objects: ClusterPolicyObjects,
    private readonly prepared: ClusterPlan,
  ) {}

  /**
   * Validates the request's cluster policy against the cluster before any node is touched.
   * Undefined when the request carries none; throws (via `host.fail`) when it is refused.
   */
  static async prepare(host: ClusterPolicyHost): Promise<ClusterPolicyStep | undefined> {
    const { request, trail, status } = host;
    if (!request.clusterPolicy || !patched('cilium-step')) return undefined;
    const startedAt = Date.now();
    const translated = clusterPolicyObjects(request.clusterPolicy, request.id);
    if (!translated.ok) {
      trail.record('cluster policy: validate', 'failed', startedAt, formatIssues(translated.issues));
      status.issues = translated.issues;
      throw host.fail('rejected', `invalid change request:\n${formatIssues(translated.issues)}`, FailureType.InvalidChangeRequest);
    }
    let prepared: ClusterPlan;
    try {
      prepared = await prepareClusterPolicy({ changeId: request.id, objects: translated.objects });
    } catch (err) {
      const cause = summariseFailure(err);
      trail.record('cluster policy: validate', 'failed', startedAt, cause.message);
      if (cause.type === FailureType.ClusterPolicyUnavailable) {
        throw host.fail('rejected', `this change carries cluster policy (clusterPolicy) but the cluster worker cannot reach Kubernetes: ${cause.message}; nothing was applied`, FailureType.ClusterPolicyUnavailable);
      }
      const type = (Object.values(FailureType) as string[]).includes(cause.type) ? (cause.type as FailureTypeName) : FailureType.PolicyRejected;
      throw host.fail('rejected', `cluster policy refused before anything was applied: ${cause.message}`, type);
    }
    if (prepared.rejected.length > 0) {
      const issues = prepared.rejected.map((r: ClusterRejection) => rejectionIssue(r, r));
      trail.record('cluster policy: validate', 'failed', startedAt, formatIssues(issues));
      status.issues = issues;
      throw host.fail('rejected', `cluster policy refused by the cluster's CRDs (server-side dry-run) before anything was applied:\n${formatIssues(issues)}`, FailureType.PolicyRejected);
    }
    trail.record('cluster policy: validate', 'ok', startedAt, `${prepared.plan.length} object(s) accepted by a server-side dry-run; largest policy-map estimate ${prepared.estimates[0]?.entries ?? 0} entries`);
    status.clusterPolicy = { phase: 'planned', plan: prepared.plan };
    return new ClusterPolicyStep(host, translated.objects, prepared);
  }

  /** The plan lines (part of the approval digest). */
  get plan(): string[] {
    return this.prepared.plan;
  }

  /** Whether the change writes anything to the cluster. */
  get changes(): boolean {
    return this.prepared.plan.some((l) => !l.startsWith('='));
  }

  /** Whether an apply began (and so a rollback must restore). */
  get applied(): boolean {
    return this.started;
  }

  /** False when a restore did not read back equal to the snapshot. */
  get clean(): boolean {
    return this.restoreClean;
  }

  /**
   * Applies once (later calls and dry runs do nothing) and reads back. On failure restores the
   * snapshot at once (nothing else was applied yet) and says why, for the workflow to end with.
   */
  async applyOnce(): Promise<{ why: string; type: FailureTypeName } | undefined> {
    const { request, trail, status } = this.host;
    if (this.started || request.options.dryRun || !this.changes) return undefined;
    this.started = true;
    const cp = status.clusterPolicy as ClusterPolicyStatus;
    cp.phase = 'applying';
    try {
      const { stored } = await trail.step('cluster policy: apply', () => applyClusterPolicy({ objects: this.objects }), (r) => `${r.stored.length} object(s) applied with server-side apply`);
      await trail.step('cluster policy: verify', async () => {
        const differences = objectDifferences(stored, await readClusterPolicy({ refs: stored.map(refOf) }));
        if (differences.length > 0) throw new Error(differences.join('; '));
      });
      cp.phase = 'applied';
      return undefined;
    } catch (err) {
      const cause = summariseFailure(err);
      await this.restore(`cluster policy failed: ${cause.message}`);
      const type: FailureTypeName = this.restoreClean ? FailureType.PolicyRolledBack : FailureType.RollbackFailed;
      return { why: `cluster policy failed before any node was touched (${cause.type}: ${cause.message})`, type };
    }
  }

  /** Restores every snapshotted object (after the nodes: the reverse of apply) and reads back; once. */
  async restore(reason: string): Promise<void> {
    if (!this.started || this.restored) return;
    this.restored = true;
    const { trail, status } = this.host;
    const cp = status.clusterPolicy as ClusterPolicyStatus;
    cp.phase = 'restoring';
    const snapshot: ClusterSnapshot = this.prepared.snapshot;
    let differences: string[] = [];
    // Twice at most: a write that raced the first restore is taken back by the second.
    for (let round = 0; round < 2; round++) {
      try {
        await trail.step('cluster policy: restore', () => restoreClusterPolicy({ snapshot }), (r) => `${reason}; ${r.restored.length} restored, ${r.deleted.length} deleted`);
        const now = await readRestored({ refs: snapshot.entries.map((e) => e.ref) });
        differences = snapshot.entries.flatMap((e, i) => differenceOf(e.key, e.before, now[i] ?? null));
      } catch (err) {
        differences = [`restore failed: ${summariseFailure(err).message}`];
      }
      trail.record('cluster policy: verify restore', differences.length === 0 ? 'ok' : 'failed', Date.now(), differences.length === 0 ? `${snapshot.entries.length} object(s) equal to the snapshot` : differences.join('; '));
      if (differences.length === 0) break;
    }
    this.restoreClean = differences.length === 0;
    cp.phase = this.restoreClean ? 'restored' : 'restore-failed';
    if (!this.restoreClean) cp.differences = differences;
  }
}

function refOf(obj: KubeObject) {
  return { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, ...(obj.metadata.namespace ? { namespace: obj.metadata.namespace } : {}) };
}

function objectDifferences(expected: KubeObject[], actual: (KubeObject | null)[]): string[] {
  return expected.flatMap((e, i) => differenceOf(objectRefKey(e), e, actual[i] ?? null));
}

function differenceOf(key: string, expected: KubeObject | null, actual: KubeObject | null): string[] {
  if (expected === null && actual === null) return [];
  if (expected === null) return [`${key} exists, expected absent`];
  if (actual === null) return [`${key} is missing`];
  return canonical(expected) === canonical(actual) ? [] : [`${key} differs: expected ${canonical(expected)}, found ${canonical(actual)}`];
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}
