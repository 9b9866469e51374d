/**
 * The OpenAPI document against the routes: every route Fastify registers is in
 * `GET /openapi.json` with its method, every documented operation is a registered route,
 * and the document is valid OpenAPI 3.1 (swagger-parser). The API runs for real on a
 * loopback port; no route here reaches Temporal.
 */
import type { AddressInfo } from 'node:net';
import SwaggerParser from '@apidevtools/swagger-parser';
import type { Client } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApiServer } from '../../api/server';
import { testTokens } from '../helpers/api-tokens';

const { authenticator, tokens } = testTokens({ vic: ['viewer'], olga: ['operator'] });

describe('OpenAPI document', () => {
  let app: FastifyInstance;
  let base: string;
  const registered: { method: string; url: string }[] = [];

  beforeAll(async () => {
    // The document is built from the registrations; no handler runs, so no Temporal client.
    app = await buildApiServer({ client: {} as Client, logger: pino({ level: 'silent' }), security: { authenticator } }, (r) => registered.push(r));
    await app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterAll(() => app?.close());

  async function fetchDocument(): Promise<{ openapi: string; paths: Record<string, Record<string, { operationId?: string; requestBody?: { content: Record<string, { schema: { required?: string[] } }> } }>> }> {
    const res = await fetch(`${base}/openapi.json`, { headers: { authorization: `Bearer ${tokens.vic}` } });
    expect(res.status).toBe(200);
    return (await res.json()) as never;
  }

  test('every registered route is documented with its method, and every documented operation is served', async () => {
    const doc = await fetchDocument();
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    const routes = registered.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
    expect(routes).toEqual(expect.arrayContaining(['POST /v1/changes', 'POST /v1/changes/dry-run', 'GET /v1/changes', 'GET /v1/changes/{id}', 'POST /v1/changes/{id}/confirm', 'POST /v1/changes/{id}/abort', 'GET /openapi.json']));
    expect([...documented].sort()).toEqual([...routes].sort());
    // Served: each documented operation answers something other than "no route" (404 from the not-found handler).
    for (const op of documented) {
      const [method, path] = op.split(' ') as [string, string];
      const res = await fetch(base + path.replace('{id}', 'some-change'), { method, headers: { authorization: `Bearer ${tokens.vic}`, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) }, ...(method === 'POST' ? { body: '{}' } : {}) });
      const body = (await res.json()) as { error?: string };
      expect([op, body.error ?? '']).not.toEqual([op, expect.stringContaining('no route for')]);
    }
  });

  test('the document is valid OpenAPI 3.1', async () => {
    const doc = await fetchDocument();
    expect(doc.openapi).toBe('3.1.0');
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeDefined();
  });

  test('the change request body is the model\'s schema, with author left to the API', async () => {
    const doc = await fetchDocument();
    const schema = doc.paths['/v1/changes']?.post?.requestBody?.content['application/json']?.schema;
    expect(schema?.required).toEqual(expect.arrayContaining(['id', 'reason']));
    // `targets` or `targetSelector`: either names the nodes (model/change-request.ts).
    expect(Object.keys((schema as { properties?: object } | undefined)?.properties ?? {})).toEqual(expect.arrayContaining(['targets', 'targetSelector']));
    expect(schema?.required).not.toContain('author');
  });

  test('a body with a __proto__ key is refused like a malformed one (400), before any handler runs', async () => {
    const post = (body: string) => fetch(`${base}/v1/changes/x/abort`, { method: 'POST', headers: { authorization: `Bearer ${tokens.olga}`, 'content-type': 'application/json' }, body });
    for (const body of ['{"__proto__": {"by": "admin"}}', '{"constructor": {"prototype": {"by": "admin"}}}', '{not json']) {
      const res = await post(body);
      expect([body, res.status]).toEqual([body, 400]);
      expect(((await res.json()) as { error: string }).error).toContain('request body is not valid JSON');
    }
  });

  test('the document needs a token like every route (401)', async () => {
    const res = await fetch(`${base}/openapi.json`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="fos1"');
  });
});
