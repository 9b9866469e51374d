/**
 * Who may call fos1: one interface, two backends.
 *
 * - token file (the embedded default, auth/token-file.ts): sha256-hashed bearer tokens →
 *   principal + roles, roles → verbs;
 * - Kubernetes (auth/kubernetes.ts): TokenReview for the token, SubjectAccessReview for each
 *   permission on fos1's own resources in API group `fos1.io`, the way kube-rbac-proxy does.
 *
 * Every HTTP entry point (the API, the ingest NDJSON endpoint) goes through
 * auth/http-guard.ts, which uses one of these.
 */

/** fos1's API group for RBAC: `changes.fos1.io`, `alerts.fos1.io`. */
export const FOS1_API_GROUP = 'fos1.io';

/** What a caller may do, per resource. */
export const PERMISSIONS = {
  /**
   * `pause` covers pause, resume and extend-bake of a staged rollout (it only changes when
   * things happen); `promote` skips bakes and gates, so it is a verb of its own.
   */
  changes: ['submit', 'approve', 'confirm', 'abort', 'pause', 'promote', 'lift', 'view'],
  alerts: ['ingest'],
} as const;

/** A resource fos1 authorizes on. */
export type Resource = keyof typeof PERMISSIONS;

/** One permission: a verb on a resource (`submit` on `changes`). */
export type Permission = { [R in Resource]: { resource: R; verb: (typeof PERMISSIONS)[R][number] } }[Resource];

/** An authenticated caller. */
export interface Principal {
  /** User name: the token file's principal, or the Kubernetes user (`system:serviceaccount:ns:name`). */
  name: string;
  /** Token-file roles, or Kubernetes groups. */
  roles: string[];
  /** Kubernetes only: passed back in SubjectAccessReviews. */
  uid?: string;
  extra?: Record<string, string[]>;
}

/** Checks bearer tokens and permissions. Implementations never log or return the token. */
export interface Authenticator {
  /** Which backend (for logs). */
  readonly kind: 'token-file' | 'kubernetes';
  /** The principal a token belongs to, or undefined when it is not valid. */
  authenticate(token: string): Promise<Principal | undefined>;
  /** Whether the principal has the permission. */
  authorize(principal: Principal, permission: Permission): Promise<boolean>;
}

/** `verb resource` as logs and error messages write it: `submit changes.fos1.io`. */
export function describePermission(p: Permission): string {
  return `${p.verb} ${p.resource}.${FOS1_API_GROUP}`;
}
