/**
 * Hands the API's authorization refusals to the durable audit store (docs/audit.md): they
 * are batched here (up to 100 records or 2 s) and each batch starts one `apiAuditWorkflow`
 * on the cluster task queue, whose activity — on the cluster worker, which holds the signing
 * key — appends them. The API needs neither the key nor write access to the store.
 *
 * Bounded: at most 1000 refusals wait here; beyond that (a flood of bad tokens) they are
 * counted, and one record says how many were not recorded one by one. Until a batch's
 * workflow has started, its records are only in this process (and in the log).
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AuthzDecision } from '../auth/http-guard';
import type { AuditRecord } from '../model/audit';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import type { apiAuditWorkflow } from '../workflows/api-audit';

/** The change id of authz records (they belong to no change). */
export const AUTHZ_AUDIT_CHANGE_ID = 'api-authz';

const MAX_BATCH = 100;
const MAX_WAITING = 1000;
const FLUSH_MS = 2000;

/** Batches refusals into `apiAuditWorkflow`s (see the module comment). */
export class AuthzAuditForwarder {
  private readonly source = `api-${randomBytes(6).toString('hex')}`;
  private waiting: AuditRecord[] = [];
  private dropped = 0;
  private batches = 0;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: Client,
    private readonly logger: Logger,
  ) {}

  /** Queues one refusal (the guard's `onRefusal`). */
  readonly add = (d: AuthzDecision): void => {
    if (this.waiting.length >= MAX_WAITING) {
      this.dropped++;
    } else {
      this.waiting.push({
        changeId: AUTHZ_AUDIT_CHANGE_ID,
        actor: d.principal.slice(0, 256) || 'anonymous',
        step: 'refused',
        result: 'failed',
        startedAt: d.at,
        durationMs: 0,
        detail: `${d.result}: ${d.verb ? `${d.verb} ${d.resource}.fos1.io ` : ''}on ${d.route}${d.remote ? ` from ${d.remote}` : ''}`.slice(0, 1000),
      });
    }
    if (this.waiting.length >= MAX_BATCH) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
      // Not what keeps a process alive: shutdown calls flush().
      this.timer.unref();
    }
  };

  /** Sends what is waiting now; resolves when every batch sent so far has started. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.waiting.length > 0 || this.dropped > 0) {
      const records = this.waiting.splice(0, MAX_BATCH);
      if (this.dropped > 0 && records.length < MAX_BATCH) {
        records.push({ changeId: AUTHZ_AUDIT_CHANGE_ID, actor: 'fos1-api', step: 'refused', result: 'failed', startedAt: new Date().toISOString(), durationMs: 0, detail: `${this.dropped} more refusals were not recorded one by one (over ${MAX_WAITING} waiting); see the API log` });
        this.dropped = 0;
      }
      const workflowId = `${this.source}-${++this.batches}`;
      this.sending = this.sending.then(async () => {
        try {
          await this.client.workflow.start<typeof apiAuditWorkflow>('apiAuditWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId, args: [{ source: workflowId, records }] });
        } catch (err) {
          this.logger.error({ err: err instanceof Error ? err.message : String(err), records: records.length }, 'authz refusals could not be handed to the audit store (they are in this log)');
        }
      });
    }
    return this.sending;
  }

  /** Sends what is left (at shutdown). */
  async close(): Promise<void> {
    await this.flush();
  }
}
