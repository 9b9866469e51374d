/**
 * The durable, tamper-evident audit store (issue 13): records outside Temporal, each
 * chained to the one before by its sha256, with signed checkpoints of the chain head, in
 * PostgreSQL or in an append-only file. Format and guarantees: docs/audit.md.
 *
 * ## How workflows record
 *
 * Workflows hand their records to the `appendAudit` activity of {@link createAuditActivities}
 * (registered on the cluster worker), one activity per batch, batches in order:
 *
 * ```ts
 * import type { AuditActivities } from '../activities/audit-store';
 * import { AUDIT_ACTIVITY_OPTIONS, auditRecordId } from '../model/audit-chain';
 * const { appendAudit } = proxyActivities<AuditActivities>(AUDIT_ACTIVITY_OPTIONS);
 *
 * // the trail: records are numbered in the order the workflow makes them
 * const id = auditRecordId(changeId, workflowInfo().runId, trail.length);
 * // one promise chain, so batch n+1 starts only after batch n is stored
 * pending = pending.then(() => appendAudit(batch));
 * // …and before the workflow returns or fails
 * await pending;
 * ```
 *
 * - **Key**: `changeId/runId/index` ({@link auditRecordId}): deterministic on replay, so a
 *   retried activity (the acknowledgement lost after the commit) finds its records already
 *   stored and writes none of them twice.
 * - **Order**: the chain's order is the order appends arrive; a workflow's own records stay in
 *   its order because it starts a batch only when the one before has completed. Batching
 *   (whatever the workflow has made since the last batch started) keeps the activity count low.
 * - **Store down**: {@link AUDIT_ACTIVITY_OPTIONS} retries without limit, backing off to one
 *   attempt a minute. The pending activity's input, in the workflow's history, is the buffer:
 *   nothing is lost while PostgreSQL is down, and everything is written once when it is back.
 *   The workflow need not wait for it in its main path (a rollout is not held up by the audit
 *   store), only before it ends.
 * - **Refusals**: a malformed batch (`InvalidAuditRecord`) or an id reused with other content
 *   (`AuditRecordConflict`) is non-retryable: a bug to fix, not an outage to wait out.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { AuditFailureType, AuditInputError, validateAuditBatch, type KeyedAuditRecord } from '../../model/audit-chain';
import { loadPublicKeys, type AuditVerifyReport } from './chain';
import { FileAuditStore } from './file-store';
import { PostgresAuditStore } from './postgres-store';
import { AuditConflictError, type AuditStore, type CheckpointPolicy } from './store';
import { withHeartbeats } from '../heartbeat';

export * from './chain';
export * from './store';
export { FileAuditStore, AuditFiles } from './file-store';
export { PostgresAuditStore } from './postgres-store';
export * from './revisions';

/** Where the audit store is. */
export type AuditStoreConfig = { backend: 'file'; dir: string } | { backend: 'postgres'; connectionString: string };

/**
 * Opens the configured store. With a checkpoint policy it can be appended to (one
 * appending process per file store); without one (`readOnly`), only queried and verified.
 */
export function openAuditStore(config: AuditStoreConfig, checkpoints?: CheckpointPolicy): AuditStore {
  return config.backend === 'file'
    ? FileAuditStore.open({ dir: config.dir, checkpoints, readOnly: !checkpoints })
    : new PostgresAuditStore({ connection: { connectionString: config.connectionString }, checkpoints });
}

/**
 * Verifies the store at `config` with the public keys in `publicKeyFiles` (SPKI PEM): what
 * `fos1 audit verify` and the API call. Opens the store read-only, so it runs beside the
 * worker that appends.
 */
export async function verifyAuditStore(config: AuditStoreConfig, publicKeyFiles: string[] | ReadonlyMap<string, KeyObject>): Promise<AuditVerifyReport> {
  const keys = Array.isArray(publicKeyFiles) ? loadPublicKeys(publicKeyFiles) : (publicKeyFiles as ReadonlyMap<string, KeyObject>);
  const store = openAuditStore(config);
  try {
    return await store.verify(keys);
  } finally {
    await store.close();
  }
}

/** What the audit activities need; injected by the worker. */
export interface AuditActivityDeps {
  store: AuditStore;
  logger: Logger;
}

/** What one `appendAudit` did. */
export interface AppendAuditResult {
  /** Records written by this attempt. */
  appended: number;
  /** Records that an earlier attempt had already written. */
  duplicates: number;
  /** The chain's head after the append. */
  headSeq: number;
}

/** The audit activities (cluster worker). */
export function createAuditActivities(deps: AuditActivityDeps) {
  const { store, logger } = deps;
  return {
    /** Appends a batch of keyed records, in order, once each (see the module comment). */
    async appendAudit(records: KeyedAuditRecord[]): Promise<AppendAuditResult> {
      let batch: KeyedAuditRecord[];
      try {
        batch = validateAuditBatch(records);
      } catch (err) {
        if (err instanceof AuditInputError) throw ApplicationFailure.create({ type: AuditFailureType.InvalidAuditRecord, message: err.message, nonRetryable: true });
        throw err;
      }
      try {
        // Heartbeats while the store works (AUDIT_ACTIVITY_OPTIONS: a lost attempt is retried within seconds).
        const result = await withHeartbeats({ phase: 'append audit', records: batch.length }, () => store.append(batch));
        return { appended: result.appended.length, duplicates: result.duplicates.length, headSeq: result.head.seq };
      } catch (err) {
        if (err instanceof AuditConflictError) throw ApplicationFailure.create({ type: AuditFailureType.AuditRecordConflict, message: err.message, nonRetryable: true });
        const message = err instanceof Error ? err.message : String(err);
        logger.warn({ err: message, records: batch.length }, 'audit store unavailable; the append will be retried');
        throw ApplicationFailure.create({ type: AuditFailureType.AuditStoreUnavailable, message, nonRetryable: false });
      }
    },
  };
}

/** The audit activities' type, for `proxyActivities<AuditActivities>` (import type only). */
export type AuditActivities = ReturnType<typeof createAuditActivities>;
