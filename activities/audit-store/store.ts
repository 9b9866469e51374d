/**
 * The audit store's interface, shared by the PostgreSQL backend (postgres-store.ts) and
 * the append-only file backend (file-store.ts), and the checkpoint policy both follow.
 */
import type { KeyObject } from 'node:crypto';
import type { AuditEntry, AuditQuery, KeyedAuditRecord } from '../../model/audit-chain';
import type { AuditVerifyReport, CheckpointSigner } from './chain';

/** What one append did, per record, in the order given. */
export interface AppendResult {
  /** Records written now, with the position they got. */
  appended: { id: string; seq: number }[];
  /** Records already stored (a retried append): where they are. Nothing was written for them. */
  duplicates: { id: string; seq: number }[];
  /** The chain's head after the append. */
  head: { seq: number; hash: string };
  /** The checkpoint written by this append, if one fell due. */
  checkpoint?: { seq: number; keyId: string };
}

/** A durable, tamper-evident, append-only store of audit records. */
export interface AuditStore {
  /**
   * Appends the records, in order, each chained to the one before. Idempotent by record
   * id: an id already stored is reported in `duplicates` and not written again (its
   * content must be the same, else {@link AuditConflictError} and nothing of the batch is
   * written). All or nothing: after a failure none of the batch is stored, or (when only
   * the acknowledgement was lost) all of it, which a retry then reports as duplicates.
   */
  append(records: KeyedAuditRecord[]): Promise<AppendResult>;
  /** Signs and stores a checkpoint of the current head now (if there are entries since the last one). */
  checkpoint(): Promise<{ seq: number; keyId: string } | undefined>;
  /** Entries matching the query, in chain order. */
  query(query: AuditQuery): Promise<AuditEntry[]>;
  /** Checks the whole chain and every checkpoint against the given public keys. */
  verify(publicKeys: ReadonlyMap<string, KeyObject>): Promise<AuditVerifyReport>;
  close(): Promise<void>;
}

/** A record id already stored with other content: a caller bug, never retried. */
export class AuditConflictError extends Error {
  override readonly name = 'AuditConflictError';
  constructor(readonly recordId: string, readonly seq: number) {
    super(`audit record ${recordId} is already stored (seq ${seq}) with different content`);
  }
}

/** The store cannot be reached, or failed mid-append; retrying is safe. */
export class AuditUnavailableError extends Error {
  override readonly name = 'AuditUnavailableError';
}

/** When checkpoints fall due, and who signs them. */
export interface CheckpointPolicy {
  signer: CheckpointSigner;
  /** A checkpoint after this many entries since the last one (default 100). */
  everyEntries?: number;
  /** …or when the last one is older than this and there are newer entries (default 10 minutes). */
  everyMs?: number;
  /** The clock (tests pass their own). */
  now?: () => Date;
}

/** Whether a checkpoint is due after the head moved to `headSeq`. */
export function checkpointDue(policy: CheckpointPolicy, headSeq: number, last: { seq: number; time: string } | undefined): boolean {
  if (headSeq === 0 || (last && last.seq >= headSeq)) return false;
  if (!last) return true;
  if (headSeq - last.seq >= (policy.everyEntries ?? 100)) return true;
  return now(policy).getTime() - Date.parse(last.time) >= (policy.everyMs ?? 600_000);
}

/** The policy's clock. */
export function now(policy: CheckpointPolicy): Date {
  return policy.now ? policy.now() : new Date();
}
