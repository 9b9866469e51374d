/**
 * API configuration, parsed once at the entry point (api/main.ts) from the environment.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TLS*` | `localhost:7233`, `default`, off | Temporal, as every fos1 process reaches it (workers/temporal-connection.ts) |
 * | `FOS1_API_PORT` | `8080` | port to listen on |
 * | `FOS1_API_HOST` | `127.0.0.1` | address to bind (`0.0.0.0` in a pod, behind the Service; then set `FOS1_ALLOWED_HOSTS`) |
 * | `FOS1_IDENTITY_KEY_FILE` | unset | key to sign identity assertions with, shared with the cluster worker; unset = changes recorded self-asserted |
 * | `FOS1_AUTH`, `FOS1_TOKEN_FILE`, `FOS1_ALLOWED_HOSTS`, … | see auth/config.ts | who may call the API |
 * | `FOS1_AUDIT_POSTGRES_URL`, `FOS1_AUDIT_DIR`, `FOS1_AUDIT_PUBLIC_KEYS` | see workers/audit.ts | the audit and revision stores, read-only, and the keys that verify checkpoints |
 * | `LOG_LEVEL` | `info` | pino level |
 */
import { z } from 'zod';
import { authEnvSchema, type AuthEnv } from '../auth/config';
import { loadIdentityKey } from '../auth/identity-assertion';
import { auditConfigFrom, auditEnvSchema, type AuditConfig } from '../workers/audit';
import { parseEnvWithTemporal, type TemporalConnectionConfig } from '../workers/temporal-connection';

const envSchema = z
  .object({
    FOS1_API_PORT: z.coerce.number().int().min(1).max(65535, 'FOS1_API_PORT must be a port 1-65535').default(8080),
    FOS1_API_HOST: z.union([z.ipv4(), z.ipv6()], 'FOS1_API_HOST must be an IP address').default('127.0.0.1'),
    FOS1_IDENTITY_KEY_FILE: z.string().min(1).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  })
  .extend(authEnvSchema.shape)
  .extend(auditEnvSchema.shape);

/** Parsed API configuration. */
export interface ApiConfig {
  temporal: TemporalConnectionConfig;
  port: number;
  host: string;
  auth: AuthEnv;
  identityKey: Buffer | undefined;
  audit: AuditConfig;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseApiConfig(env: NodeJS.ProcessEnv): ApiConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('API', envSchema, env);
  let identityKey: Buffer | undefined;
  try {
    identityKey = e.FOS1_IDENTITY_KEY_FILE ? loadIdentityKey(e.FOS1_IDENTITY_KEY_FILE) : undefined;
  } catch (err) {
    throw new Error(`invalid API configuration:\n  FOS1_IDENTITY_KEY_FILE: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { temporal, port: e.FOS1_API_PORT, host: e.FOS1_API_HOST, auth: authEnvSchema.parse(e), identityKey, audit: auditConfigFrom(e), logLevel: e.LOG_LEVEL };
}
