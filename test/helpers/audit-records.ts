/**
 * Audit records and keys for the audit store tests: a change's trail with distinct nodes,
 * actors, steps and times, so queries have something to tell apart.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createCheckpointSigner, keyIdOf, type CheckpointSigner } from '../../activities/audit-store';
import type { AuditRecord } from '../../model/audit';
import { auditRecordId, type KeyedAuditRecord } from '../../model/audit-chain';

/** A signing key, its signer and the verifier's key map. */
export interface TestKey {
  signer: CheckpointSigner;
  publicKeys: Map<string, KeyObject>;
}

/** A fresh ed25519 key. */
export function testKey(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { signer: createCheckpointSigner(privateKey), publicKeys: new Map([[keyIdOf(publicKey), publicKey]]) };
}

const STEPS = ['submitted', 'approved', 'wave-started', 'applied', 'confirmed'] as const;

/**
 * `count` records of change `changeId` (run `runId`), keyed as workflows key them. Record i
 * is on node `n<i % 2>`, by `alice` (even) or `bob` (odd), step STEPS[i % 5], one minute apart
 * from `base`.
 */
export function trail(changeId: string, count: number, options: { runId?: string; base?: string; from?: number } = {}): KeyedAuditRecord[] {
  const base = Date.parse(options.base ?? '2026-03-01T10:00:00.000Z');
  const from = options.from ?? 0;
  return Array.from({ length: count }, (_, k) => {
    const i = from + k;
    const record: AuditRecord = {
      changeId,
      actor: i % 2 === 0 ? 'alice' : 'bob',
      node: `n${i % 2}`,
      step: STEPS[i % STEPS.length]!,
      result: 'ok',
      startedAt: new Date(base + i * 60_000).toISOString(),
      durationMs: 10 + i,
      detail: `record number ${i} of ${changeId}`,
    };
    return { id: auditRecordId(changeId, options.runId ?? 'run-1', i), record };
  });
}
