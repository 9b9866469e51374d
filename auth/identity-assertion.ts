/**
 * Signing and checking identity assertions (model/identity.ts) with HMAC-SHA256.
 *
 * The key is a file of 32 random bytes (base64) that the API and the cluster worker both
 * read; `npm start` creates it on first start. Whoever holds it can vouch for any
 * principal, so it is kept like a password (mode 0600, a Secret in a cluster).
 *
 * The CRD controllers have a key of their own (same format, FOS1_CONTROLLER_IDENTITY_KEY_FILE,
 * shared with the cluster worker only): their assertions carry `kid: "fos1-controller"` and
 * are accepted for the principal `fos1-controller` with no roles, nothing else. So the
 * controller process cannot vouch for an operator, and the API cannot vouch for the
 * controller (the principal is reserved to the controllers' key).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  canonicalJson,
  CONTROLLER_KEY_ID,
  CONTROLLER_PRINCIPAL,
  IDENTITY_ASSERTION_MAX_SKEW_MS,
  IDENTITY_ASSERTION_VERSION,
  identityAssertionSchema,
  type IdentityAssertion,
  type IdentityClaims,
} from '../model/identity';

const KEY_BYTES = 32;

/** Reads a key file written by {@link createIdentityKeyFile}; the error names the file and the rule, never its content. */
export function loadIdentityKey(path: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`identity key file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== KEY_BYTES) throw new Error(`identity key file ${path} must hold ${KEY_BYTES} bytes as base64`);
  return key;
}

/** Creates a key file (mode 0600) unless one exists; returns whether it was created. */
export function createIdentityKeyFile(path: string): boolean {
  if (existsSync(path)) return false;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${randomBytes(KEY_BYTES).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  return true;
}

/** `sha256:<hex>` of a request's canonical JSON. */
export function requestDigest(request: unknown): string {
  return `sha256:${createHash('sha256').update(canonicalJson(request)).digest('hex')}`;
}

function mac(key: Buffer, claims: IdentityClaims): string {
  return `hmac-sha256:${createHmac('sha256', key).update(canonicalJson(claims)).digest('base64url')}`;
}

/**
 * Signs an assertion that `principal` (with `roles`) asked for `request` (change `changeId`).
 * `kid` names the signing key when it is not the API's ({@link signControllerIdentity}).
 */
export function signIdentity(key: Buffer, subject: { principal: string; roles: string[] }, changeId: string, request: unknown, now = Date.now(), kid?: string): IdentityAssertion {
  const claims: IdentityClaims = {
    v: IDENTITY_ASSERTION_VERSION,
    ...(kid !== undefined ? { kid } : {}),
    principal: subject.principal,
    roles: [...subject.roles],
    changeId,
    requestDigest: requestDigest(request),
    issuedAt: new Date(now).toISOString(),
  };
  return { ...claims, signature: mac(key, claims) };
}

/**
 * Signs the controllers' assertion for a change they start: principal
 * {@link CONTROLLER_PRINCIPAL}, no roles, key id {@link CONTROLLER_KEY_ID}. The object that
 * caused the change is named in the request (its `reason` and change id), which the
 * assertion's digest covers.
 */
export function signControllerIdentity(key: Buffer, changeId: string, request: unknown, now = Date.now()): IdentityAssertion {
  return signIdentity(key, { principal: CONTROLLER_PRINCIPAL, roles: [] }, changeId, request, now, CONTROLLER_KEY_ID);
}

/** The keys a verifier (the cluster worker) holds, by signer; a signer without one cannot be verified here. */
export interface IdentityVerificationKeys {
  /** The API's key (FOS1_IDENTITY_KEY_FILE): vouches for any principal but {@link CONTROLLER_PRINCIPAL}. */
  api: Buffer | undefined;
  /** The controllers' key (FOS1_CONTROLLER_IDENTITY_KEY_FILE): vouches for {@link CONTROLLER_PRINCIPAL} only, with no roles. */
  controller: Buffer | undefined;
}

/**
 * Result of {@link verifyIdentityAssertion}. `unverifiable`: well-formed, but signed with a
 * key this verifier does not hold (the caller records the actor self-asserted, as with no
 * assertion); any other failure means the assertion does not hold.
 */
export type AssertionCheck = { ok: true; claims: IdentityClaims } | { ok: false; why: string; unverifiable?: true };

/**
 * Checks an assertion against the request it claims to cover: the shape, the signature
 * (constant-time) under the key its `kid` names, what that key may vouch for, the change id,
 * the request digest, the author, and the issue time relative to `startedAt` (the
 * workflow's start).
 */
export function verifyIdentityAssertion(keys: IdentityVerificationKeys, assertion: unknown, request: unknown, startedAt: number): AssertionCheck {
  const parsed = identityAssertionSchema.safeParse(assertion);
  if (!parsed.success) return { ok: false, why: `the identity assertion is malformed (${parsed.error.issues.map((i) => `${i.path.join('.') || '(assertion)'}: ${i.message}`).join('; ')})` };
  const { signature, ...claims } = parsed.data;
  const signer = claims.kid === undefined ? { name: 'the API', key: keys.api, variable: 'FOS1_IDENTITY_KEY_FILE' } : claims.kid === CONTROLLER_KEY_ID ? { name: 'the controllers', key: keys.controller, variable: 'FOS1_CONTROLLER_IDENTITY_KEY_FILE' } : undefined;
  if (!signer) return { ok: false, why: `the identity assertion names an unknown key id "${claims.kid}" (known: none for the API's key, "${CONTROLLER_KEY_ID}")` };
  if (!signer.key) return { ok: false, unverifiable: true, why: `this worker has no key of ${signer.name} (${signer.variable}) to check the assertion with` };
  const expected = Buffer.from(mac(signer.key, claims));
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return { ok: false, why: `the identity assertion's signature does not match (not signed with this worker's key of ${signer.name}, or altered)` };
  if (claims.kid === CONTROLLER_KEY_ID && (claims.principal !== CONTROLLER_PRINCIPAL || claims.roles.length > 0)) {
    return { ok: false, why: `the controllers' key vouches for "${CONTROLLER_PRINCIPAL}" with no roles only, not for "${claims.principal}"${claims.roles.length > 0 ? ` with roles ${claims.roles.join(', ')}` : ''}` };
  }
  if (claims.kid === undefined && claims.principal === CONTROLLER_PRINCIPAL) return { ok: false, why: `"${CONTROLLER_PRINCIPAL}" is vouched for by the controllers' key only, not the API's` };
  const req = (typeof request === 'object' && request !== null ? request : {}) as { id?: unknown; author?: unknown };
  if (claims.changeId !== req.id) return { ok: false, why: `the identity assertion is for change "${claims.changeId}", not this one` };
  if (claims.requestDigest !== requestDigest(request)) return { ok: false, why: 'the identity assertion was signed for a different request (the request was altered after signing)' };
  if (claims.principal !== req.author) return { ok: false, why: `the identity assertion names "${claims.principal}" but the request's author is "${String(req.author)}"` };
  const skew = Math.abs(Date.parse(claims.issuedAt) - startedAt);
  if (skew > IDENTITY_ASSERTION_MAX_SKEW_MS) return { ok: false, why: `the identity assertion was issued ${Math.round(skew / 1000)}s away from the workflow's start (at most ${IDENTITY_ASSERTION_MAX_SKEW_MS / 1000}s)` };
  return { ok: true, claims };
}
