/**
 * The PostgreSQL backend (the database a production Temporal cluster already runs).
 *
 *   fos1_audit_head         one row: the chain's head (seq, hash); locked FOR UPDATE by every
 *                           append, so appends from any number of workers form one linear chain
 *   fos1_audit_entries      seq (primary key), record_id (unique: the idempotency key),
 *                           record_json (the record's canonical JSON, as text: the exact bytes
 *                           hashed, which jsonb would normalise), prev_hash, hash, and copies of
 *                           change_id, node, actor, step, started_at for the indexed queries
 *   fos1_audit_checkpoints  signed checkpoints, in the order written
 *
 * The tables are created on first use (under an advisory lock, so two workers starting
 * together do not race), never at construction: a worker starts while the database is down,
 * and its appends fail as retryable until it is back. Verification checks that the query
 * columns agree with the record they were copied from (else a query could be misdirected).
 */
import type { KeyObject } from 'node:crypto';
import { Pool, type PoolClient, type PoolConfig } from 'pg';
import type { AuditRecord } from '../../model/audit';
import { canonicalJson, GENESIS_HASH, validateAuditQuery, type AuditCheckpoint, type AuditEntry, type AuditQuery, type KeyedAuditRecord } from '../../model/audit-chain';
import { chainEntry, verifyAuditChain, type AuditChainSource, type AuditVerifyReport, type RawCheckpoint, type RawEntry } from './chain';
import { AuditConflictError, AuditUnavailableError, checkpointDue, now, type AppendResult, type AuditStore, type CheckpointPolicy } from './store';

/** Options of {@link PostgresAuditStore}. */
export interface PostgresAuditStoreOptions {
  /** `pg` connection settings (connectionString, host, port, user, ssl, …). */
  connection: PoolConfig;
  /** Who signs checkpoints; a store without one can be queried and verified but not appended to. */
  checkpoints?: CheckpointPolicy;
}

/** Arbitrary constant naming fos1's schema lock (pg_advisory_xact_lock takes a bigint). */
const SCHEMA_LOCK = 0x0f05a0d17;
const PAGE = 1000;

/** PostgreSQL audit store (see the module comment). */
export class PostgresAuditStore implements AuditStore {
  private readonly pool: Pool;
  private schema: Promise<void> | undefined;

  constructor(private readonly options: PostgresAuditStoreOptions) {
    this.pool = new Pool({ connectionTimeoutMillis: 5000, query_timeout: 15_000, max: 4, ...options.connection });
    // An idle connection that the server drops (restart, failover) is reported here; without a
    // listener it would crash the worker. The next checkout connects afresh.
    this.pool.on('error', () => undefined);
  }

  async append(records: KeyedAuditRecord[]): Promise<AppendResult> {
    const policy = this.requirePolicy();
    return this.transaction(async (c) => {
      const head = await lockHead(c);
      const result: AppendResult = { appended: [], duplicates: [], head };
      const known = new Map<string, { seq: number; json: string }>();
      if (records.length > 0) {
        const rows = await c.query<{ record_id: string; seq: string; record_json: string }>('SELECT record_id, seq, record_json FROM fos1_audit_entries WHERE record_id = ANY($1::text[])', [records.map((r) => r.id)]);
        for (const row of rows.rows) known.set(row.record_id, { seq: Number(row.seq), json: row.record_json });
      }
      let prev = head.seq === 0 ? undefined : head;
      const entries: AuditEntry[] = [];
      const inBatch = new Set<string>();
      for (const r of records) {
        const stored = known.get(r.id);
        if (stored) {
          if (stored.json !== canonicalJson(r.record)) throw new AuditConflictError(r.id, stored.seq);
          result.duplicates.push({ id: r.id, seq: stored.seq });
        } else if (!inBatch.has(r.id)) {
          inBatch.add(r.id);
          const entry = chainEntry(prev, r.id, r.record);
          entries.push(entry);
          prev = entry;
        }
      }
      if (entries.length > 0) {
        await c.query(
          `INSERT INTO fos1_audit_entries (seq, record_id, record_json, prev_hash, hash, change_id, node, actor, step, started_at)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])`,
          [
            entries.map((e) => e.seq),
            entries.map((e) => e.id),
            entries.map((e) => canonicalJson(e.record)),
            entries.map((e) => e.prevHash),
            entries.map((e) => e.hash),
            entries.map((e) => e.record.changeId),
            entries.map((e) => e.record.node ?? null),
            entries.map((e) => e.record.actor),
            entries.map((e) => e.record.step),
            entries.map((e) => e.record.startedAt),
          ],
        );
        const last = entries[entries.length - 1]!;
        await c.query('UPDATE fos1_audit_head SET seq = $1, hash = $2', [last.seq, last.hash]);
        result.head = { seq: last.seq, hash: last.hash };
        result.appended = entries.map((e) => ({ id: e.id, seq: e.seq }));
      }
      const lastCp = await lastCheckpoint(c);
      if (checkpointDue(policy, result.head.seq, lastCp)) result.checkpoint = await writeCheckpoint(c, policy, result.head);
      return result;
    });
  }

  async checkpoint(): Promise<{ seq: number; keyId: string } | undefined> {
    const policy = this.requirePolicy();
    return this.transaction(async (c) => {
      const head = await lockHead(c);
      const last = await lastCheckpoint(c);
      return head.seq > (last?.seq ?? 0) ? writeCheckpoint(c, policy, head) : undefined;
    });
  }

  async query(input: AuditQuery): Promise<AuditEntry[]> {
    const q = validateAuditQuery(input);
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown): void => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (q.changeId !== undefined) add('change_id = ?', q.changeId);
    if (q.node !== undefined) add('node = ?', q.node);
    if (q.actor !== undefined) add('actor = ?', q.actor);
    if (q.step !== undefined) add('step = ?', q.step);
    if (q.from !== undefined) add('started_at >= ?::timestamptz', q.from);
    if (q.to !== undefined) add('started_at < ?::timestamptz', q.to);
    if (q.afterSeq !== undefined) add('seq > ?', q.afterSeq);
    params.push(q.limit);
    const sql = `SELECT seq, record_id, record_json, prev_hash, hash FROM fos1_audit_entries ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq LIMIT $${params.length}`;
    const rows = await this.withClient((c) => c.query<EntryRow>(sql, params));
    return rows.rows.map((r) => ({ seq: Number(r.seq), id: r.record_id, prevHash: r.prev_hash, hash: r.hash, record: JSON.parse(r.record_json) as AuditRecord }));
  }

  /** Verifies in one read-only snapshot, so appends running meanwhile are not half seen. */
  async verify(publicKeys: ReadonlyMap<string, KeyObject>): Promise<AuditVerifyReport> {
    return this.withClient(async (c) => {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const report = await verifyAuditChain(snapshotSource(c), publicKeys);
        await c.query('COMMIT');
        return report;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private requirePolicy(): CheckpointPolicy {
    if (!this.options.checkpoints) throw new Error('this audit store was opened without a checkpoint signer: it can be read, not appended to');
    return this.options.checkpoints;
  }

  private async transaction<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    return this.withClient(async (c) => {
      await c.query('BEGIN');
      try {
        const out = await fn(c);
        await c.query('COMMIT');
        return out;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Runs `fn` on a pooled connection, creating the schema first if this store has not yet.
   * Failures to reach or talk to the server become {@link AuditUnavailableError} (with the
   * driver's error code, never the data).
   */
  private async withClient<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw unavailable(err);
    }
    let broken = false;
    try {
      this.schema ??= createSchema(client).catch((err: unknown) => {
        this.schema = undefined;
        throw err;
      });
      await this.schema;
      return await fn(client);
    } catch (err) {
      if (err instanceof AuditConflictError) throw err;
      broken = true;
      throw unavailable(err);
    } finally {
      // A connection that failed mid-transaction is discarded rather than reused.
      client.release(broken);
    }
  }
}

interface EntryRow {
  seq: string;
  record_id: string;
  record_json: string;
  prev_hash: string;
  hash: string;
}

function unavailable(err: unknown): AuditUnavailableError {
  if (err instanceof AuditUnavailableError) return err;
  const e = err as { code?: string; message?: string };
  // A server error (a five-character SQLSTATE) is named by its code only: its message can
  // quote the values of the statement. Network errors (ECONNREFUSED, …) say where they failed.
  if (e.code && /^[0-9A-Z]{5}$/.test(e.code)) return new AuditUnavailableError(`PostgreSQL audit store failed: SQLSTATE ${e.code}`);
  return new AuditUnavailableError(`PostgreSQL audit store unavailable: ${e.code ?? 'error'}${e.message ? ` (${e.message})` : ''}`);
}

async function createSchema(c: PoolClient): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
    await c.query(`CREATE TABLE IF NOT EXISTS fos1_audit_head (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      seq bigint NOT NULL,
      hash text NOT NULL)`);
    await c.query(`INSERT INTO fos1_audit_head (singleton, seq, hash) VALUES (true, 0, '${GENESIS_HASH}') ON CONFLICT DO NOTHING`);
    await c.query(`CREATE TABLE IF NOT EXISTS fos1_audit_entries (
      seq bigint PRIMARY KEY CHECK (seq > 0),
      record_id text NOT NULL UNIQUE,
      record_json text NOT NULL,
      prev_hash text NOT NULL,
      hash text NOT NULL,
      change_id text NOT NULL,
      node text,
      actor text NOT NULL,
      step text NOT NULL,
      started_at timestamptz NOT NULL,
      stored_at timestamptz NOT NULL DEFAULT now())`);
    for (const col of ['change_id', 'node', 'actor', 'step', 'started_at']) {
      await c.query(`CREATE INDEX IF NOT EXISTS fos1_audit_entries_${col} ON fos1_audit_entries (${col}, seq)`);
    }
    await c.query(`CREATE TABLE IF NOT EXISTS fos1_audit_checkpoints (
      n bigserial PRIMARY KEY,
      seq bigint NOT NULL,
      head_hash text NOT NULL,
      time text NOT NULL,
      key_id text NOT NULL,
      signature text NOT NULL)`);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function lockHead(c: PoolClient): Promise<{ seq: number; hash: string }> {
  const r = await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM fos1_audit_head FOR UPDATE');
  const row = r.rows[0];
  if (!row) throw new Error('fos1_audit_head has no row');
  return { seq: Number(row.seq), hash: row.hash };
}

async function lastCheckpoint(c: PoolClient): Promise<{ seq: number; time: string } | undefined> {
  const r = await c.query<{ seq: string; time: string }>('SELECT seq, time FROM fos1_audit_checkpoints ORDER BY n DESC LIMIT 1');
  const row = r.rows[0];
  return row ? { seq: Number(row.seq), time: row.time } : undefined;
}

async function writeCheckpoint(c: PoolClient, policy: CheckpointPolicy, head: { seq: number; hash: string }): Promise<{ seq: number; keyId: string }> {
  const cp = policy.signer.sign(head.seq, head.hash, now(policy).toISOString());
  await c.query('INSERT INTO fos1_audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES ($1, $2, $3, $4, $5)', [cp.seq, cp.headHash, cp.time, cp.keyId, cp.signature]);
  return { seq: cp.seq, keyId: cp.keyId };
}

/** The stored chain as the verifier reads it, through `c` (inside the caller's snapshot). */
function snapshotSource(c: PoolClient): AuditChainSource {
  return {
    async *entries(): AsyncIterable<RawEntry> {
      let after = 0;
      for (;;) {
        const page = await c.query<EntryRow & { change_id: string; node: string | null; actor: string; step: string; started_at: Date }>(
          'SELECT seq, record_id, record_json, prev_hash, hash, change_id, node, actor, step, started_at FROM fos1_audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2',
          [after, PAGE],
        );
        for (const row of page.rows) yield rowEntry(row);
        if (page.rows.length < PAGE) return;
        after = Number(page.rows[page.rows.length - 1]!.seq);
      }
    },
    async *checkpoints(): AsyncIterable<RawCheckpoint> {
      const r = await c.query<{ n: string; seq: string; head_hash: string; time: string; key_id: string; signature: string }>('SELECT n, seq, head_hash, time, key_id, signature FROM fos1_audit_checkpoints ORDER BY n');
      for (const row of r.rows) {
        const cp: AuditCheckpoint = { seq: Number(row.seq), headHash: row.head_hash, time: row.time, keyId: row.key_id, signature: row.signature };
        yield { ok: true, ...cp, where: `fos1_audit_checkpoints n=${row.n}` };
      }
    },
    async head() {
      const r = await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM fos1_audit_head');
      const row = r.rows[0];
      return row ? { seq: Number(row.seq), hash: row.hash } : undefined;
    },
  };
}

function rowEntry(row: EntryRow & { change_id: string; node: string | null; actor: string; step: string; started_at: Date }): RawEntry {
  const seq = Number(row.seq);
  const where = `fos1_audit_entries seq=${row.seq}`;
  let record: AuditRecord;
  try {
    record = JSON.parse(row.record_json) as AuditRecord;
  } catch {
    return { ok: false, where, message: 'record_json is not valid JSON', id: row.record_id };
  }
  const differs: string[] = [];
  if (typeof record === 'object' && record !== null) {
    if (row.change_id !== record.changeId) differs.push('change_id');
    if (row.node !== (record.node ?? null)) differs.push('node');
    if (row.actor !== record.actor) differs.push('actor');
    if (row.step !== record.step) differs.push('step');
    if (row.started_at.getTime() !== Date.parse(record.startedAt)) differs.push('started_at');
  }
  return {
    ok: true,
    seq,
    id: row.record_id,
    prevHash: row.prev_hash,
    hash: row.hash,
    record,
    where,
    problem: differs.length ? `the query column(s) ${differs.join(', ')} disagree with the record` : undefined,
  };
}
