/**
 * The revision store (issue 13, docs/revisions.md): every committed change's revision of
 * each node's desired state, next to the audit chain, in the same two backends.
 *
 *   file:        <audit dir>/revisions.ndjson, one revision per line (canonical JSON), appended
 *                with one write and an fsync; opened by the process that owns the audit folder
 *                (the cluster worker), read-only by the API
 *   PostgreSQL:  fos1_revisions (id primary key, node, number, change_id, unique (change_id,
 *                node) and (node, number), revision_json: the canonical JSON)
 *
 * A revision is content-addressed: `stateHash` is the sha256 of the canonical JSON of its
 * state, `id` the sha256 of the canonical JSON of its metadata and `stateHash`
 * (model/revision.ts `revisionHashInput`). The chain of parents is per node. Recording is
 * idempotent by (change id, node): a retried activity gets the revisions already recorded.
 * Each recorded revision's id also goes into the audit chain (the change's `revision`
 * record), so an edited revision is visible: its id no longer matches its content, and the
 * chain names the id it had.
 */
import { ApplicationFailure } from '@temporalio/common';
import { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { withHeartbeats } from '../heartbeat';
import { join } from 'node:path';
import { Pool, type PoolClient } from 'pg';
import type { Logger } from 'pino';
import { canonicalJson } from '../../model/audit-chain';
import { FailureType } from '../../model/failures';
import { applyRevisionDelta, revisionHashInput, type Revision, type RevisionCommit } from '../../model/revision';
import { sha256Hex } from './chain';
import { AuditUnavailableError } from './store';

/** Durable revisions of nodes' desired state. */
export interface RevisionStore {
  /**
   * Records one revision per node of a committed change, each the child of the node's
   * newest revision. Idempotent by (change id, node): those already recorded are returned as
   * they are, nothing written twice.
   */
  commit(commit: RevisionCommit): Promise<Revision[]>;
  /** A node's revisions, newest first (at most `limit`, default 50). */
  list(node: string, limit?: number): Promise<Revision[]>;
  /** One revision by id. */
  get(id: string): Promise<Revision | undefined>;
  /** The revisions a committed change made (one per node it changed), by node name. */
  forChange(changeId: string): Promise<Revision[]>;
  close(): Promise<void>;
}

/** A revision's content does not hash to its id (it was edited where it is stored). */
export class RevisionIntegrityError extends Error {
  override readonly name = 'RevisionIntegrityError';
}

/** Builds the revision that follows `parent` on `node`. */
export function buildRevision(commit: RevisionCommit, entry: RevisionCommit['nodes'][number], parent: Revision | undefined): Revision {
  const state = applyRevisionDelta(parent?.state, entry.delta);
  const meta = {
    node: entry.node,
    number: (parent?.number ?? 0) + 1,
    ...(parent ? { parent: parent.id } : {}),
    changeId: commit.changeId,
    author: commit.author,
    approvers: [...commit.approvers],
    reason: commit.reason,
    time: commit.time,
    stateHash: sha256Hex(canonicalJson(state)),
  };
  return { id: sha256Hex(canonicalJson(revisionHashInput(meta))), ...meta, state };
}

/** Checks that a stored revision still hashes to its id and state hash. */
export function checkRevision(r: Revision): Revision {
  const stateHash = sha256Hex(canonicalJson(r.state));
  const id = sha256Hex(canonicalJson(revisionHashInput({ ...r, stateHash })));
  if (stateHash !== r.stateHash || id !== r.id) throw new RevisionIntegrityError(`revision ${r.id} (node ${r.node}, number ${r.number}) does not match its content: it was changed where it is stored`);
  return r;
}

const NODE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Validates what a workflow hands `recordRevisions` (a malformed commit is refused whole). */
export function validateRevisionCommit(input: unknown): RevisionCommit {
  const c = input as Partial<RevisionCommit> | null;
  const bad = (field: string, rule: string) => new Error(`revision commit: ${field} ${rule}`);
  if (typeof c !== 'object' || c === null) throw bad('(root)', 'must be an object');
  if (typeof c.changeId !== 'string' || c.changeId.length === 0 || c.changeId.length > 253) throw bad('changeId', 'must be 1–253 characters');
  if (typeof c.author !== 'string' || c.author.length === 0) throw bad('author', 'must name who made the change');
  if (!Array.isArray(c.approvers) || !c.approvers.every((a) => typeof a === 'string')) throw bad('approvers', 'must be a list of names');
  if (typeof c.reason !== 'string') throw bad('reason', 'must be a string');
  if (typeof c.time !== 'string' || Number.isNaN(Date.parse(c.time))) throw bad('time', 'must be an ISO 8601 time');
  if (!Array.isArray(c.nodes) || c.nodes.length > 1000) throw bad('nodes', 'must be a list of at most 1000');
  const seen = new Set<string>();
  c.nodes.forEach((n, i) => {
    if (typeof n?.node !== 'string' || !NODE.test(n.node)) throw bad(`nodes[${i}].node`, 'must be a node name');
    if (seen.has(n.node)) throw bad(`nodes[${i}].node`, `names ${n.node} twice`);
    seen.add(n.node);
    if (typeof n.delta !== 'object' || n.delta === null) throw bad(`nodes[${i}].delta`, 'must be an object');
  });
  return c as RevisionCommit;
}

// ─── file backend ───────────────────────────────────────────────────────────────────────

/** File name of the revisions inside the audit folder. */
export const REVISIONS_FILE = 'revisions.ndjson';

/** Revisions in `<dir>/revisions.ndjson` (see the module comment). */
export class FileRevisionStore implements RevisionStore {
  private queue: Promise<unknown> = Promise.resolve();
  /** Appending store only: (change id, node) → revision, and each node's newest (built at open). */
  private readonly byChange = new Map<string, Revision>();
  private readonly newest = new Map<string, Revision>();

  private constructor(
    private readonly path: string,
    private readonly fd: number,
  ) {
    if (fd >= 0) for (const r of this.readAll()) this.remember(r);
  }

  private remember(r: Revision): void {
    this.byChange.set(`${r.changeId}\n${r.node}`, r);
    const before = this.newest.get(r.node);
    if (!before || r.number > before.number) this.newest.set(r.node, r);
  }

  /**
   * Opens the store in `dir` (the audit store's folder). Appending: one process at a time,
   * the one that has the audit store open (its lock covers the folder).
   */
  static open(options: { dir: string; readOnly?: boolean }): FileRevisionStore {
    const path = join(options.dir, REVISIONS_FILE);
    if (options.readOnly) return new FileRevisionStore(path, -1);
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    const fd = openSync(path, 'a+', 0o600);
    // A torn last line (a crash mid-append, never acknowledged) is ignored when read; the
    // retried commit appends the revision again, whole.
    return new FileRevisionStore(path, fd);
  }

  commit(commit: RevisionCommit): Promise<Revision[]> {
    if (this.fd < 0) return Promise.reject(new Error('revision file store is open read-only'));
    const run = this.queue.then(() => {
      const out: Revision[] = [];
      const fresh: Revision[] = [];
      for (const entry of commit.nodes) {
        const existing = this.byChange.get(`${commit.changeId}\n${entry.node}`);
        if (existing) {
          out.push(existing);
          continue;
        }
        const parent = fresh.find((r) => r.node === entry.node) ?? this.newest.get(entry.node);
        const revision = buildRevision(commit, entry, parent);
        fresh.push(revision);
        out.push(revision);
      }
      if (fresh.length > 0) {
        const text = fresh.map((r) => `${canonicalJson(r)}\n`).join('');
        // A torn line left by a crash: start on a fresh line so this one parses.
        writeSync(this.fd, (endsTorn(this.fd) ? '\n' : '') + text);
        fsyncSync(this.fd);
        for (const r of fresh) this.remember(r);
      }
      return out;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  async list(node: string, limit = 50): Promise<Revision[]> {
    return this.readAll()
      .filter((r) => r.node === node)
      .sort((a, b) => b.number - a.number)
      .slice(0, limit);
  }

  async get(id: string): Promise<Revision | undefined> {
    const found = this.readAll().find((r) => r.id === id);
    return found ? checkRevision(found) : undefined;
  }

  async forChange(changeId: string): Promise<Revision[]> {
    return this.readAll()
      .filter((r) => r.changeId === changeId)
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
      .map(checkRevision);
  }

  async close(): Promise<void> {
    if (this.fd >= 0) {
      await this.queue.catch(() => undefined);
      closeSync(this.fd);
    }
  }

  /** Every complete, parseable line (a torn or edited-to-garbage line is skipped; `get` checks hashes). */
  private readAll(): Revision[] {
    if (!existsSync(this.path)) return [];
    const text = readFileSync(this.path, 'utf8');
    const end = text.lastIndexOf('\n');
    const out: Revision[] = [];
    for (const line of text.slice(0, end + 1).split('\n')) {
      if (line === '') continue;
      try {
        out.push(JSON.parse(line) as Revision);
      } catch {
        // unreadable: not a revision
      }
    }
    return out;
  }
}

/** Whether the file's last byte is not a newline (an append that crashed half way). */
function endsTorn(fd: number): boolean {
  const size = fstatSync(fd).size;
  if (size === 0) return false;
  const last = Buffer.alloc(1);
  readSync(fd, last, 0, 1, size - 1);
  return last[0] !== 0x0a;
}

// ─── PostgreSQL backend ─────────────────────────────────────────────────────────────────

/** Names fos1's revision lock (pg_advisory_xact_lock): commits are serialised, so parents form one line per node. */
const REVISION_LOCK = 0x0f05e71;

/** Revisions in the `fos1_revisions` table (see the module comment). */
export class PostgresRevisionStore implements RevisionStore {
  private readonly pool: Pool;
  private schema: Promise<void> | undefined;

  constructor(connectionString: string) {
    this.pool = new Pool({ connectionString, connectionTimeoutMillis: 5000, query_timeout: 15_000, max: 2 });
    this.pool.on('error', () => undefined);
  }

  async commit(commit: RevisionCommit): Promise<Revision[]> {
    return this.withClient(async (c) => {
      await c.query('BEGIN');
      try {
        await c.query('SELECT pg_advisory_xact_lock($1)', [REVISION_LOCK]);
        const out: Revision[] = [];
        for (const entry of commit.nodes) {
          const existing = await c.query<{ revision_json: string }>('SELECT revision_json FROM fos1_revisions WHERE change_id = $1 AND node = $2', [commit.changeId, entry.node]);
          if (existing.rows[0]) {
            out.push(JSON.parse(existing.rows[0].revision_json) as Revision);
            continue;
          }
          const parentRow = await c.query<{ revision_json: string }>('SELECT revision_json FROM fos1_revisions WHERE node = $1 ORDER BY number DESC LIMIT 1', [entry.node]);
          const parent = parentRow.rows[0] ? (JSON.parse(parentRow.rows[0].revision_json) as Revision) : undefined;
          const r = buildRevision(commit, entry, parent);
          await c.query('INSERT INTO fos1_revisions (id, node, number, change_id, time, revision_json) VALUES ($1, $2, $3, $4, $5, $6)', [r.id, r.node, r.number, r.changeId, r.time, canonicalJson(r)]);
          out.push(r);
        }
        await c.query('COMMIT');
        return out;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async list(node: string, limit = 50): Promise<Revision[]> {
    const rows = await this.withClient((c) => c.query<{ revision_json: string }>('SELECT revision_json FROM fos1_revisions WHERE node = $1 ORDER BY number DESC LIMIT $2', [node, limit]));
    return rows.rows.map((r) => JSON.parse(r.revision_json) as Revision);
  }

  async get(id: string): Promise<Revision | undefined> {
    const rows = await this.withClient((c) => c.query<{ revision_json: string }>('SELECT revision_json FROM fos1_revisions WHERE id = $1', [id]));
    return rows.rows[0] ? checkRevision(JSON.parse(rows.rows[0].revision_json) as Revision) : undefined;
  }

  async forChange(changeId: string): Promise<Revision[]> {
    const rows = await this.withClient((c) => c.query<{ revision_json: string }>('SELECT revision_json FROM fos1_revisions WHERE change_id = $1 ORDER BY node', [changeId]));
    return rows.rows.map((r) => checkRevision(JSON.parse(r.revision_json) as Revision));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async withClient<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw new AuditUnavailableError(`PostgreSQL revision store unavailable: ${(err as { code?: string }).code ?? 'error'}`);
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
      broken = true;
      const code = (err as { code?: string }).code;
      // Server errors by their SQLSTATE only (their text can quote values).
      if (code && /^[0-9A-Z]{5}$/.test(code)) throw new AuditUnavailableError(`PostgreSQL revision store failed: SQLSTATE ${code}`);
      throw err instanceof AuditUnavailableError ? err : new AuditUnavailableError(`PostgreSQL revision store unavailable: ${code ?? (err instanceof Error ? err.message : 'error')}`);
    } finally {
      client.release(broken);
    }
  }
}

async function createSchema(c: PoolClient): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1)', [REVISION_LOCK]);
    await c.query(`CREATE TABLE IF NOT EXISTS fos1_revisions (
      id text PRIMARY KEY,
      node text NOT NULL,
      number bigint NOT NULL,
      change_id text NOT NULL,
      time text NOT NULL,
      revision_json text NOT NULL,
      stored_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (node, number),
      UNIQUE (change_id, node))`);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

// ─── activity ───────────────────────────────────────────────────────────────────────────

/** What the revision activity needs; injected by the worker. */
export interface RevisionActivityDeps {
  store: RevisionStore;
  logger: Logger;
}

/** A recorded revision as the workflow sees it (the state stays in the store). */
export interface RecordedRevision {
  node: string;
  id: string;
  number: number;
  parent?: string;
}

/** The revision activities (cluster worker). */
export function createRevisionActivities(deps: RevisionActivityDeps) {
  const { store, logger } = deps;
  return {
    /** Records a committed change's revisions (idempotent by change id and node). */
    async recordRevisions(input: RevisionCommit): Promise<RecordedRevision[]> {
      let commit: RevisionCommit;
      try {
        commit = validateRevisionCommit(input);
      } catch (err) {
        throw ApplicationFailure.create({ type: FailureType.InvalidRevision, message: (err as Error).message, nonRetryable: true });
      }
      try {
        // Heartbeats while the store works (AUDIT_ACTIVITY_OPTIONS: a lost attempt is retried within seconds).
        const revisions = await withHeartbeats({ phase: 'record revisions' }, () => store.commit(commit));
        return revisions.map((r) => ({ node: r.node, id: r.id, number: r.number, ...(r.parent ? { parent: r.parent } : {}) }));
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        logger.warn({ err: message, changeId: commit.changeId }, 'revision store unavailable; recording will be retried');
        throw ApplicationFailure.create({ type: FailureType.RevisionStoreUnavailable, message, nonRetryable: false });
      }
    },
  };
}

/** The revision activities' type, for `proxyActivities<RevisionActivities>` (import type only). */
export type RevisionActivities = ReturnType<typeof createRevisionActivities>;

/** Opens the revision store beside an audit store configured the same way. */
export function openRevisionStore(config: { backend: 'file'; dir: string } | { backend: 'postgres'; connectionString: string }, readOnly: boolean): RevisionStore {
  return config.backend === 'file' ? FileRevisionStore.open({ dir: config.dir, readOnly }) : new PostgresRevisionStore(config.connectionString);
}
