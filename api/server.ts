/**
 * The HTTP API: the same operations as the Temporal Web UI, for scripts.
 *
 *   POST /v1/changes               submit a change request (202; 400 with the issues)
 *   POST /v1/changes/dry-run       plan only; answers with each node's diff
 *   GET  /v1/changes               list changes (?author=, ?status=, ?node=) via search attributes
 *   GET  /v1/changes/:id           status and progress (the workflow's `status` query)
 *   POST /v1/changes/:id/confirm   confirm a commit-confirmed change ({ "reason" })
 *   POST /v1/changes/:id/abort     abort: applied nodes are restored ({ "reason" })
 *   GET  /v1/audit                 the durable audit (?change=, ?node=, ?actor=, ?action=, ?from=, ?to=, ?limit=, ?after=)
 *   GET  /v1/audit/verify          checks the hash chain and the signed checkpoints; names the first record that does not match
 *   GET  /v1/revisions?node=       a node's revisions, newest first (docs/revisions.md)
 *   GET  /v1/revisions/diff        ?from=&to= (revision ids): the diff in fos1's words
 *   GET  /v1/revisions/:id         one revision, with its state
 *   POST /v1/revisions/:id/rollback  a new change whose desired state is the revision's ({ "id", "reason", "options" })
 *
 * The audit and the revisions are read from the stores the cluster worker writes, opened
 * read-only (workers/audit.ts); authorization refusals go to the audit store through the
 * cluster worker (api/authz-audit.ts), so the API holds no signing key.
 *
 * Every request carries a bearer token (auth/http-guard.ts: 401 without, 403 without the
 * route's permission on `changes.fos1.io`, 415 for a body that is not JSON, 403 for a foreign
 * Host or Origin). The change's `author` and the `by` of confirm/abort are the authenticated
 * principal, never taken from the body: a body naming someone else is refused. The workflow
 * gets an identity assertion signed with the identity key (model/identity.ts) so it can
 * record the author as verified.
 *
 * Requests are validated with the same zod model the workflow uses, so a bad request is
 * refused before a workflow exists. Binds to loopback by default.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { Logger } from 'pino';
import type { Permission, Principal } from '../auth/authenticator';
import { applyServerLimits, HttpGuard, HttpRefusal, type HttpSecurityOptions } from '../auth/http-guard';
import { signIdentity } from '../auth/identity-assertion';
import { loadPublicKeys, RevisionIntegrityError, type AuditStore, type RevisionStore } from '../activities/audit-store';
import { AuditInputError, validateAuditQuery } from '../model/audit-chain';
import { validateChangeRequest } from '../model/change-request';
import { diffRevisionStates, rollbackRequest, type Revision } from '../model/revision';
import { AuthzAuditForwarder } from './authz-audit';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../model/naming';
import { abortSignal, changeWorkflow, confirmUpdate, statusQuery } from '../workflows/change';

const MAX_BODY_BYTES = 2 * 1024 * 1024;
const ID = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Options of {@link startApiServer}. */
export interface ApiServerOptions {
  client: Client;
  port: number;
  host: string;
  logger: Logger;
  /** Authentication, Host/Origin checks and limits. */
  security: HttpSecurityOptions;
  /** Key to sign identity assertions with (FOS1_IDENTITY_KEY_FILE); without it changes are recorded self-asserted. */
  identityKey?: Buffer;
  /**
   * The audit store and the revision store, opened read-only, and the public keys that
   * verify checkpoints (read at each verify: the worker creates the key on its first start).
   * Without them the audit and revision routes answer 503.
   */
  audit?: { store: AuditStore; revisions: RevisionStore; publicKeyFiles: string[] };
}

/** A running API: the HTTP server and what it must finish at shutdown. */
export interface ApiServer extends Server {
  /** Hands the refusals still waiting to the audit store. */
  flushAudit(): Promise<void>;
}

/** A route: method, path, the permission it needs, and its handler. */
interface Route {
  method: 'GET' | 'POST';
  pattern: RegExp;
  permission: Permission;
  handle: (req: IncomingMessage, match: RegExpExecArray, url: URL, principal: Principal) => Promise<[number, unknown]>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Starts the API; resolves once it listens. */
export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const { client, logger } = options;
  const authzAudit = new AuthzAuditForwarder(client, logger);
  const guard = new HttpGuard({ ...options.security, onRefusal: authzAudit.add }, logger);
  const audit = () => {
    if (!options.audit) throw new HttpError(503, 'the API has no audit store configured (FOS1_AUDIT_POSTGRES_URL or FOS1_AUDIT_DIR)');
    return options.audit;
  };
  const revision = async (id: string): Promise<Revision> => {
    if (!/^[0-9a-f]{64}$/.test(id)) throw new HttpError(400, 'a revision id is 64 lowercase hex digits (its sha256)');
    let found: Revision | undefined;
    try {
      found = await audit().revisions.get(id);
    } catch (err) {
      if (err instanceof RevisionIntegrityError) throw new HttpError(409, err.message);
      throw err;
    }
    if (!found) throw new HttpError(404, `no revision ${id}`);
    return found;
  };
  /** Starts a change workflow for a validated request (POST /v1/changes, a rollback). */
  const submit = async (body: Record<string, unknown>, principal: Principal): Promise<[number, unknown]> => {
    const request = validated(body);
    const workflowId = changeWorkflowId(request.id);
    try {
      // Change ids are single-use: a finished change keeps its id in the audit history.
      const handle = await client.workflow.start(changeWorkflow, {
        taskQueue: CLUSTER_TASK_QUEUE,
        workflowId,
        args: workflowArgs(body, principal),
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      });
      logger.info({ changeId: request.id, author: request.author, workflowId, signed: options.identityKey !== undefined }, 'change submitted');
      return [202, { changeId: request.id, workflowId, runId: handle.firstExecutionRunId, status: `/v1/changes/${request.id}` }];
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) throw new HttpError(409, `a change with id "${request.id}" already exists; change ids are single-use`);
      throw err;
    }
  };
  /** The workflow's arguments: the request with its author, and the assertion when the API has a key. */
  const workflowArgs = (body: Record<string, unknown>, principal: Principal): [unknown] | [unknown, unknown] =>
    options.identityKey ? [body, signIdentity(options.identityKey, { principal: principal.name, roles: principal.roles }, String(body.id), body)] : [body];

  const routes: Route[] = [
    {
      method: 'POST',
      pattern: /^\/v1\/changes\/dry-run$/,
      permission: { resource: 'changes', verb: 'submit' },
      handle: async (req, _match, _url, principal) => {
        const raw = authored(await readJson(req), principal);
        const body = { ...raw, options: { ...((raw.options as object) ?? {}), dryRun: true } };
        const request = validated(body);
        const handle = await client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `${changeWorkflowId(request.id)}-dry-run-${Date.now()}`, args: workflowArgs(body, principal) });
        return [200, await handle.result()];
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/changes$/,
      permission: { resource: 'changes', verb: 'submit' },
      handle: async (req, _match, _url, principal) => submit(authored(await readJson(req), principal), principal),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/changes$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, _match, url) => {
        const clauses = ["WorkflowType = 'changeWorkflow'"];
        const filters: [string, string][] = [
          ['author', 'Fos1Author'],
          ['status', 'Fos1Status'],
          ['node', 'Fos1TargetNodes'],
        ];
        for (const [param, attribute] of filters) {
          const value = url.searchParams.get(param);
          if (value === null) continue;
          if (!/^[\w.@:-]{1,100}$/.test(value)) throw new HttpError(400, `query parameter "${param}" may hold only letters, digits, "_", "-", ".", "@", ":"`);
          clauses.push(`${attribute} = '${value}'`);
        }
        const changes = [];
        for await (const wf of client.workflow.list({ query: clauses.join(' AND ') })) {
          changes.push({ workflowId: wf.workflowId, status: wf.status.name, startTime: wf.startTime, closeTime: wf.closeTime, searchAttributes: wf.searchAttributes });
          if (changes.length >= 100) break;
        }
        return [200, { changes }];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/changes\/([^/]+)$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, match) => [200, await client.workflow.getHandle(changeWorkflowId(idFrom(match))).query(statusQuery)],
    },
    {
      method: 'POST',
      pattern: /^\/v1\/changes\/([^/]+)\/confirm$/,
      permission: { resource: 'changes', verb: 'confirm' },
      handle: async (req, match, _url, principal) => {
        const action = operatorAction(await readJson(req), principal);
        const handle = client.workflow.getHandle(changeWorkflowId(idFrom(match)));
        try {
          return [200, await handle.executeUpdate(confirmUpdate, { args: [action] })];
        } catch (err) {
          // A finished change rejects updates as "not found"; tell it apart from a missing one.
          const status = await handle.query(statusQuery).catch(() => undefined);
          if (status) throw new HttpError(409, `nothing to confirm: the change is ${status.phase}`);
          if (err instanceof WorkflowNotFoundError) throw err;
          throw new HttpError(409, err instanceof Error ? err.message : String(err));
        }
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/changes\/([^/]+)\/abort$/,
      permission: { resource: 'changes', verb: 'abort' },
      handle: async (req, match, _url, principal) => {
        await client.workflow.getHandle(changeWorkflowId(idFrom(match))).signal(abortSignal, operatorAction(await readJson(req), principal));
        return [202, { aborted: true }];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/audit$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, _match, url) => {
        const p = url.searchParams;
        const int = (name: string) => {
          const v = p.get(name);
          if (v === null) return undefined;
          if (!/^\d{1,9}$/.test(v)) throw new HttpError(400, `query parameter "${name}" must be a whole number`);
          return Number(v);
        };
        const given = (name: string) => p.get(name) ?? undefined;
        let query;
        try {
          query = validateAuditQuery({ changeId: given('change'), node: given('node'), actor: given('actor'), step: given('action'), from: given('from'), to: given('to'), limit: int('limit'), afterSeq: int('after') });
        } catch (err) {
          if (err instanceof AuditInputError) throw new HttpError(400, err.message.replace('query.changeId', 'change').replace('query.step', 'action').replace('query.afterSeq', 'after').replace(/^query\./, ''));
          throw err;
        }
        const entries = await audit().store.query(query);
        return [200, { entries, ...(entries.length === query.limit ? { next: `after=${entries[entries.length - 1]!.seq}` } : {}) }];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/audit\/verify$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async () => {
        const { store, publicKeyFiles } = audit();
        let keys;
        try {
          keys = loadPublicKeys(publicKeyFiles);
        } catch (err) {
          throw new HttpError(503, `cannot verify: ${(err as Error).message} (FOS1_AUDIT_PUBLIC_KEYS)`);
        }
        return [200, await store.verify(keys)];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/revisions$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, _match, url) => {
        const node = url.searchParams.get('node');
        if (!node || !ID.test(node)) throw new HttpError(400, 'query parameter "node" must name a node (lowercase letters, digits, "-")');
        const revisions = await audit().revisions.list(node);
        return [200, { node, revisions: revisions.map(({ state: _state, ...summary }) => summary) }];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/revisions\/diff$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, _match, url) => {
        const from = await revision(url.searchParams.get('from') ?? '');
        const to = await revision(url.searchParams.get('to') ?? '');
        return [200, { from: from.id, to: to.id, nodes: [from.node, to.node], diff: diffRevisionStates(from.state, to.state) }];
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/revisions\/([^/]+)$/,
      permission: { resource: 'changes', verb: 'view' },
      handle: async (_req, match) => [200, await revision(match[1] ?? '')],
    },
    {
      method: 'POST',
      pattern: /^\/v1\/revisions\/([^/]+)\/rollback$/,
      permission: { resource: 'changes', verb: 'submit' },
      handle: async (req, match, _url, principal) => {
        const target = await revision(match[1] ?? '');
        const raw = (await readJson(req)) as Record<string, unknown>;
        if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new HttpError(400, 'the body must be a JSON object ({ "id", "reason", "options" }, all optional)');
        const extra = Object.keys(raw).filter((k) => !['id', 'reason', 'options', 'author'].includes(k));
        if (extra.length > 0) throw new HttpError(400, `unknown field(s) ${extra.join(', ')}: a rollback takes "id", "reason" and "options"`);
        const id = typeof raw.id === 'string' ? raw.id : `rollback-${target.id.slice(0, 12)}-${Date.now().toString(36)}`;
        const plan = rollbackRequest(target, { id, author: principal.name, ...(typeof raw.reason === 'string' ? { reason: raw.reason } : {}), now: Date.now() });
        if (!plan.ok) throw new HttpError(409, `cannot roll back to revision ${target.id}: ${plan.reasons.join('; ')}`, { reasons: plan.reasons });
        const body = authored({ ...plan.request, ...(raw.author !== undefined ? { author: raw.author } : {}), ...(raw.options !== undefined ? { options: raw.options } : {}) }, principal);
        const [status, answer] = await submit(body, principal);
        return [status, { ...(answer as object), revision: target.id, node: target.node }];
      },
    },
  ];

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      try {
        // Host, Origin and the concurrency cap first, then the token: an unknown route is
        // answered 404 only to an authenticated caller.
        guard.admit(req, res);
        const principal = await guard.authenticate(req);
        for (const route of routes) {
          const match = route.pattern.exec(url.pathname);
          if (match && route.method === req.method) {
            await guard.authorize(req, principal, route.permission);
            if (route.method === 'POST') guard.requireMediaType(req, 'application/json');
            const [status, body] = await route.handle(req, match, url, principal);
            return send(res, status, body);
          }
        }
        throw new HttpError(404, `no route for ${req.method} ${url.pathname}`);
      } catch (err) {
        if (err instanceof HttpRefusal) return send(res, err.status, { error: err.message }, err.headers);
        if (err instanceof HttpError) return send(res, err.status, { error: err.message, ...err.body });
        if (err instanceof WorkflowNotFoundError) return send(res, 404, { error: 'no such change' });
        logger.error({ err, path: url.pathname }, 'API request failed');
        return send(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  applyServerLimits(server, options.security);
  await new Promise<void>((resolve) => server.listen(options.port, options.host, resolve));
  return Object.assign(server, { flushAudit: () => authzAudit.close() });
}

function validated(body: unknown) {
  const result = validateChangeRequest(body, Date.now());
  if (!result.ok) throw new HttpError(400, 'invalid change request', { issues: result.issues });
  return result.request;
}

function idFrom(match: RegExpExecArray): string {
  const id = match[1] ?? '';
  if (!ID.test(id)) throw new HttpError(400, 'change id must be 1–63 lowercase letters, digits or "-"');
  return id;
}

/** The change request with `author` set to the principal; a body naming anyone else is refused. */
function authored(body: unknown, principal: Principal): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'invalid change request', { issues: [{ field: '', message: 'must be a JSON object' }] });
  const b = body as Record<string, unknown>;
  if (b.author !== undefined && b.author !== principal.name) {
    throw new HttpError(403, `"author" must be the authenticated principal "${principal.name}" (or left out): a change cannot be submitted in someone else's name`);
  }
  return { ...b, author: principal.name };
}

function operatorAction(body: unknown, principal: Principal): { by: string; reason?: string } {
  const b = (body ?? {}) as Record<string, unknown>;
  if (b.by !== undefined && b.by !== principal.name) {
    throw new HttpError(403, `"by" must be the authenticated principal "${principal.name}" (or left out): nobody confirms or aborts in someone else's name`);
  }
  const reason = typeof b.reason === 'string' ? b.reason.slice(0, 200) : undefined;
  return { by: principal.name, ...(reason ? { reason } : {}) };
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes; send large blocklists by reference`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body, null, 2) + '\n');
}
