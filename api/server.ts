/**
 * The HTTP API on Fastify: the same operations as the Temporal Web UI, for scripts and the
 * `fos1` CLI. The routes, their permissions and schemas are in api/routes.ts; the OpenAPI
 * 3.1 document generated from those registrations is served at `GET /openapi.json`.
 *
 * Every request passes the guard (auth/http-guard.ts) in an `onRequest` hook, before the
 * body is read: 503 above the concurrency cap, 403 for a foreign Host or Origin, 401 without
 * a valid bearer token (an unknown route is answered 404 only to an authenticated caller),
 * 403 without the route's permission on `changes.fos1.io`, 415 for a POST body that is not
 * JSON. Bodies are limited to 2 MiB (413); the server's header/request time-outs are the
 * guard's. The change's `author` and the `by` of confirm/abort are the authenticated
 * principal, never taken from the body: a body naming someone else is refused (403) before
 * validation. The workflow gets an identity assertion signed with the identity key
 * (model/identity.ts) so it can record the author as verified.
 *
 * Requests are validated with the zod schemas of the route (the change request's is the
 * model's own, the one the workflow uses), so a bad request is refused — 400 naming each
 * field and rule — before a workflow exists. The body reaches the workflow as sent.
 * Answers are written as the handler returns them (pretty JSON); their schemas document
 * them. Binds to loopback by default.
 */
import { createServer, type Server } from 'node:http';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import swagger from '@fastify/swagger';
import { WorkflowNotFoundError } from '@temporalio/client';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifySchema } from 'fastify';
import type { z } from 'zod';
import type { Principal } from '../auth/authenticator';
import { applyServerLimits, HttpGuard, HttpRefusal, type HttpSecurityOptions } from '../auth/http-guard';
import { AuthzAuditForwarder } from './authz-audit';
import { apiResponsesTotal } from '../metrics/registry';
import { tracer } from '../telemetry/tracing';
import { formatIssues, issuesOf, type ValidationIssue } from '../model/change-request';
import { documentSchemas, OPENAPI_INFO } from './openapi';
import { apiRoutes, HttpError, type ApiRoute, type RouteDeps } from './routes';

const MAX_BODY_BYTES = 2 * 1024 * 1024;

/** Options of {@link startApiServer}. */
export interface ApiServerOptions extends RouteDeps {
  port: number;
  host: string;
  /** Authentication, Host/Origin checks and limits. */
  security: HttpSecurityOptions;
}

/** A request part that failed its schema: the issues, and the message of the 400. */
class RequestInvalid extends Error {
  constructor(
    message: string,
    readonly issues: ValidationIssue[],
  ) {
    super(message);
    this.name = 'RequestInvalid';
  }
}

declare module 'fastify' {
  /** What each route carries in Fastify's `config`: for the guard hook, the error handler and the document. */
  interface FastifyContextConfig {
    permission?: ApiRoute['permission'];
    invalidBody?: string;
    /** Body fields the API fills in; the document marks them optional (api/openapi.ts). */
    filledIn?: string[];
  }
  interface FastifyInstance {
    /** Hands the authorization refusals still waiting to the durable audit store (api/authz-audit.ts). */
    flushAudit(): Promise<void>;
  }
  interface FastifyRequest {
    /** Set by the guard hook for every request that gets past authentication. */
    principal: Principal | null;
  }
}

/**
 * Builds the API (routes registered, not listening): for {@link startApiServer}, and for
 * tests that inspect the routes and the document. `registered` receives each route as
 * Fastify registers it.
 */
export async function buildApiServer(options: Omit<ApiServerOptions, 'port' | 'host'>, registered?: (route: { method: string; url: string }) => void): Promise<FastifyInstance> {
  const { logger } = options;
  // Refusals also go to the durable audit store, through the cluster worker (no signing key here).
  const authzAudit = new AuthzAuditForwarder(options.client, logger);
  const guard = new HttpGuard({ ...options.security, onRefusal: authzAudit.add }, logger);
  const app: FastifyInstance = Fastify({
    loggerInstance: logger as unknown as FastifyBaseLogger,
    // The guard logs every authorization decision; a line per request on top is noise.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    bodyLimit: MAX_BODY_BYTES,
    // Routes are matched as written: `/v1/changes/` is not `/v1/changes`.
    routerOptions: { ignoreTrailingSlash: false },
    // One span per request around all of Fastify's handling (a no-op unless tracing is on,
    // telemetry/tracing.ts): started active here, so the workflow calls a handler makes are its
    // children, and through Temporal's headers so is the whole change.
    serverFactory: (handler) =>
      createServer((req, res) => {
        const target = (req.url ?? '').split('?')[0] ?? '';
        tracer().startActiveSpan(`API ${req.method ?? ''}`, { kind: SpanKind.SERVER, attributes: { 'http.request.method': req.method ?? '', 'url.path': target } }, (span) => {
          res.once('close', () => {
            span.setAttribute('http.response.status_code', res.statusCode);
            if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
            span.end();
          });
          handler(req, res);
        });
      }),
  });
  app.decorateRequest('principal', null);
  app.decorate('flushAudit', () => authzAudit.close());
  if (registered) app.addHook('onRoute', (route) => [route.method].flat().forEach((method) => registered({ method, url: route.url })));

  // Schemas are zod: requests are checked with them; answers are written as the handlers
  // return them (pretty JSON), the response schemas only document them.
  app.setValidatorCompiler(({ schema, httpPart }) => {
    const zod = schema as unknown as z.ZodType;
    return (data: unknown) => {
      const result = zod.safeParse(data);
      if (!result.success) return { error: new RequestInvalid(`invalid ${httpPart === 'body' ? 'request body' : httpPart === 'querystring' ? 'query' : 'path'}`, issuesOf(result.error)) };
      // The body goes to the workflow as sent (it validates it again, with the same schema,
      // and the identity assertion signs it); path and query are used parsed.
      return httpPart === 'body' ? { value: data } : { value: result.data };
    };
  });
  app.setSerializerCompiler(() => (data) => serialize(data));
  // Every answer goes through serialize(): errors and the 404 handler too.

  // The one JSON parser: Fastify's own (it refuses `__proto__` and `constructor.prototype`
  // keys), except that an empty body is `{}` and a malformed one a plain 400.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, text, done) => {
    const body = String(text);
    if (body.trim() === '') return done(null, {});
    void parseJson(request, body, (err, value) => (err ? done(new HttpError(400, 'request body is not valid JSON (or holds a "__proto__" or "constructor.prototype" key)'), undefined) : done(null, value)));
  });

  // The guard, before the body is read. Host, Origin and the cap first, then the token:
  // an unknown route is answered 404 only to an authenticated caller.
  app.addHook('onRequest', async (request, reply) => {
    // The request's span (serverFactory above) is named by the route pattern, once routed.
    if (!request.is404 && request.routeOptions.url) trace.getActiveSpan()?.updateName(`API ${request.method} ${request.routeOptions.url}`).setAttribute('http.route', request.routeOptions.url);
    guard.admit(request.raw, reply.raw);
    const principal = await guard.authenticate(request.raw);
    request.principal = principal;
    if (request.is404) return;
    const config = request.routeOptions.config;
    if (config.permission) await guard.authorize(request.raw, principal, config.permission);
    if (request.method === 'POST') guard.requireMediaType(request.raw, 'application/json');
  });

  // Every answer counts, refusals by the guard included (metrics/registry.ts); the route is the
  // registered pattern (`/v1/changes/:id`), never the raw path, so ids make no new series.
  app.addHook('onResponse', async (request, reply) => {
    apiResponsesTotal.inc({ method: request.method, route: request.is404 ? 'unmatched' : (request.routeOptions.url ?? 'unmatched'), status: String(reply.statusCode) });
  });

  app.setNotFoundHandler((request) => {
    throw new HttpError(404, `no route for ${request.method} ${request.url.split('?')[0]}`);
  });

  app.setErrorHandler((err, request, reply) => {
    const answer = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => reply.code(status).headers(headers).type('application/json; charset=utf-8').send(serialize(body));
    if (err instanceof HttpRefusal) return answer(err.status, { error: err.message }, err.headers);
    if (err instanceof HttpError) return answer(err.status, { error: err.message, ...err.body });
    if (err instanceof RequestInvalid) {
      const config = request.routeOptions.config;
      const message = err.message === 'invalid request body' && config.invalidBody ? config.invalidBody : `${err.message}: ${formatIssues(err.issues)}`;
      return answer(400, { error: message, issues: err.issues });
    }
    if (err instanceof WorkflowNotFoundError) return answer(404, { error: 'no such change' });
    const code = (err as { code?: string }).code;
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return answer(413, { error: `request body over ${MAX_BODY_BYTES} bytes; send large blocklists by reference` });
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) return answer(status, { error: err instanceof Error ? err.message : String(err) });
    logger.error({ err, path: request.url.split('?')[0] }, 'API request failed');
    return answer(500, { error: err instanceof Error ? err.message : String(err) });
  });

  await app.register(swagger, { openapi: OPENAPI_INFO, transform: documentSchemas });

  for (const route of apiRoutes(options)) {
    const config = { permission: route.permission, ...(route.invalidBody ? { invalidBody: route.invalidBody } : {}), ...(route.filledIn ? { filledIn: route.filledIn } : {}) };
    app.route({
      method: route.method,
      url: route.url,
      config,
      schema: routeSchema(route),
      ...(route.prepareBody
        ? {
            preValidation: async (request) => {
              request.body = route.prepareBody?.(request.body, request.principal as Principal);
            },
          }
        : {}),
      handler: async (request, reply) => {
        const [status, body] = await route.handle({
          params: request.params as Record<string, string>,
          query: request.query as Record<string, string | undefined>,
          body: request.body,
          principal: request.principal as Principal,
        });
        return reply.code(status).type('application/json; charset=utf-8').send(serialize(body));
      },
    });
  }
  app.route({
    method: 'GET',
    url: '/openapi.json',
    schema: { operationId: 'getOpenApiDocument', summary: 'This document (OpenAPI 3.1).', response: { 200: { description: 'The OpenAPI document.' } } } as FastifySchema,
    handler: async (_request, reply) => reply.type('application/json; charset=utf-8').send(serialize(app.swagger())),
  });
  return app;
}

/** A running API: its HTTP server (`close()` stops it) and the hand-over of waiting audit records. */
export interface ApiServer extends Server {
  /** Hands the authorization refusals still waiting to the durable audit store (call at shutdown). */
  flushAudit(): Promise<void>;
}

/** Starts the API; resolves with the HTTP server once it listens (`server.close()` stops it). */
export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const app = await buildApiServer(options);
  await app.ready();
  applyServerLimits(app.server, options.security);
  await app.listen({ port: options.port, host: options.host });
  return Object.assign(app.server, { flushAudit: () => app.flushAudit() });
}

/** The route's schemas in Fastify's shape (zod values; api/openapi.ts turns them into JSON Schema). */
function routeSchema(route: ApiRoute): FastifySchema {
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.params ? { params: route.params } : {}),
    ...(route.querystring ? { querystring: route.querystring } : {}),
    ...(route.body ? { body: route.body } : {}),
    response: Object.fromEntries(Object.entries(route.responses).map(([status, r]) => [status, { description: r.description, content: { 'application/json': { schema: r.schema } } }])),
  } as FastifySchema;
}

function serialize(data: unknown): string {
  return JSON.stringify(data, null, 2) + '\n';
}
