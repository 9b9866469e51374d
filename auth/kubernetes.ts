/**
 * The Kubernetes authenticator, as kube-rbac-proxy does it: a bearer token is checked with a
 * TokenReview, and each permission with a SubjectAccessReview on fos1's own resources
 * (`changes.fos1.io` verbs submit/approve/confirm/abort/lift/view, `alerts.fos1.io` verb
 * ingest) in fos1's namespace — so a RoleBinding there or a ClusterRoleBinding grants it.
 *
 * Results are cached briefly (positive and negative alike, keyed by the token's hash, never
 * the token), so a burst of requests costs the apiserver one review each. The apiserver
 * being unreachable is an error (the request fails with 500), never an allow.
 */
import { createHash } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import { toKubeApiError } from '../k8s/client';
import { FOS1_API_GROUP, type Authenticator, type Permission, type Principal } from './authenticator';

/** Options of {@link KubernetesAuthenticator}. */
export interface KubernetesAuthOptions {
  /** A kubeconfig whose identity may create tokenreviews and subjectaccessreviews (deploy/api-rbac.yaml). */
  kubeConfig: k8s.KubeConfig;
  /** Namespace the SubjectAccessReviews name (fos1's own, e.g. fos1-system). */
  namespace: string;
  /** Audiences a token must be issued for; empty = the apiserver's own. */
  audiences?: string[];
  /** How long a review's answer is reused (ms). */
  cacheTtlMs: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** A small TTL cache (bounded: the oldest entries go first). */
class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
    private readonly max = 10_000,
  ) {}
  get(key: string): V | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return hit.value;
  }
  set(key: string, value: V): void {
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { value, expires: this.now() + this.ttlMs });
  }
}

/** Kubernetes backend of {@link Authenticator}. */
export class KubernetesAuthenticator implements Authenticator {
  readonly kind = 'kubernetes';
  private readonly authn: k8s.AuthenticationV1Api;
  private readonly authz: k8s.AuthorizationV1Api;
  private readonly tokens: TtlCache<Principal | null>;
  private readonly decisions: TtlCache<boolean>;
  /** Reviews sent (tests check the cache with it). */
  readonly reviews = { token: 0, access: 0 };

  constructor(private readonly options: KubernetesAuthOptions) {
    this.authn = options.kubeConfig.makeApiClient(k8s.AuthenticationV1Api);
    this.authz = options.kubeConfig.makeApiClient(k8s.AuthorizationV1Api);
    const now = options.now ?? Date.now;
    this.tokens = new TtlCache(options.cacheTtlMs, now);
    this.decisions = new TtlCache(options.cacheTtlMs, now);
  }

  async authenticate(token: string): Promise<Principal | undefined> {
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.tokens.get(key);
    if (cached !== undefined) return cached ?? undefined;
    this.reviews.token++;
    let review: k8s.V1TokenReview;
    try {
      review = await this.authn.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(this.options.audiences?.length ? { audiences: this.options.audiences } : {}) } },
      });
    } catch (err) {
      throw toKubeApiError('create TokenReview', err);
    }
    const user = review.status?.authenticated ? review.status.user : undefined;
    const principal: Principal | null = user?.username
      ? { name: user.username, roles: user.groups ?? [], ...(user.uid ? { uid: user.uid } : {}), ...(user.extra ? { extra: user.extra } : {}) }
      : null;
    this.tokens.set(key, principal);
    return principal ?? undefined;
  }

  async authorize(principal: Principal, permission: Permission): Promise<boolean> {
    const key = JSON.stringify([principal.name, principal.uid, principal.roles, principal.extra, permission.resource, permission.verb]);
    const cached = this.decisions.get(key);
    if (cached !== undefined) return cached;
    this.reviews.access++;
    let review: k8s.V1SubjectAccessReview;
    try {
      review = await this.authz.createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: principal.name,
            groups: principal.roles,
            ...(principal.uid ? { uid: principal.uid } : {}),
            ...(principal.extra ? { extra: principal.extra } : {}),
            resourceAttributes: { group: FOS1_API_GROUP, resource: permission.resource, verb: permission.verb, namespace: this.options.namespace },
          },
        },
      });
    } catch (err) {
      throw toKubeApiError('create SubjectAccessReview', err);
    }
    const allowed = review.status?.allowed === true && review.status.denied !== true;
    this.decisions.set(key, allowed);
    return allowed;
  }
}
