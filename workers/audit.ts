/**
 * Where the durable audit store and the revision store are (issue 13, docs/audit.md), as the
 * cluster worker (appends, signs checkpoints) and the API (reads, verifies) open them.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `FOS1_AUDIT_POSTGRES_URL` | unset | PostgreSQL connection string: when set, the audit chain and the revisions are tables there |
 * | `FOS1_AUDIT_DIR` | `/var/lib/fos1/audit` (`npm start`: `<state dir>/audit`) | otherwise, the append-only file store's folder |
 * | `FOS1_AUDIT_SIGNING_KEY` | `<FOS1_AUDIT_DIR>/../audit-key.pem` | cluster worker: the ed25519 checkpoint key (PKCS#8 PEM), created on first start with its public key at `<path>.pub` |
 * | `FOS1_AUDIT_PUBLIC_KEYS` | `<signing key>.pub` | API: the public keys (colon-separated SPKI PEM files) `GET /v1/audit/verify` checks checkpoints with |
 * | `FOS1_AUDIT_CHECKPOINT_MS` | `600000` | cluster worker: a signed checkpoint at least this often (and at shutdown) |
 */
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { createCheckpointSigner, loadOrCreateSigningKey, openAuditStore, openRevisionStore, type AuditStore, type AuditStoreConfig, type RevisionStore } from '../activities/audit-store';

/** The audit variables (merged into the worker's and the API's schemas). */
export const auditEnvSchema = z.object({
  FOS1_AUDIT_POSTGRES_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'FOS1_AUDIT_POSTGRES_URL must be a postgresql:// connection string')
    .optional(),
  FOS1_AUDIT_DIR: z.string().regex(/^\/[^\0]*$/, 'FOS1_AUDIT_DIR must be an absolute path').optional(),
  FOS1_AUDIT_SIGNING_KEY: z.string().regex(/^\/[^\0]*$/, 'FOS1_AUDIT_SIGNING_KEY must be an absolute path').optional(),
  FOS1_AUDIT_PUBLIC_KEYS: z.string().optional(),
  FOS1_AUDIT_CHECKPOINT_MS: z.coerce.number().int().min(1000, 'FOS1_AUDIT_CHECKPOINT_MS must be at least 1000').default(600_000),
});

/** The default audit folder outside the dev stack. */
export const DEFAULT_AUDIT_DIR = '/var/lib/fos1/audit';

/** Parsed audit configuration. */
export interface AuditConfig {
  store: AuditStoreConfig;
  /** The file store's folder, and (either backend) what the key path defaults beside. */
  dir: string;
  signingKeyFile: string;
  publicKeyFiles: string[];
  checkpointEveryMs: number;
}

/** The audit configuration from parsed variables; `defaultDir` is `<state dir>/audit` for `npm start`. */
export function auditConfigFrom(e: z.output<typeof auditEnvSchema>, defaultDir = DEFAULT_AUDIT_DIR): AuditConfig {
  const dir = e.FOS1_AUDIT_DIR ?? defaultDir;
  const signingKeyFile = e.FOS1_AUDIT_SIGNING_KEY ?? join(dirname(dir), 'audit-key.pem');
  return {
    store: e.FOS1_AUDIT_POSTGRES_URL ? { backend: 'postgres', connectionString: e.FOS1_AUDIT_POSTGRES_URL } : { backend: 'file', dir },
    dir,
    signingKeyFile,
    publicKeyFiles: e.FOS1_AUDIT_PUBLIC_KEYS ? e.FOS1_AUDIT_PUBLIC_KEYS.split(':').filter((p) => p !== '') : [`${signingKeyFile}.pub`],
    checkpointEveryMs: e.FOS1_AUDIT_CHECKPOINT_MS,
  };
}

/** The stores a cluster worker appends to. */
export interface WorkerAuditStores {
  audit: AuditStore;
  revisions: RevisionStore;
  close(): Promise<void>;
}

/**
 * Opens the stores for appending (the cluster worker), creating the signing key on first
 * start, and starts the periodic checkpoint; `close()` writes a last checkpoint and closes.
 */
export function openWorkerAuditStores(config: AuditConfig, logger: Logger): WorkerAuditStores {
  const signer = createCheckpointSigner(loadOrCreateSigningKey(config.signingKeyFile));
  const audit = openAuditStore(config.store, { signer, everyMs: config.checkpointEveryMs });
  const revisions = openRevisionStore(config.store, false);
  const timer = startCheckpoints(audit, config.checkpointEveryMs, logger);
  return {
    audit,
    revisions,
    async close() {
      await timer.stop();
      await revisions.close();
      await audit.close();
    },
  };
}

/**
 * Signs a checkpoint of the chain head every `everyMs` (when there are entries since the
 * last one) and once more on `stop()`, so a quiet chain's newest entries are covered too.
 */
export function startCheckpoints(store: AuditStore, everyMs: number, logger: Logger): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const tick = () => {
    running = running
      .then(() => store.checkpoint())
      .then(
        (cp) => cp && logger.info({ seq: cp.seq, keyId: cp.keyId }, 'audit checkpoint signed'),
        (err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'audit checkpoint failed; trying again at the next interval'),
      );
  };
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      tick();
      await running;
    },
  };
}
