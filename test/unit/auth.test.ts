/**
 * The authentication pieces on their own: the token file (hashes only, roles → verbs, the
 * file `npm start` writes), identity assertions (each altered field refused), and the HTTP
 * guard's Host check and concurrency cap on a real loopback server.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createIdentityKeyFile, loadIdentityKey, signControllerIdentity, signIdentity, verifyIdentityAssertion } from '../../auth/identity-assertion';
import { createTokenFile, DEFAULT_ROLES, hashToken, parseTokenFile, TokenFileAuthenticator } from '../../auth/token-file';
import { listenNdjsonHttp } from '../../ingest/line-servers';
import { canonicalJson } from '../../model/identity';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fos1-auth-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('token file', () => {
  test('npm start\'s file: mode 0600, holds only the hash, and the admin token it names authenticates with every verb', async () => {
    const file = join(dir, 'state', 'tokens.json');
    const tokenOut = join(dir, 'state', 'admin-token');
    expect(createTokenFile(file, tokenOut)).toBe(true);
    expect(createTokenFile(file, tokenOut)).toBe(false);
    const token = readFileSync(tokenOut, 'utf8').trim();
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(tokenOut).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).not.toContain(token);
    expect(readFileSync(file, 'utf8')).toContain(hashToken(token));
    const auth = TokenFileAuthenticator.fromFile(file);
    const admin = await auth.authenticate(token);
    expect(admin).toEqual({ name: 'admin', roles: ['admin'] });
    for (const verb of ['submit', 'approve', 'confirm', 'abort', 'lift', 'view'] as const) expect(await auth.authorize(admin!, { resource: 'changes', verb })).toBe(true);
    expect(await auth.authorize(admin!, { resource: 'alerts', verb: 'ingest' })).toBe(true);
    expect(await auth.authenticate(`${token}x`)).toBeUndefined();
  });

  test('roles grant exactly their verbs', async () => {
    const auth = new TokenFileAuthenticator({ tokens: [{ sha256: hashToken('v'), principal: 'vera', roles: ['viewer'] }], roles: DEFAULT_ROLES });
    const vera = (await auth.authenticate('v'))!;
    expect(await auth.authorize(vera, { resource: 'changes', verb: 'view' })).toBe(true);
    expect(await auth.authorize(vera, { resource: 'changes', verb: 'submit' })).toBe(false);
    expect(await auth.authorize(vera, { resource: 'alerts', verb: 'ingest' })).toBe(false);
  });

  test('a bad file names the field and the rule, never a value', () => {
    expect(() => parseTokenFile('tokens:\n  - { sha256: "plain-secret", principal: bob, roles: [admin] }\n', '/etc/fos1/tokens.yaml')).toThrow(
      /tokens\.0\.sha256: must be the lowercase hex sha256 of the token[\s\S]*tokens\.0\.roles\.0: role "admin" is not defined/,
    );
    expect(() => parseTokenFile('tokens:\n  - { sha256: "plain-secret", principal: bob }\n', 'f')).not.toThrow(/plain-secret/);
    expect(() => parseTokenFile('roles: { r: { changes: [fly] } }', 'f')).toThrow(/roles\.r\.changes\.0/);
  });
});

describe('identity assertions', () => {
  const request = { id: 'c-1', author: 'alice', reason: 'r', targets: ['n1'], patch: { routes: { upsert: [] } } };
  const now = Date.parse('2026-05-01T10:00:00Z');

  test('a signed assertion verifies; key order does not matter; the key file is 0600', () => {
    const keyFile = join(dir, 'identity.key');
    expect(createIdentityKeyFile(keyFile)).toBe(true);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const key = loadIdentityKey(keyFile);
    const assertion = signIdentity(key, { principal: 'alice', roles: ['admin'] }, 'c-1', request, now);
    const reordered = JSON.parse(canonicalJson(request)) as unknown;
    expect(verifyIdentityAssertion({ api: key, controller: undefined }, assertion, reordered, now + 1000)).toEqual({ ok: true, claims: expect.objectContaining({ principal: 'alice', roles: ['admin'], changeId: 'c-1' }) });
  });

  test('each alteration is refused with its reason', () => {
    const key = Buffer.alloc(32, 1);
    const assertion = signIdentity(key, { principal: 'alice', roles: ['admin'] }, 'c-1', request, now);
    const check = (a: unknown, r: unknown = request, at = now) => verifyIdentityAssertion({ api: key, controller: undefined }, a, r, at);
    expect(check({ ...assertion, principal: 'mallory' })).toMatchObject({ ok: false, why: expect.stringContaining('signature does not match') });
    expect(check({ ...assertion, roles: ['admin', 'root'] })).toMatchObject({ ok: false, why: expect.stringContaining('signature does not match') });
    expect(verifyIdentityAssertion({ api: Buffer.alloc(32, 2), controller: undefined }, assertion, request, now)).toMatchObject({ ok: false, why: expect.stringContaining('signature does not match') });
    expect(check(assertion, { ...request, targets: ['n2'] })).toMatchObject({ ok: false, why: expect.stringContaining('different request') });
    expect(check(assertion, { ...request, id: 'c-2' })).toMatchObject({ ok: false, why: expect.stringContaining('for change "c-1"') });
    expect(check(assertion, request, now + 10 * 60_000)).toMatchObject({ ok: false, why: expect.stringContaining('away from the workflow\'s start') });
    expect(check({ principal: 'alice' })).toMatchObject({ ok: false, why: expect.stringContaining('malformed') });
    const forAlice = signIdentity(key, { principal: 'alice', roles: [] }, 'c-1', { ...request, author: 'bob' }, now);
    expect(check(forAlice, { ...request, author: 'bob' })).toMatchObject({ ok: false, why: expect.stringContaining('names "alice" but the request\'s author is "bob"') });
  });

  describe('the controllers\' key: fos1-controller only, and only by that key', () => {
    const apiKey = Buffer.alloc(32, 1);
    const controllerKey = Buffer.alloc(32, 3);
    const keys = { api: apiKey, controller: controllerKey };
    const byController = { ...request, author: 'fos1-controller', reason: 'NetworkInterface routers/lan generation 2' };

    test('an assertion signed with the controllers\' key verifies as fos1-controller with no roles', () => {
      const assertion = signControllerIdentity(controllerKey, 'c-1', byController, now);
      expect(assertion).toMatchObject({ kid: 'fos1-controller', principal: 'fos1-controller', roles: [] });
      expect(verifyIdentityAssertion(keys, assertion, byController, now)).toEqual({ ok: true, claims: expect.objectContaining({ principal: 'fos1-controller', roles: [], kid: 'fos1-controller' }) });
      // The object it names is in the signed request: another reason is another request.
      expect(verifyIdentityAssertion(keys, assertion, { ...byController, reason: 'NetworkInterface routers/other generation 2' }, now)).toMatchObject({ ok: false, why: expect.stringContaining('different request') });
    });

    test('the controllers\' key cannot vouch for anyone else, or for roles', () => {
      const asAlice = signIdentity(controllerKey, { principal: 'alice', roles: [] }, 'c-1', request, now, 'fos1-controller');
      expect(verifyIdentityAssertion(keys, asAlice, request, now)).toMatchObject({ ok: false, why: expect.stringContaining('vouches for "fos1-controller" with no roles only, not for "alice"') });
      const withRoles = signIdentity(controllerKey, { principal: 'fos1-controller', roles: ['emergency'] }, 'c-1', byController, now, 'fos1-controller');
      expect(verifyIdentityAssertion(keys, withRoles, byController, now)).toMatchObject({ ok: false, why: expect.stringContaining('with roles emergency') });
    });

    test('the API\'s key cannot vouch for fos1-controller; a wrong key, a swapped kid or an unknown kid is refused', () => {
      const apiAsController = signIdentity(apiKey, { principal: 'fos1-controller', roles: [] }, 'c-1', byController, now);
      expect(verifyIdentityAssertion(keys, apiAsController, byController, now)).toMatchObject({ ok: false, why: expect.stringContaining('vouched for by the controllers\' key only') });
      const wrongKey = signControllerIdentity(Buffer.alloc(32, 9), 'c-1', byController, now);
      expect(verifyIdentityAssertion(keys, wrongKey, byController, now)).toMatchObject({ ok: false, why: expect.stringContaining('signature does not match (not signed with this worker\'s key of the controllers') });
      const controllerSigned = signControllerIdentity(controllerKey, 'c-1', byController, now);
      const { kid: _kid, ...withoutKid } = controllerSigned;
      expect(verifyIdentityAssertion(keys, withoutKid, byController, now)).toMatchObject({ ok: false, why: expect.stringContaining('signature does not match') });
      expect(verifyIdentityAssertion(keys, { ...controllerSigned, kid: 'other' }, byController, now)).toMatchObject({ ok: false, why: expect.stringContaining('unknown key id "other"') });
    });

    test('a worker without the controllers\' key cannot verify their assertion (unverifiable, not refused)', () => {
      const assertion = signControllerIdentity(controllerKey, 'c-1', byController, now);
      expect(verifyIdentityAssertion({ api: apiKey, controller: undefined }, assertion, byController, now)).toEqual({ ok: false, unverifiable: true, why: expect.stringContaining('FOS1_CONTROLLER_IDENTITY_KEY_FILE') });
    });
  });
});

describe('HTTP guard on a real server', () => {
  const auth = new TokenFileAuthenticator({ tokens: [{ sha256: hashToken('t'), principal: 'suricata', roles: ['ingest'] }], roles: DEFAULT_ROLES });
  /** A raw request (fetch cannot set Host). */
  const raw = (port: number, headers: Record<string, string>, body = '') =>
    new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/eve', headers }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(body);
    });

  test('Host must be an allowed name on the server\'s port (DNS rebinding)', async () => {
    const server: Server = await listenNdjsonHttp(0, () => Promise.resolve({ skipped: true }), { security: { authenticator: auth }, logger: pino({ level: 'silent' }) });
    try {
      const { port } = server.address() as AddressInfo;
      const h = { authorization: 'Bearer t', 'content-type': 'application/x-ndjson' };
      expect(await raw(port, { ...h, host: `localhost:${port}` })).toBe(200);
      expect(await raw(port, { ...h, host: `[::1]:${port}` })).toBe(200);
      expect(await raw(port, { ...h, host: `evil.example:${port}` })).toBe(403);
      expect(await raw(port, { ...h, host: 'localhost:1' })).toBe(403);
    } finally {
      await new Promise((r) => server.close(r));
    }
    const named: Server = await listenNdjsonHttp(0, () => Promise.resolve({ skipped: true }), { security: { authenticator: auth, allowedHosts: ['fos1.example:443'] }, logger: pino({ level: 'silent' }) });
    try {
      const { port } = named.address() as AddressInfo;
      const h = { authorization: 'Bearer t', 'content-type': 'application/x-ndjson' };
      expect(await raw(port, { ...h, host: 'fos1.example:443', origin: 'https://fos1.example' })).toBe(200);
      expect(await raw(port, { ...h, host: `localhost:${port}` })).toBe(403);
    } finally {
      await new Promise((r) => named.close(r));
    }
  });

  test('requests above the concurrency cap are answered 503 while the others run', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    const server: Server = await listenNdjsonHttp(
      0,
      async () => {
        started++;
        await gate;
        return { ok: true, decision: null };
      },
      { security: { authenticator: auth, maxConcurrentRequests: 1 }, logger: pino({ level: 'silent' }) },
    );
    try {
      const { port } = server.address() as AddressInfo;
      const h = { authorization: 'Bearer t', 'content-type': 'application/x-ndjson', host: `127.0.0.1:${port}` };
      const first = raw(port, h, '{}\n');
      for (let i = 0; i < 200 && started === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(started).toBe(1);
      expect(await raw(port, h, '{}\n')).toBe(503);
      release();
      expect(await first).toBe(200);
      expect(await raw(port, h, '{}\n')).toBe(200);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
