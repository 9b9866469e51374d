/**
 * The entry points' authentication settings: defaults, and a bad value named with its rule.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseApiConfig } from '../../api/config';
import { authEnvSchema, createAuthenticator, httpSecurityFrom } from '../../auth/config';
import { parseIngestConfig } from '../../ingest/config';
import { parseWorkerConfig } from '../../workers/config';
import { parseControllerConfig } from '../../controllers/main';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fos1-auth-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('defaults: token file, loopback hosts, the documented limits', () => {
  const env = authEnvSchema.parse({});
  expect(env).toMatchObject({ FOS1_AUTH: 'token-file', FOS1_AUTH_NAMESPACE: 'fos1-system', FOS1_MAX_CONCURRENT_REQUESTS: 64, FOS1_REQUEST_TIMEOUT_MS: 60_000, FOS1_HEADERS_TIMEOUT_MS: 10_000 });
  expect(parseIngestConfig({ FOS1_ENFORCE_NODES: 'n1' })).toMatchObject({ maxNdjsonLines: 10_000, auth: { FOS1_AUTH: 'token-file' } });
  const tokenFile = join(dir, 'tokens.yaml');
  writeFileSync(tokenFile, 'tokens: []\n');
  const security = httpSecurityFrom(authEnvSchema.parse({ FOS1_TOKEN_FILE: tokenFile, FOS1_ALLOWED_HOSTS: ' fos1.example:443 , router-1.lan ' }), createAuthenticator(authEnvSchema.parse({ FOS1_TOKEN_FILE: tokenFile })));
  expect(security.allowedHosts).toEqual(['fos1.example:443', 'router-1.lan']);
  expect(security.authenticator.kind).toBe('token-file');
});

test('a bad setting names the variable and the rule', () => {
  expect(() => parseApiConfig({ FOS1_AUTH: 'none' })).toThrow(/invalid API configuration:\n {2}FOS1_AUTH: /);
  expect(() => parseIngestConfig({ FOS1_ENFORCE_NODES: 'n1', FOS1_AUTH_NAMESPACE: 'Not_A_Namespace' })).toThrow(/FOS1_AUTH_NAMESPACE must be a namespace name/);
  expect(() => createAuthenticator(authEnvSchema.parse({ FOS1_TOKEN_FILE: join(dir, 'missing.json') }))).toThrow(/token file .*missing\.json cannot be read: ENOENT/);
  const shortKey = join(dir, 'identity.key');
  writeFileSync(shortKey, 'c2hvcnQ=\n');
  expect(() => parseWorkerConfig({ FOS1_IDENTITY_KEY_FILE: shortKey })).toThrow(/FOS1_IDENTITY_KEY_FILE: identity key file .* must hold 32 bytes as base64/);
  expect(() => parseApiConfig({ FOS1_IDENTITY_KEY_FILE: shortKey })).toThrow(/FOS1_IDENTITY_KEY_FILE: identity key file .* must hold 32 bytes/);
});

test('the controllers\' identity key: read by the controller and the cluster worker, never the API\'s key too', () => {
  const apiKey = join(dir, 'identity.key');
  const controllerKey = join(dir, 'controller-identity.key');
  writeFileSync(apiKey, `${Buffer.alloc(32, 1).toString('base64')}\n`);
  writeFileSync(controllerKey, `${Buffer.alloc(32, 2).toString('base64')}\n`);
  const worker = parseWorkerConfig({ FOS1_CLUSTER_WORKER: 'true', FOS1_NODE_WORKER: 'false', FOS1_IDENTITY_KEY_FILE: apiKey, FOS1_CONTROLLER_IDENTITY_KEY_FILE: controllerKey });
  expect(worker.controllerIdentityKey).toEqual(Buffer.alloc(32, 2));
  expect(worker.identityKey).toEqual(Buffer.alloc(32, 1));
  expect(parseControllerConfig({ FOS1_CONTROLLER_IDENTITY_KEY_FILE: controllerKey }).identityKey).toEqual(Buffer.alloc(32, 2));
  expect(parseControllerConfig({}).identityKey).toBeUndefined();
  // One key for both would let the API vouch for the controller (and the controller for anyone).
  expect(() => parseWorkerConfig({ FOS1_CLUSTER_WORKER: 'true', FOS1_NODE_WORKER: 'false', FOS1_IDENTITY_KEY_FILE: apiKey, FOS1_CONTROLLER_IDENTITY_KEY_FILE: apiKey })).toThrow(/FOS1_CONTROLLER_IDENTITY_KEY_FILE: must be another key than FOS1_IDENTITY_KEY_FILE/);
  expect(() => parseControllerConfig({ FOS1_CONTROLLER_IDENTITY_KEY_FILE: join(dir, 'missing.key') })).toThrow(/invalid controller configuration:\n {2}FOS1_CONTROLLER_IDENTITY_KEY_FILE: identity key file .*missing\.key cannot be read: ENOENT/);
});
