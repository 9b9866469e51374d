/**
 * The `verifyIdentity` local activity: checks the identity assertion a change workflow was
 * started with (see model/identity.ts). It runs on the cluster worker, which holds the
 * identity key; its result is recorded in the workflow history, so a replay sees the same
 * verdict.
 */
import { verifyIdentityAssertion } from '../auth/identity-assertion';
import { failure, FailureType } from '../model/failures';
import type { VerifiedIdentity, VerifyIdentityInput } from '../model/identity';

/** What the identity activity needs: the shared key, or none (nothing can then be verified). */
export interface IdentityActivityDeps {
  identityKey: Buffer | undefined;
}

/** Creates the identity activities. */
export function createIdentityActivities(deps: IdentityActivityDeps) {
  return {
    /**
     * Verified when a valid assertion covers the request; self-asserted when there is none
     * (or this worker has no key to check it with); a non-retryable
     * `InvalidIdentityAssertion` failure when one is given and does not hold.
     */
    async verifyIdentity(input: VerifyIdentityInput): Promise<VerifiedIdentity> {
      const author = (input.request as { author?: unknown } | null)?.author;
      const principal = typeof author === 'string' ? author : 'unknown';
      if (input.assertion === undefined || input.assertion === null) return { verified: false, principal, why: 'no identity assertion (started outside the API)' };
      if (!deps.identityKey) return { verified: false, principal, why: 'this worker has no identity key (FOS1_IDENTITY_KEY_FILE) to check the assertion with' };
      const check = verifyIdentityAssertion(deps.identityKey, input.assertion, input.request, input.workflowStartedAt);
      if (!check.ok) throw failure(FailureType.InvalidIdentityAssertion, check.why);
      return { verified: true, principal: check.claims.principal, roles: check.claims.roles };
    },
  };
}

/** The identity activities' interface, for `proxyLocalActivities`. */
export type IdentityActivities = ReturnType<typeof createIdentityActivities>;
