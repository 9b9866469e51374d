/**
 * The change workflow's revision hook (issue 13, docs/revisions.md): when a change commits
 * (the final phase applied; after the confirmation of a commit-confirmed change), each node
 * it changed gets a revision of its desired state, recorded by the `recordRevisions`
 * activity on the cluster worker while the nodes are still held (so no other change can
 * commit on them in between and the parents stay in order). The ids go into the change's
 * audit trail, and so into the hash chain.
 *
 * Workflow code. Runs started before the release replay without it (`patched('durable-audit')`).
 */
import { proxyActivities } from '@temporalio/workflow';
import type { RevisionActivities } from '../activities/audit-store/revisions';
import { AUDIT_ACTIVITY_OPTIONS } from '../model/audit-chain';
import { FailureType, summariseFailure } from '../model/failures';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import type { NodeChangeResult } from './node-change';
import { durableAudit, type AuditTrail } from './support';

const { recordRevisions } = proxyActivities<RevisionActivities>({
  ...AUDIT_ACTIVITY_OPTIONS,
  taskQueue: CLUSTER_TASK_QUEUE,
  retry: { ...AUDIT_ACTIVITY_OPTIONS.retry, nonRetryableErrorTypes: [FailureType.InvalidRevision] },
});

/** The committing change, as the revision records it. */
export interface CommittingChange {
  id: string;
  author: string;
  reason: string;
  /** Who approved it (an approval policy's approvers; empty when none was asked). */
  approvers?: string[];
}

/**
 * Records a revision for every node the change applied. A refusal by the store (a bug)
 * is audited as a failed `revision` step and does not undo the change; an unreachable
 * store is waited out (the activity retries without limit).
 */
export async function commitRevisions(trail: AuditTrail, change: CommittingChange, results: readonly (NodeChangeResult | undefined)[]): Promise<void> {
  if (!durableAudit()) return;
  const nodes = results.flatMap((r) => (r?.outcome === 'applied' && r.revision ? [{ node: r.node, delta: r.revision }] : []));
  if (nodes.length === 0) return;
  const startedAt = Date.now();
  try {
    const revisions = await recordRevisions({ changeId: change.id, author: change.author, approvers: change.approvers ?? [], reason: change.reason, time: new Date(startedAt).toISOString(), nodes });
    trail.record('revision', 'ok', startedAt, revisions.map((r) => `${r.node} revision ${r.number} ${r.id}`).join('; '));
  } catch (err) {
    trail.record('revision', 'failed', startedAt, summariseFailure(err).message);
  }
}
