/**
 * API configuration, parsed once at the entry point (api/main.ts) from the environment.
 */
import { z } from 'zod';
import { authEnvSchema, type AuthEnv } from '../auth/config';
import { loadIdentityKey } from '../auth/identity-assertion';

const envSchema = z
  .object({
    TEMPORAL_ADDRESS: z.string().default('localhost:7233'),
    TEMPORAL_NAMESPACE: z.string().default('default'),
    FOS1_API_PORT: z.coerce.number().int().min(1).max(65535).default(8080),
    /** Address to bind; loopback unless the API is meant to be reached from elsewhere (then set FOS1_ALLOWED_HOSTS). */
    FOS1_API_HOST: z.string().min(1).default('127.0.0.1'),
    /** Key to sign identity assertions with, shared with the cluster worker; unset = changes recorded self-asserted. */
    FOS1_IDENTITY_KEY_FILE: z.string().min(1).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  })
  .extend(authEnvSchema.shape);

/** Parsed API configuration. */
export interface ApiConfig {
  temporalAddress: string;
  temporalNamespace: string;
  port: number;
  host: string;
  auth: AuthEnv;
  identityKey: Buffer | undefined;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseApiConfig(env: NodeJS.ProcessEnv): ApiConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) throw new Error(`invalid API configuration:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  const e = parsed.data;
  let identityKey: Buffer | undefined;
  try {
    identityKey = e.FOS1_IDENTITY_KEY_FILE ? loadIdentityKey(e.FOS1_IDENTITY_KEY_FILE) : undefined;
  } catch (err) {
    throw new Error(`invalid API configuration:\n  FOS1_IDENTITY_KEY_FILE: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    temporalAddress: e.TEMPORAL_ADDRESS,
    temporalNamespace: e.TEMPORAL_NAMESPACE,
    port: e.FOS1_API_PORT,
    host: e.FOS1_API_HOST,
    auth: authEnvSchema.parse(e),
    identityKey,
    logLevel: e.LOG_LEVEL,
  };
}
