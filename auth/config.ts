/**
 * Authentication settings shared by the entry points that serve HTTP (the API, the ingest
 * worker) and the identity key shared by the API and the cluster worker. Each entry point
 * merges {@link authEnvSchema} into its own environment schema.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { loadKubeConfig } from '../k8s/client';
import { devStateDir } from '../scripts/paths';
import type { Authenticator } from './authenticator';
import type { HttpSecurityOptions } from './http-guard';
import { KubernetesAuthenticator } from './kubernetes';
import { TokenFileAuthenticator } from './token-file';

/** Default token file: `<state dir>/tokens.json` (the one `npm start` creates). */
export function defaultTokenFile(): string {
  return join(devStateDir(), 'tokens.json');
}

/** Default identity key file: `<state dir>/identity.key`. */
export function defaultIdentityKeyFile(): string {
  return join(devStateDir(), 'identity.key');
}

/** Environment variables of HTTP entry points. */
export const authEnvSchema = z.object({
  /** `token-file` (embedded default) or `kubernetes` (TokenReview + SubjectAccessReview). */
  FOS1_AUTH: z.enum(['token-file', 'kubernetes']).default('token-file'),
  /** Token file (YAML/JSON: sha256 of tokens → principal + roles; docs/security.md). */
  FOS1_TOKEN_FILE: z.string().min(1).optional(),
  /** Kubernetes for FOS1_AUTH=kubernetes: `default` (in-cluster / ~/.kube/config) or a kubeconfig path. */
  FOS1_AUTH_KUBECONFIG: z.string().min(1).default('default'),
  /** Namespace the SubjectAccessReviews name: a RoleBinding there (or a ClusterRoleBinding) grants fos1 verbs. */
  FOS1_AUTH_NAMESPACE: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'FOS1_AUTH_NAMESPACE must be a namespace name').default('fos1-system'),
  /** Audiences a TokenReview requires, comma-separated; empty = the apiserver's. */
  FOS1_AUTH_AUDIENCES: z.string().default(''),
  /** How long review results are reused (ms). */
  FOS1_AUTH_CACHE_TTL_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
  /** Host names (name or name:port) allowed in Host and Origin, comma-separated; default loopback names on the server's port. */
  FOS1_ALLOWED_HOSTS: z.string().default(''),
  FOS1_MAX_CONCURRENT_REQUESTS: z.coerce.number().int().min(1).max(10_000).default(64),
  FOS1_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(1000).max(3_600_000).default(60_000),
  FOS1_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(1000).max(600_000).default(10_000),
});

/** Parsed {@link authEnvSchema}. */
export type AuthEnv = z.output<typeof authEnvSchema>;

/** Builds the configured authenticator (reads the token file or the kubeconfig now). */
export function createAuthenticator(env: AuthEnv): Authenticator {
  if (env.FOS1_AUTH === 'kubernetes') {
    return new KubernetesAuthenticator({
      kubeConfig: loadKubeConfig(env.FOS1_AUTH_KUBECONFIG === 'default' ? undefined : env.FOS1_AUTH_KUBECONFIG),
      namespace: env.FOS1_AUTH_NAMESPACE,
      audiences: splitList(env.FOS1_AUTH_AUDIENCES),
      cacheTtlMs: env.FOS1_AUTH_CACHE_TTL_MS,
    });
  }
  return TokenFileAuthenticator.fromFile(env.FOS1_TOKEN_FILE ?? defaultTokenFile());
}

/** The HTTP limits and checks of the parsed environment, with the given authenticator. */
export function httpSecurityFrom(env: AuthEnv, authenticator: Authenticator): HttpSecurityOptions {
  const hosts = splitList(env.FOS1_ALLOWED_HOSTS);
  return {
    authenticator,
    ...(hosts.length ? { allowedHosts: hosts } : {}),
    maxConcurrentRequests: env.FOS1_MAX_CONCURRENT_REQUESTS,
    requestTimeoutMs: env.FOS1_REQUEST_TIMEOUT_MS,
    headersTimeoutMs: env.FOS1_HEADERS_TIMEOUT_MS,
  };
}

function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}
