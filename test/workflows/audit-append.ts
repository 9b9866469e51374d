/**
 * A tiny test workflow that records the way change workflows are to record (see
 * activities/audit-store/index.ts): its trail's records are keyed changeId/runId/index and
 * handed to `appendAudit` one batch at a time, in order, each batch started only when the
 * one before is stored. The retry intervals are shortened so a test's outage is seconds.
 */
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { AuditActivities } from '../../activities/audit-store';
import type { AuditRecord } from '../../model/audit';
import { AUDIT_ACTIVITY_OPTIONS, auditRecordId, type KeyedAuditRecord } from '../../model/audit-chain';

const { appendAudit } = proxyActivities<AuditActivities>({
  ...AUDIT_ACTIVITY_OPTIONS,
  startToCloseTimeout: '10 seconds',
  retry: { ...AUDIT_ACTIVITY_OPTIONS.retry, initialInterval: '200 milliseconds', maximumInterval: '1 second' },
});

/** Appends `batches` (records without ids) in order; returns the ids it gave them. */
export async function auditAppendWorkflow(changeId: string, batches: AuditRecord[][]): Promise<string[]> {
  const { runId } = workflowInfo();
  const ids: string[] = [];
  let pending: Promise<unknown> = Promise.resolve();
  for (const batch of batches) {
    const keyed: KeyedAuditRecord[] = batch.map((record) => {
      const id = auditRecordId(changeId, runId, ids.length);
      ids.push(id);
      return { id, record };
    });
    pending = pending.then(() => appendAudit(keyed));
  }
  await pending;
  return ids;
}
