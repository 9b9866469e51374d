/**
 * Audit records: one for every step of every change, on every node. Workflows build
 * them (with the workflow clock, so replays produce the same records), return them in
 * their results, and hand them to the worker's `audit` sink, which logs them with pino.
 */
import type { Sinks } from '@temporalio/workflow';

/** Who did what, when, with which result and how long it took. */
export interface AuditRecord {
  changeId: string;
  /** Who asked for the change (the request's author; "system" for automated steps). */
  actor: string;
  /**
   * Change-wide records: true when the HTTP API vouched for the actor (its signed identity
   * assertion was verified by the cluster worker, model/identity.ts), false when the actor
   * is only what the request said (started from the Web UI, the CLI or another workflow).
   * Absent on node records and other workflows' records.
   */
  actorVerified?: boolean;
  /** The node the step ran on; absent for change-wide steps. */
  node?: string;
  step: string;
  result: 'ok' | 'failed' | 'skipped';
  startedAt: string;
  durationMs: number;
  detail?: string;
}

/** The sink workflows call to emit audit records (see workers/fos1-worker.ts). */
export interface AuditSinks extends Sinks {
  audit: {
    record(record: AuditRecord): void;
  };
}
