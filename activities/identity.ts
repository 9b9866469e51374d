/**
 * The `verifyIdentity` local activity: checks the identity assertion a change workflow was
 * started with (see model/identity.ts). It runs on the cluster worker, which holds the
 * identity keys (the API's, and the controllers' own); its result is recorded in the
 * workflow history, so a replay sees the same verdict.
 */
import { verifyIdentityAssertion } from '../auth/identity-assertion';
import { failure, FailureType } from '../model/failures';
import type { VerifiedIdentity, VerifyIdentityInput } from '../model/identity';

/** What the identity activity needs: the API's key and the controllers' key; without one, that signer cannot be verified. */
export interface IdentityActivityDeps {
  /** The API's key (FOS1_IDENTITY_KEY_FILE). */
  identityKey: Buffer | undefined;
  /** The controllers' key (FOS1_CONTROLLER_IDENTITY_KEY_FILE). */
  controllerIdentityKey?: Buffer | undefined;
}

/** Creates the identity activities. */
export function createIdentityActivities(deps: IdentityActivityDeps) {
  return {
    /**
     * Verified when a valid assertion covers the request; self-asserted when there is none
     * (or this worker has no key of its signer to check it with); a non-retryable
     * `InvalidIdentityAssertion` failure when one is given and does not hold.
     */
    async verifyIdentity(input: VerifyIdentityInput): Promise<VerifiedIdentity> {
      const author = (input.request as { author?: unknown } | null)?.author;
      const principal = typeof author === 'string' ? author : 'unknown';
      if (input.assertion === undefined || input.assertion === null) return { verified: false, principal, why: 'no identity assertion (started outside the API and the controllers)' };
      if (!deps.identityKey && !deps.controllerIdentityKey) return { verified: false, principal, why: 'this worker has no identity key (FOS1_IDENTITY_KEY_FILE, FOS1_CONTROLLER_IDENTITY_KEY_FILE) to check the assertion with' };
      const check = verifyIdentityAssertion({ api: deps.identityKey, controller: deps.controllerIdentityKey }, input.assertion, input.request, input.workflowStartedAt);
      if (!check.ok && check.unverifiable) return { verified: false, principal, why: check.why };
      if (!check.ok) throw failure(FailureType.InvalidIdentityAssertion, check.why);
      return { verified: true, principal: check.claims.principal, roles: check.claims.roles };
    },
  };
}

/** The identity activities' interface, for `proxyLocalActivities`. */
export type IdentityActivities = ReturnType<typeof createIdentityActivities>;
