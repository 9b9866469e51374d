/**
 * Who asked for a change, as the API vouches for it.
 *
 * The HTTP API authenticates the caller, sets the change's `author` from the principal and
 * hands the change workflow an *identity assertion*: the principal, its roles, the change id
 * and a digest of the exact request, signed (HMAC-SHA256) with a key the API and the cluster
 * worker share. The workflow verifies it in a local activity (activities/identity.ts) and
 * records the change's actor as verified (`actorVerified: true` in its audit records). A
 * change started any other way (the Temporal Web UI, `temporal workflow start`, another
 * workflow) carries no assertion and is recorded self-asserted (`actorVerified: false`): it
 * still runs, and the audit says whose word it is.
 *
 * fos1's CRD controllers sign their own changes with a key of their own (key id
 * {@link CONTROLLER_KEY_ID}, auth/identity-assertion.ts): that key vouches for the principal
 * {@link CONTROLLER_PRINCIPAL} only, with no roles, so the controller cannot speak for anyone
 * else, and the API's key cannot speak for the controller.
 *
 * Pure data and schemas only: the workflow sandbox imports this file.
 */
import { z } from 'zod';

/** Version of the assertion format; bumped when the signed fields change. */
export const IDENTITY_ASSERTION_VERSION = 1;

/** An assertion older or newer than this, relative to the workflow's start, is refused. */
export const IDENTITY_ASSERTION_MAX_SKEW_MS = 5 * 60_000;

/** The principal fos1's CRD controllers act as (also their field manager). */
export const CONTROLLER_PRINCIPAL = 'fos1-controller';

/** Key id of the controllers' identity key (the `kid` claim of their assertions). */
export const CONTROLLER_KEY_ID = 'fos1-controller';

/** The signed part of an identity assertion. */
export const identityClaimsSchema = z
  .object({
    v: z.literal(IDENTITY_ASSERTION_VERSION),
    /**
     * Which key signed it: absent for the API's key (which may vouch for any principal but the
     * controllers'), {@link CONTROLLER_KEY_ID} for the controllers' (which vouches for
     * {@link CONTROLLER_PRINCIPAL} only). Signed, so it cannot be swapped.
     */
    kid: z.string().regex(/^[a-z0-9][-a-z0-9]{0,62}$/).optional(),
    /** The authenticated principal; the change's `author` must equal it. */
    principal: z.string().min(1).max(256),
    /** The principal's roles (token file) or groups (Kubernetes). */
    roles: z.array(z.string().max(256)).max(100),
    changeId: z.string().min(1).max(63),
    /** `sha256:<hex>` of the canonical JSON of the change request as the API started it. */
    requestDigest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
    /** When the API signed it (ISO 8601). */
    issuedAt: z.string().datetime(),
  })
  .strict();

/** An identity assertion: the claims and their signature (`hmac-sha256:<base64url>`). */
export const identityAssertionSchema = identityClaimsSchema.extend({ signature: z.string().regex(/^hmac-sha256:[A-Za-z0-9_-]{43}$/) }).strict();

export type IdentityClaims = z.output<typeof identityClaimsSchema>;
export type IdentityAssertion = z.output<typeof identityAssertionSchema>;

/** Input of the `verifyIdentity` local activity. */
export interface VerifyIdentityInput {
  /** The change request exactly as the workflow received it. */
  request: unknown;
  /** The workflow's second argument, if any (not yet validated). */
  assertion: unknown;
  /** The workflow's start time, ms since epoch: the assertion must be issued near it. */
  workflowStartedAt: number;
}

/** How the actor of a change is known. */
export type VerifiedIdentity =
  | { verified: true; principal: string; roles: string[] }
  | { verified: false; principal: string; why: string };

/**
 * JSON with object keys sorted at every level: the same value always serialises to the same
 * text, whichever order a client or a payload converter wrote the keys in. `undefined`
 * members are left out, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
