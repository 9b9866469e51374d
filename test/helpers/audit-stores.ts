/**
 * A real audit store and revision store for a test's cluster worker: the file backend in a
 * fresh temporary folder, with a fresh ed25519 signing key beside it (what `npm start` uses,
 * under the state directory). Tests that look at the audit pass these to the API too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { AuditStore, RevisionStore } from '../../activities/audit-store';
import { auditConfigFrom, openWorkerAuditStores, type AuditConfig } from '../../workers/audit';

/** The stores, where they are, and how to close and remove them. */
export interface TestAuditStores {
  audit: AuditStore;
  revisions: RevisionStore;
  config: AuditConfig;
  close(): Promise<void>;
}

/** Opens fresh stores (file backend) under a temporary folder, or PostgreSQL at `postgresUrl`. */
export function testAuditStores(options: { postgresUrl?: string; checkpointEveryMs?: number } = {}): TestAuditStores {
  const root = mkdtempSync(join(tmpdir(), 'fos1-audit-'));
  const config = auditConfigFrom(
    { FOS1_AUDIT_DIR: join(root, 'audit'), FOS1_AUDIT_CHECKPOINT_MS: options.checkpointEveryMs ?? 600_000, ...(options.postgresUrl ? { FOS1_AUDIT_POSTGRES_URL: options.postgresUrl } : {}) },
  );
  const stores = openWorkerAuditStores(config, pino({ level: 'silent' }));
  return {
    audit: stores.audit,
    revisions: stores.revisions,
    config,
    async close() {
      await stores.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
