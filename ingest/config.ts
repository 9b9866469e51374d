/**
 * Ingest worker configuration, parsed once at the entry point from the environment.
 */
import { readFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { authEnvSchema, type AuthEnv } from '../auth/config';
import { guardConfigSchema, type GuardConfig } from '../model/enforcement-guard';
import { parseEnvWithTemporal, type TemporalConnectionConfig } from '../workers/temporal-connection';
import { DEFAULT_SPOOL_MAX_BYTES } from './spool';
import { cidrSchema } from '../model/ip';
import type { LocalNetworksConfig } from './local-networks-source';

const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * gRPC channel arguments of the ingest worker's Temporal client. gRPC's default reconnect
 * back-off grows to 120 s, so after an outage the client could sit out two minutes with
 * the server already back while verdicts wait in the spool; 5 s at most keeps recovery
 * quick. A channel of its own (local subchannel pool), so no other client shares its back-off.
 */
export const INGEST_CHANNEL_ARGS = {
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 5000,
  'grpc.use_local_subchannel_pool': 1,
} as const;

/** The rule set fos1 ships. */
export const DEFAULT_RULES_FILE = join(__dirname, '..', 'rules', 'sets', 'default.json');

/** The TEMPORAL_* variables (address, namespace, TLS) are parsed by workers/temporal-connection. */
const envSchema = z.object({
  /** Rule set (JSON) to evaluate verdicts with. */
  FOS1_RULES_FILE: z.string().default(DEFAULT_RULES_FILE),
  /**
   * Guard configuration (JSON, model/enforcement-guard.ts) for the bridge's early refusals and
   * the rules' `inAllowList`. Never handed to a workflow: the enforcement workflows enforce the
   * cluster worker's own FOS1_GUARD_FILE.
   */
  FOS1_GUARD_FILE: z.string().optional(),
  /** Nodes whose blocklists enforcement writes, comma-separated. */
  FOS1_ENFORCE_NODES: z
    .string()
    .default(hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63))
    .transform((s) => s.split(',').map((n) => n.trim()).filter((n) => n !== ''))
    .pipe(z.array(z.string().regex(NODE_NAME, 'FOS1_ENFORCE_NODES must list node names (DNS-1123 labels)')).min(1, 'FOS1_ENFORCE_NODES must name at least one node')),
  /** EVE file to follow across rotation and truncation. */
  FOS1_EVE_FILE: z.string().optional(),
  /** Where a fresh tail starts; once a read position is saved, it resumes there instead. */
  FOS1_EVE_FROM: z.enum(['start', 'end']).default('end'),
  /** Read-position state file of the tail (default: next to the EVE file, `<file>.fos1-position.json`); `off` keeps none. */
  FOS1_EVE_STATE_FILE: z.string().min(1).optional(),
  /** Unix socket to listen on for Suricata's `unix_stream` EVE output. */
  FOS1_EVE_SOCKET: z.string().optional(),
  /** Port for NDJSON over HTTP (`POST /v1/eve`, on 127.0.0.1, bearer token with `ingest` on alerts.fos1.io); unset = off. */
  FOS1_INGEST_HTTP_PORT: z.coerce.number().int().min(1).max(65535).optional(),
  /** Lines one `POST /v1/eve` may carry (413 above). */
  FOS1_MAX_NDJSON_LINES: z.coerce.number().int().min(1).max(10_000_000).default(10_000),
  /** Interface for a live ndpiReader, run in rounds of FOS1_NDPI_SECONDS. */
  FOS1_NDPI_INTERFACE: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/, 'FOS1_NDPI_INTERFACE must be an interface name').optional(),
  FOS1_NDPI_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  FOS1_NDPI_CONFIG_DIR: z.string().optional(),
  /** Network namespace the live ndpiReader captures in (default: the ingest's own). */
  FOS1_NDPI_NETNS: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'FOS1_NDPI_NETNS must be a network namespace name').optional(),
  /** Prefixes always local for the remote-endpoint rule, comma-separated (besides what the node reports). */
  FOS1_LOCAL_NETWORKS: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((p) => p.trim()).filter((p) => p !== ''))
    .pipe(z.array(cidrSchema)),
  /** Zones whose interfaces face the outside, comma-separated. */
  FOS1_EXTERNAL_ZONES: z
    .string()
    .default('wan')
    .transform((s) => s.split(',').map((p) => p.trim()).filter((p) => p !== '')),
  /** How often the node's local networks are re-read, seconds. */
  FOS1_LOCAL_NETWORKS_REFRESH_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  /**
   * Follow DPIProfiles from a cluster: a kubeconfig path, or `in-cluster` for the pod's
   * service account. Unset: only the rule set file.
   */
  FOS1_DPI_KUBECONFIG: z.string().min(1).optional(),
  /**
   * Folder of the ingest worker's state: the decision spool (verdicts kept while Temporal is
   * unreachable). Default: the EVE file's folder, else `$XDG_STATE_HOME/fos1-ingest`
   * (`~/.local/state/fos1-ingest`). Must be on a persistent volume to survive restarts.
   */
  FOS1_INGEST_STATE_DIR: z.string().min(1).optional(),
  /** Cap of the decision spool in bytes (default 64 MiB ≈ 100,000 verdicts); past it input is refused (tail waits, HTTP 503). */
  FOS1_INGEST_SPOOL_MAX_BYTES: z.coerce.number().int().min(1024).max(2 ** 40).default(DEFAULT_SPOOL_MAX_BYTES),
  /** Repeats of a verdict about one target within this many ms are coalesced. */
  FOS1_COALESCE_MS: z.coerce.number().int().min(0).max(3_600_000).default(5000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
}).extend(authEnvSchema.shape);

/** Parsed ingest configuration. */
export interface IngestConfig {
  /** Address, namespace and TLS/mTLS material (TEMPORAL_* variables). */
  temporal: TemporalConnectionConfig;
  rulesFile: string;
  guard: GuardConfig;
  nodes: string[];
  eveFile?: string;
  eveFrom: 'start' | 'end';
  /** Where the tail keeps its read position (see {@link eveStateFileFor}); absent = not kept. */
  eveStateFile?: string;
  eveSocket?: string;
  httpPort?: number;
  /** Who may POST to the HTTP endpoint, and its limits (auth/config.ts). */
  auth: AuthEnv;
  maxNdjsonLines: number;
  ndpi?: { interface: string; seconds: number; configDir?: string; netns?: string };
  /** How the node's local networks are learnt (the `remote` decision target). */
  localNetworks: LocalNetworksConfig;
  /** Where DPIProfiles are followed from; absent = off. */
  dpiKubeconfig?: string;
  /** Where the decision spool lives (see FOS1_INGEST_STATE_DIR). */
  stateDir: string;
  /** Cap of the decision spool in bytes. */
  spoolMaxBytes: number;
  coalesceMs: number;
  logLevel: string;
}

/** Default read-position file of a tailed EVE file: next to it. */
export function eveStateFileFor(eveFile: string): string {
  return `${eveFile}.fos1-position.json`;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseIngestConfig(env: NodeJS.ProcessEnv): IngestConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('ingest', envSchema, env);
  let guardInput: unknown = {};
  if (e.FOS1_GUARD_FILE) {
    try {
      guardInput = JSON.parse(readFileSync(e.FOS1_GUARD_FILE, 'utf8'));
    } catch (err) {
      throw new Error(`invalid ingest configuration:\n  FOS1_GUARD_FILE: ${e.FOS1_GUARD_FILE} cannot be read as JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const guard = guardConfigSchema.safeParse(guardInput);
  if (!guard.success) {
    throw new Error(`invalid guard configuration ${e.FOS1_GUARD_FILE}:\n${guard.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  return {
    temporal,
    rulesFile: e.FOS1_RULES_FILE,
    guard: guard.data,
    nodes: e.FOS1_ENFORCE_NODES,
    ...(e.FOS1_EVE_FILE ? { eveFile: e.FOS1_EVE_FILE } : {}),
    eveFrom: e.FOS1_EVE_FROM,
    ...(e.FOS1_EVE_FILE && e.FOS1_EVE_STATE_FILE !== 'off' ? { eveStateFile: e.FOS1_EVE_STATE_FILE ?? eveStateFileFor(e.FOS1_EVE_FILE) } : {}),
    ...(e.FOS1_EVE_SOCKET ? { eveSocket: e.FOS1_EVE_SOCKET } : {}),
    ...(e.FOS1_INGEST_HTTP_PORT ? { httpPort: e.FOS1_INGEST_HTTP_PORT } : {}),
    auth: authEnvSchema.parse(e),
    maxNdjsonLines: e.FOS1_MAX_NDJSON_LINES,
    ...(e.FOS1_NDPI_INTERFACE
      ? { ndpi: { interface: e.FOS1_NDPI_INTERFACE, seconds: e.FOS1_NDPI_SECONDS, ...(e.FOS1_NDPI_CONFIG_DIR ? { configDir: e.FOS1_NDPI_CONFIG_DIR } : {}), ...(e.FOS1_NDPI_NETNS ? { netns: e.FOS1_NDPI_NETNS } : {}) } }
      : {}),
    localNetworks: { ...(e.FOS1_NDPI_NETNS ? { netns: e.FOS1_NDPI_NETNS } : {}), extra: e.FOS1_LOCAL_NETWORKS, externalZones: e.FOS1_EXTERNAL_ZONES, refreshMs: e.FOS1_LOCAL_NETWORKS_REFRESH_SECONDS * 1000 },
    ...(e.FOS1_DPI_KUBECONFIG ? { dpiKubeconfig: e.FOS1_DPI_KUBECONFIG } : {}),
    stateDir: e.FOS1_INGEST_STATE_DIR ?? (e.FOS1_EVE_FILE ? dirname(e.FOS1_EVE_FILE) : join(env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'fos1-ingest')),
    spoolMaxBytes: e.FOS1_INGEST_SPOOL_MAX_BYTES,
    coalesceMs: e.FOS1_COALESCE_MS,
    logLevel: e.LOG_LEVEL,
  };
}
