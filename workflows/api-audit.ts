/**
 * The API's audit records (authorization refusals: `audit authz forbidden`, unauthenticated,
 * foreign Host or Origin) reach the durable audit store through this workflow: the API
 * process starts one per batch, on the cluster task queue, and the cluster worker — which
 * holds the signing key — appends them. The API never needs the key, nor write access to
 * the store. The workflow's input, in Temporal, is the buffer while the store is down.
 */
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { AuditActivities } from '../activities/audit-store';
import type { AuditRecord } from '../model/audit';
import { AUDIT_ACTIVITY_OPTIONS, auditRecordId, MAX_AUDIT_BATCH } from '../model/audit-chain';
import { failure, FailureType } from '../model/failures';

const { appendAudit } = proxyActivities<AuditActivities>(AUDIT_ACTIVITY_OPTIONS);

/** Input of {@link apiAuditWorkflow}. */
export interface ApiAuditInput {
  /** Names the API process and its batch (part of each record's key). */
  source: string;
  records: AuditRecord[];
}

/** Appends the API's records, in order, once each; returns how many. */
export async function apiAuditWorkflow(input: ApiAuditInput): Promise<{ records: number }> {
  if (!input || typeof input.source !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(input.source) || !Array.isArray(input.records) || input.records.length > MAX_AUDIT_BATCH) {
    throw failure(FailureType.InvalidAuditBatch, `api audit input: source must be printable ASCII (1–200) and records an array of at most ${MAX_AUDIT_BATCH}`);
  }
  const { runId } = workflowInfo();
  await appendAudit(input.records.map((record, i) => ({ id: auditRecordId(input.source, runId, i), record })));
  return { records: input.records.length };
}
