/**
 * The HTTP API: the same operations as the Temporal Web UI, for scripts.
 *
 *   POST /v1/changes               submit a change request (202; 400 with the issues)
 *   POST /v1/changes/dry-run       plan only; answers with each node's diff
 *   GET  /v1/changes               list changes (?author=, ?status=, ?node=) via search attributes
 *   GET  /v1/changes/:id           status and progress (the workflow's `status` query)
 *   POST /v1/changes/:id/confirm   confirm a commit-confirmed change ({ "reason" })
 *   POST /v1/changes/:id/abort     abort: applied nodes are restored ({ "reason" })
 *   POST /v1/changes/:id/approve   approve the pending plan ({ "planDigest", "reason" }; docs/approvals.md)
 *   POST /v1/changes/:id/reject    reject it: the change ends with nothing applied
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
import { validateChangeRequest } from '../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../model/naming';
import { approvalAssertionSubject } from '../model/approval-policy';
import { summariseFailure } from '../model/failures';
import { approveUpdate, rejectUpdate } from '../workflows/approval';
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
export async function startApiServer(options: ApiServerOptions): Promise<Server> {
  const { client, logger } = options;
  const guard = new HttpGuard(options.security, logger);
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
      handle: async (req, _match, _url, principal) => {
        const body = authored(await readJson(req), principal);
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
      },
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
    ...(['approve', 'reject'] as const).map(
      (decision): Route => ({
        method: 'POST',
        pattern: new RegExp(`^/v1/changes/([^/]+)/${decision}$`),
        permission: { resource: 'changes', verb: 'approve' },
        handle: async (req, match, _url, principal) => {
          const changeId = idFrom(match);
          const body = await readJson(req);
          const action = operatorAction(body, principal, 'approves or rejects');
          const handle = client.workflow.getHandle(changeWorkflowId(changeId));
          const given = (body as { planDigest?: unknown } | null)?.planDigest;
          if (given !== undefined && (typeof given !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(given))) throw new HttpError(400, '"planDigest" must be "sha256:" and 64 hex digits (status.approval.planDigest)');
          const current = await handle.query(statusQuery);
          if (current.approval?.state !== 'pending') throw new HttpError(409, `nothing to ${decision}: change ${changeId} is ${current.phase}${current.approval ? ` (approval ${current.approval.state})` : ', and awaits no approval'}`);
          // Without a digest the caller approves the plan the change shows now.
          const planDigest = typeof given === 'string' ? given : current.approval.planDigest;
          const vote = { ...action, planDigest };
          const assertion = options.identityKey ? signIdentity(options.identityKey, { principal: principal.name, roles: principal.roles }, changeId, approvalAssertionSubject(changeId, principal.name, decision, vote)) : undefined;
          try {
            const approval = await handle.executeUpdate(decision === 'approve' ? approveUpdate : rejectUpdate, { args: [{ ...vote, ...(assertion ? { assertion } : {}) }] });
            logger.info({ changeId, by: principal.name, decision, planDigest }, `change ${decision === 'approve' ? 'approved' : 'rejected'}`);
            return [200, approval];
          } catch (err) {
            // A change that closed meanwhile rejects updates as "not found"; it still answers queries.
            const status = err instanceof WorkflowNotFoundError ? await handle.query(statusQuery).catch(() => undefined) : undefined;
            if (status) throw new HttpError(409, `nothing to ${decision}: the change is ${status.phase}`);
            if (err instanceof WorkflowNotFoundError) throw err;
            const why = summariseFailure(err);
            // The author voting on their own change is forbidden, not a conflict.
            throw new HttpError(why.type === 'SelfApprovalRefused' ? 403 : 409, why.message, { type: why.type });
          }
        },
      }),
    ),
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
  return server;
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

function operatorAction(body: unknown, principal: Principal, verbs = 'confirms or aborts'): { by: string; reason?: string } {
  const b = (body ?? {}) as Record<string, unknown>;
  if (b.by !== undefined && b.by !== principal.name) {
    throw new HttpError(403, `"by" must be the authenticated principal "${principal.name}" (or left out): nobody ${verbs} in someone else's name`);
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
