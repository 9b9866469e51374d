/**
 * The pure half of the tamper-evident audit store (activities/audit-store holds the I/O):
 * the canonical JSON encoding every hash and signature is computed over, the shapes of a
 * chained entry and a checkpoint, the idempotency key workflows give each record, the
 * validation of what `appendAudit` receives, and the retry options workflows call it with.
 *
 * Pure code (no Node built-ins): workflows import {@link auditRecordId} and
 * {@link AUDIT_ACTIVITY_OPTIONS}. The format is described in docs/audit.md.
 */
import type { ActivityOptions } from '@temporalio/common';
import { z } from 'zod';
import type { AuditRecord } from './audit';

/** Format version, part of every hashed and signed payload (a new format gets a new number). */
export const AUDIT_CHAIN_VERSION = 1;

/** The `prevHash` of the first entry: 64 zeros (there is no record before it). */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * Canonical JSON (the RFC 8785 "JCS" rules for the values audit records hold): object keys
 * sorted by UTF-16 code units, no whitespace, strings and numbers as `JSON.stringify`
 * writes them (ECMAScript number formatting, which JCS adopts), properties whose value is
 * `undefined` left out (as JSON does). Non-finite numbers, bigints, functions and symbols
 * are refused: they have no JSON form, and a hash over a lossy encoding would not be
 * reproducible by a verifier.
 */
export function canonicalJson(value: unknown): string {
  return encode(value, '$');
}

function encode(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`${path}: ${value} has no canonical JSON form (only finite numbers)`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v, i) => (v === undefined ? 'null' : encode(v, `${path}[${i}]`))).join(',')}]`;
      const keys = Object.keys(value as object)
        .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
        .sort(compareCodeUnits);
      return `{${keys.map((k) => `${JSON.stringify(k)}:${encode((value as Record<string, unknown>)[k], `${path}.${k}`)}`).join(',')}}`;
    }
    default:
      throw new TypeError(`${path}: a ${typeof value} has no canonical JSON form`);
  }
}

/** Sort order of JCS: by UTF-16 code units (what `<` on strings does), not by locale. */
function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** One link of the chain, as stored. */
export interface AuditEntry {
  /** Position in the chain, from 1, without gaps. */
  seq: number;
  /** The record's idempotency key (see {@link auditRecordId}); unique in the store. */
  id: string;
  /** `hash` of the entry at `seq - 1`; {@link GENESIS_HASH} for the first. */
  prevHash: string;
  /** sha256 (lowercase hex) of {@link entryHashInput} of this entry. */
  hash: string;
  record: AuditRecord;
}

/**
 * The bytes an entry's hash is computed over: the canonical JSON of
 * `{ v, seq, id, prevHash, record }`. Binding `seq` and `prevHash` into the hash makes an
 * edit, a deletion, an insertion and a reordering all visible at the first entry affected.
 */
export function entryHashInput(entry: Pick<AuditEntry, 'seq' | 'id' | 'prevHash' | 'record'>): string {
  return canonicalJson({ v: AUDIT_CHAIN_VERSION, seq: entry.seq, id: entry.id, prevHash: entry.prevHash, record: entry.record });
}

/** A signed statement "the chain had `seq` entries and its head hash was `headHash` at `time`". */
export interface AuditCheckpoint {
  seq: number;
  headHash: string;
  /** ISO 8601 time the checkpoint was signed. */
  time: string;
  /** Names the ed25519 key: the first 16 hex digits of sha256 of its SPKI DER encoding. */
  keyId: string;
  /** base64 ed25519 signature over {@link checkpointSignedInput}. */
  signature: string;
}

/** The bytes a checkpoint's signature covers: canonical JSON of `{ v, kind, seq, headHash, time, keyId }`. */
export function checkpointSignedInput(cp: Pick<AuditCheckpoint, 'seq' | 'headHash' | 'time' | 'keyId'>): string {
  return canonicalJson({ v: AUDIT_CHAIN_VERSION, kind: 'fos1-audit-checkpoint', seq: cp.seq, headHash: cp.headHash, time: cp.time, keyId: cp.keyId });
}

/**
 * The idempotency key of a workflow's `index`-th audit record (0-based position in its
 * trail): `<changeId>/<runId>/<index>`. Deterministic in the workflow (the run id and the
 * trail's order replay identically), so a retried or replayed append names the same
 * records, and the store writes each once. A reset or a continue-as-new is a new run and
 * its records are new records, which is what happened.
 */
export function auditRecordId(changeId: string, runId: string, index: number): string {
  return `${changeId}/${runId}/${index}`;
}

/** An audit record with its idempotency key: the unit `appendAudit` takes. */
export interface KeyedAuditRecord {
  id: string;
  record: AuditRecord;
}

const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)) && /^\d{4}-\d{2}-\d{2}T/.test(s), 'must be an ISO 8601 date-time');

/** zod schema of {@link AuditRecord} (strict: an unknown field is refused, not silently hashed). */
export const auditRecordSchema = z
  .object({
    changeId: z.string().min(1).max(253),
    actor: z.string().min(1).max(256),
    actorVerified: z.boolean().optional(),
    node: z.string().min(1).max(253).optional(),
    step: z.string().min(1).max(128),
    result: z.enum(['ok', 'failed', 'skipped']),
    startedAt: isoTime,
    durationMs: z.number().finite().min(0),
    detail: z.string().max(16_384).optional(),
  })
  .strict();

const keyedSchema = z.object({
  id: z.string().min(1, 'must not be empty').max(512).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces'),
  record: auditRecordSchema,
});

/** Bad input to the audit store; the message names the field and the rule. */
export class AuditInputError extends Error {
  override readonly name = 'AuditInputError';
}

/** Most records one append takes (a batch is one transaction and one fsync). */
export const MAX_AUDIT_BATCH = 1000;

/**
 * Validates a batch for `appendAudit`. Refuses the whole batch (nothing half-appended)
 * when any record is malformed, or when one id is given twice with different content.
 * The same id twice with the same content is kept once.
 */
export function validateAuditBatch(input: unknown): KeyedAuditRecord[] {
  if (!Array.isArray(input)) throw new AuditInputError('records: must be an array of { id, record }');
  if (input.length > MAX_AUDIT_BATCH) throw new AuditInputError(`records: at most ${MAX_AUDIT_BATCH} per append (got ${input.length})`);
  const seen = new Map<string, string>();
  const out: KeyedAuditRecord[] = [];
  input.forEach((item, i) => {
    const parsed = keyedSchema.safeParse(item);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new AuditInputError(`records[${i}].${issue.path.join('.')}: ${issue.message}`);
    }
    const canonical = canonicalJson(parsed.data.record);
    const before = seen.get(parsed.data.id);
    if (before !== undefined) {
      if (before !== canonical) throw new AuditInputError(`records[${i}].id: ${parsed.data.id} appears twice in the batch with different records`);
      return;
    }
    seen.set(parsed.data.id, canonical);
    out.push({ id: parsed.data.id, record: parsed.data.record as AuditRecord });
  });
  return out;
}

/** What the audit store can be queried by (all given filters must match). */
export interface AuditQuery {
  changeId?: string;
  node?: string;
  actor?: string;
  /** The action: the record's `step` (submitted, approved, applied, rolled-back, …). */
  step?: string;
  /** Records whose `startedAt` is at or after this ISO time. */
  from?: string;
  /** Records whose `startedAt` is before this ISO time. */
  to?: string;
  /** Most entries returned (default 1000, at most 10 000), in chain order. */
  limit?: number;
  /** Only entries with `seq` greater than this (paging: pass the last `seq` seen). */
  afterSeq?: number;
}

const querySchema = z
  .object({
    changeId: z.string().min(1).optional(),
    node: z.string().min(1).optional(),
    actor: z.string().min(1).optional(),
    step: z.string().min(1).optional(),
    from: isoTime.optional(),
    to: isoTime.optional(),
    limit: z.number().int().min(1).max(10_000).optional(),
    afterSeq: z.number().int().min(0).optional(),
  })
  .strict();

/** Validates a query (an API passes its query string's fields here). */
export function validateAuditQuery(input: unknown): AuditQuery & { limit: number } {
  const parsed = querySchema.safeParse(input ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AuditInputError(`query.${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return { ...parsed.data, limit: parsed.data.limit ?? 1000 };
}

/** Whether `record` matches `query` (the file backend filters with this; PostgreSQL in SQL). */
export function matchesAuditQuery(seq: number, record: AuditRecord, query: AuditQuery): boolean {
  if (query.afterSeq !== undefined && seq <= query.afterSeq) return false;
  if (query.changeId !== undefined && record.changeId !== query.changeId) return false;
  if (query.node !== undefined && record.node !== query.node) return false;
  if (query.actor !== undefined && record.actor !== query.actor) return false;
  if (query.step !== undefined && record.step !== query.step) return false;
  const t = Date.parse(record.startedAt);
  if (query.from !== undefined && t < Date.parse(query.from)) return false;
  if (query.to !== undefined && t >= Date.parse(query.to)) return false;
  return true;
}

/** Failure types of the audit activity. */
export const AuditFailureType = {
  /** The store could not be reached or failed mid-write: retryable (nothing was written, or all of it). */
  AuditStoreUnavailable: 'AuditStoreUnavailable',
  /** A record id already stored with different content: a bug in the caller; never retried. */
  AuditRecordConflict: 'AuditRecordConflict',
  /** A malformed batch; never retried. */
  InvalidAuditRecord: 'InvalidAuditRecord',
} as const;

/**
 * Activity options for `appendAudit`: retried without limit (the activity is idempotent,
 * so a retry after a lost acknowledgement writes nothing twice), backing off to one attempt
 * a minute while the store is down; the pending activity, in the workflow's history, is the
 * buffer. Conflicts and malformed batches are non-retryable.
 *
 * Heartbeat time-out 5 s (the activities heartbeat every second while the store works,
 * activities/heartbeat.ts): an attempt whose worker died, or that never reached a worker,
 * is retried 5 s after its last heartbeat. Without it each such attempt cost the whole
 * start-to-close: the chaos timelines (test/chaos/RESULTS.md) show appends and revision
 * commits started after the worker was back that were retried only 32 s later, the largest
 * part of the slowest cells. A slow store (PostgreSQL's 5 s connect + 15 s query limits)
 * keeps heartbeating and is bounded by the start-to-close, as before.
 */
export const AUDIT_ACTIVITY_OPTIONS: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  heartbeatTimeout: '5 seconds',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    // maximumAttempts left unset: unlimited (the SDK refuses 0).
    nonRetryableErrorTypes: [AuditFailureType.AuditRecordConflict, AuditFailureType.InvalidAuditRecord],
  },
};
