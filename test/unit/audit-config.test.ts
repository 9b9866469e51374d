/**
 * Where the worker and the API find the audit store (workers/audit.ts), and the checkpoint
 * timer: it signs on its interval and once more at stop, so a quiet chain's newest entries
 * are covered too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FileAuditStore, loadPublicKeys } from '../../activities/audit-store';
import { parseApiConfig } from '../../api/config';
import { auditConfigFrom, auditEnvSchema, openWorkerAuditStores } from '../../workers/audit';
import { parseWorkerConfig } from '../../workers/config';

describe('audit configuration', () => {
  test('defaults: the file store under /var/lib/fos1, the key beside it, its public key for the API', () => {
    const worker = parseWorkerConfig({ FOS1_NODE_NAME: 'n1' });
    expect(worker.audit).toEqual({ store: { backend: 'file', dir: '/var/lib/fos1/audit' }, dir: '/var/lib/fos1/audit', signingKeyFile: '/var/lib/fos1/audit-key.pem', publicKeyFiles: ['/var/lib/fos1/audit-key.pem.pub'], checkpointEveryMs: 600_000 });
    const dev = auditConfigFrom(auditEnvSchema.parse({}), '/home/u/.local/state/fos1/audit');
    expect(dev.signingKeyFile).toBe('/home/u/.local/state/fos1/audit-key.pem');
  });

  test('PostgreSQL when its URL is set; the API takes public keys, colon-separated', () => {
    const api = parseApiConfig({ FOS1_AUDIT_POSTGRES_URL: 'postgresql://fos1@db/fos1', FOS1_AUDIT_PUBLIC_KEYS: '/k/a.pub:/k/b.pub' });
    expect(api.audit.store).toEqual({ backend: 'postgres', connectionString: 'postgresql://fos1@db/fos1' });
    expect(api.audit.publicKeyFiles).toEqual(['/k/a.pub', '/k/b.pub']);
  });

  test('bad values are refused, naming the variable', () => {
    expect(() => parseWorkerConfig({ FOS1_NODE_NAME: 'n1', FOS1_AUDIT_DIR: 'relative/dir' })).toThrow('FOS1_AUDIT_DIR must be an absolute path');
    expect(() => parseWorkerConfig({ FOS1_NODE_NAME: 'n1', FOS1_AUDIT_POSTGRES_URL: 'mysql://x' })).toThrow('FOS1_AUDIT_POSTGRES_URL must be a postgresql:// connection string');
  });

  test('the worker creates the signing key on first start and signs a last checkpoint at shutdown', async () => {
    const root = mkdtempSync(join(tmpdir(), 'fos1-audit-cfg-'));
    try {
      const config = auditConfigFrom(auditEnvSchema.parse({ FOS1_AUDIT_DIR: join(root, 'audit') }));
      const stores = openWorkerAuditStores(config, pino({ level: 'silent' }));
      await stores.audit.append([{ id: 'c1/r1/0', record: { changeId: 'c1', actor: 'a', step: 'validate', result: 'ok', startedAt: '2026-03-01T10:00:00.000Z', durationMs: 1 } }]);
      await stores.audit.append([{ id: 'c1/r1/1', record: { changeId: 'c1', actor: 'a', step: 'applied', result: 'ok', startedAt: '2026-03-01T10:00:01.000Z', durationMs: 1 } }]);
      await stores.close();
      const reader = FileAuditStore.open({ dir: config.dir, readOnly: true });
      const report = await reader.verify(loadPublicKeys(config.publicKeyFiles));
      expect(report).toMatchObject({ ok: true, entries: 2, lastGoodCheckpoint: { seq: 2 }, uncheckpointed: 0 });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
