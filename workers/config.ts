/**
 * Worker configuration, parsed once at the entry point. Nothing below the entry point
 * reads `process.env`; modules receive what they need as arguments.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { loadIdentityKey } from '../auth/identity-assertion';
import { DEFAULT_FEED_MAX_BYTES, DEFAULT_FEED_READ_TIMEOUT_MS } from '../activities/blocklist-sync';
import { DEFAULT_ROUTE_PROTOCOL } from '../activities/system/route-table';
import { parseGuardConfig, type GuardConfig } from '../model/enforcement-guard';
import { parseQuarantineConfig, QuarantineInputError, type QuarantineConfig } from '../model/quarantine';
import { auditConfigFrom, auditEnvSchema, type AuditConfig } from './audit';
import { parseEnvWithTemporal, type TemporalConnectionConfig } from './temporal-connection';

/** The TEMPORAL_* variables (address, namespace, TLS) are parsed by ./temporal-connection. */
const envSchema = z.object({
  /** This node's name; its task queue is `fos1-node-<name>`. Kubernetes sets it from spec.nodeName. */
  FOS1_NODE_NAME: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'FOS1_NODE_NAME must be a DNS-1123 label')
    .default(hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63)),
  /** Network namespace the node activities act in; empty for the worker's own (the host). */
  FOS1_NETNS: z
    .string()
    .regex(/^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})?$/, 'FOS1_NETNS must be a namespace name (letters, digits, "_", "-", ".") or empty')
    .default(''),
  /** bpffs folder holding this node's pinned maps. */
  FOS1_BPF_PIN_DIR: z.string().regex(/^\/sys\/fs\/bpf(\/[A-Za-z0-9_.-]+)+$/, 'FOS1_BPF_PIN_DIR must be a folder below /sys/fs/bpf').default('/sys/fs/bpf/fos1'),
  FOS1_BLOCKLIST_MAX_ENTRIES_V4: z.coerce.number().int().min(1).max(16_777_216).default(1_048_576),
  FOS1_BLOCKLIST_MAX_ENTRIES_V6: z.coerce.number().int().min(1).max(16_777_216).default(262_144),
  /** Sizes of the single-host hash maps (preallocated: about 80 bytes of kernel memory per slot). */
  FOS1_BLOCKHOST_MAX_ENTRIES_V4: z.coerce.number().int().min(1).max(16_777_216).default(1_048_576),
  FOS1_BLOCKHOST_MAX_ENTRIES_V6: z.coerce.number().int().min(1).max(16_777_216).default(65_536),
  /** Size of each family's per-source rate-limit map. */
  FOS1_RATELIMIT_MAX_ENTRIES: z.coerce.number().int().min(1).max(1_048_576).default(16_384),
  FOS1_ROUTE_PROTOCOL: z.coerce.number().int().min(5).max(255).default(DEFAULT_ROUTE_PROTOCOL),
  /** Whether this process also serves the cluster task queue (change workflows). */
  FOS1_CLUSTER_WORKER: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Whether this process serves its node's task queue (`false` for a cluster-only worker Deployment). */
  FOS1_NODE_WORKER: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Port of the readiness endpoint (`GET /readyz`, workers/readiness.ts); unset = none. */
  FOS1_HEALTH_PORT: z.coerce.number().int().min(1, 'FOS1_HEALTH_PORT must be a port 1-65535').max(65535, 'FOS1_HEALTH_PORT must be a port 1-65535').optional(),
  /** Address the readiness endpoint binds to: loopback by default (a host-network pod's probe reaches it there). */
  FOS1_HEALTH_HOST: z.union([z.ipv4(), z.ipv6()], 'FOS1_HEALTH_HOST must be an IP address').default('127.0.0.1'),
  /** The node's content-addressed store of referenced blocklists and rollback snapshots. */
  FOS1_BLOCKLIST_STORE_DIR: z.string().regex(/^\/[A-Za-z0-9_./-]+$/, 'FOS1_BLOCKLIST_STORE_DIR must be an absolute path').default('/var/lib/fos1/blocklists'),
  /**
   * The only folders a blocklist `{ file }` reference may name a file under: absolute paths,
   * colon-separated. Links inside them may not lead out (activities/blocklist-sync.ts).
   */
  FOS1_FEED_DIRS: z
    .string()
    .default('/var/lib/fos1/feeds')
    .transform((v) => v.split(':').filter((d) => d !== ''))
    .pipe(z.array(z.string().regex(/^\/[^\0:]*$/, 'FOS1_FEED_DIRS must list absolute paths, colon-separated').refine((d) => d !== '/', 'FOS1_FEED_DIRS must not list "/" (every file would be a feed)'))),
  /** Largest blocklist file read by reference, in bytes. */
  FOS1_FEED_MAX_BYTES: z.coerce.number().int().min(1).default(DEFAULT_FEED_MAX_BYTES),
  /** How long reading one referenced file may take, in milliseconds. */
  FOS1_FEED_READ_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(DEFAULT_FEED_READ_TIMEOUT_MS),
  /** fos1's nftables table (family inet) for zones and NAT. */
  /**
   * A workflow bundle built ahead of time (scripts/build-workflow-bundle.ts, from the same
   * tree as the worker): the worker loads it instead of bundling workflows/ at start, so a
   * restarted worker polls seconds sooner (issue 16: bundling took 13.6 s of a restart on the
   * loaded 2-core test machine).
   */
  FOS1_WORKFLOW_BUNDLE: z.string().regex(/^\/[A-Za-z0-9_./-]+\.js$/, 'FOS1_WORKFLOW_BUNDLE must be an absolute path to a .js file').optional(),
  FOS1_NAT_TABLE: z.string().regex(/^[A-Za-z][A-Za-z0-9_-]{0,31}$/, 'FOS1_NAT_TABLE must be an nft table name').default('fos1'),
  /**
   * Kubernetes for the cluster worker's Cilium policy activities: unset = none (policy
   * workflows then fail to schedule their activities), `default` = in-cluster service
   * account or ~/.kube/config, otherwise a kubeconfig file path.
   */
  FOS1_KUBECONFIG: z.string().optional(),
  /** Server-side apply field manager for Cilium policies. */
  FOS1_FIELD_MANAGER: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/).default('fos1'),
  /** JSON file with the quarantine policy's exceptions (docs/quarantine.md); unset = none. */
  FOS1_QUARANTINE_FILE: z.string().optional(),
  /**
   * The fleet inventory for staged rollouts when there is no Kubernetes (FOS1_KUBECONFIG
   * unset): a YAML/JSON list of `{ name, labels }` (docs/rollouts.md). With Kubernetes, the
   * Nodes labelled fos1.io/router=true are the inventory and this is ignored.
   */
  FOS1_INVENTORY_FILE: z.string().min(1, 'FOS1_INVENTORY_FILE must be a path').optional(),
  /**
   * JSON file with the enforcement guard (allow-lists, prefix bounds, caps on blocks, rate
   * limits and quarantines; model/enforcement-guard.ts). The cluster worker's enforcement
   * workflows read it (never from a request); unset = the defaults, which still protect
   * loopback, link-local and every node's own addresses, gateways and DNS servers.
   */
  FOS1_GUARD_FILE: z.string().min(1).optional(),
  /** resolv.conf whose `nameserver`s the node reports as never to be blocked. */
  FOS1_RESOLV_CONF: z.string().regex(/^\/[A-Za-z0-9_./-]+$/, 'FOS1_RESOLV_CONF must be an absolute path').default('/etc/resolv.conf'),
  /** Key shared with the API to verify identity assertions (auth/identity-assertion.ts); unset = every change self-asserted. */
  FOS1_IDENTITY_KEY_FILE: z.string().min(1).optional(),
  /** The controllers' own key (the controller process signs with it): verifies their changes, for the principal fos1-controller only; unset = their changes self-asserted. */
  FOS1_CONTROLLER_IDENTITY_KEY_FILE: z.string().min(1).optional(),
  /** Approval policy and change windows (YAML/JSON, docs/approvals.md); unset = nothing needs approval. Re-read for every change. */
  FOS1_APPROVAL_POLICY_FILE: z.string().min(1).optional(),
  /** The cluster-scoped ApprovalPolicy object to read instead of a file (needs FOS1_KUBECONFIG). */
  FOS1_APPROVAL_POLICY_NAME: z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'FOS1_APPROVAL_POLICY_NAME must be a Kubernetes object name').optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
}).extend(auditEnvSchema.shape);

/** Parsed worker configuration. */
export interface WorkerConfig {
  /** Address, namespace and TLS/mTLS material (TEMPORAL_* variables). */
  temporal: TemporalConnectionConfig;
  nodeName: string;
  netns: string | undefined;
  bpfPinDir: string;
  blocklistMaxEntries: { v4: number; v6: number };
  blocklistHostMaxEntries: { v4: number; v6: number };
  rateLimitMaxEntries: number;
  routeProtocol: number;
  natTable: string;
  blocklistStoreDir: string;
  /** Where blocklist file references may point, and the size and time limits of reading one. */
  feeds: { dirs: string[]; maxBytes: number; readTimeoutMs: number };
  /** `default`, a kubeconfig path, or undefined for no Kubernetes. */
  kubeconfig: string | undefined;
  fieldManager: string;
  /** The inventory file (FOS1_INVENTORY_FILE), when there is no Kubernetes. */
  inventoryFile: string | undefined;
  /** Exceptions to quarantine isolation (none unless FOS1_QUARANTINE_FILE names some). */
  quarantine: QuarantineConfig;
  clusterWorker: boolean;
  nodeWorker: boolean;
  /** The readiness endpoint, when FOS1_HEALTH_PORT is set. */
  health: { port: number; host: string } | undefined;
  /** The enforcement guard (FOS1_GUARD_FILE, or the defaults). */
  guard: GuardConfig;
  resolvConf: string;
  /** The identity key (read at start), if FOS1_IDENTITY_KEY_FILE names one. */
  identityKey: Buffer | undefined;
  /** The controllers' identity key (read at start), if FOS1_CONTROLLER_IDENTITY_KEY_FILE names one. */
  controllerIdentityKey: Buffer | undefined;
  /** The durable audit store and revisions (workers/audit.ts: FOS1_AUDIT_*); the cluster worker appends to them. */
  audit: AuditConfig;
  /** The approval policy file, checked at start and re-read by every change (FOS1_APPROVAL_POLICY_FILE). */
  approvalPolicyFile: string | undefined;
  /** The ApprovalPolicy object read instead of a file (FOS1_APPROVAL_POLICY_NAME). */
  approvalPolicyName: string | undefined;
  /** The prebuilt workflow bundle (FOS1_WORKFLOW_BUNDLE); undefined: bundle workflows/ at start. */
  workflowBundle: string | undefined;
  logLevel: string;
}

/** Parses the environment; throws one error listing every bad variable. */
export function parseWorkerConfig(env: NodeJS.ProcessEnv): WorkerConfig {
  const { vars: e, temporal } = parseEnvWithTemporal('worker', envSchema, env);
  if (!e.FOS1_NODE_WORKER && !e.FOS1_CLUSTER_WORKER) {
    throw new Error('invalid worker configuration:\n  FOS1_NODE_WORKER, FOS1_CLUSTER_WORKER: at least one must be true (a process with no worker does nothing)');
  }
  if (e.FOS1_APPROVAL_POLICY_NAME !== undefined && e.FOS1_APPROVAL_POLICY_FILE !== undefined) {
    throw new Error('invalid worker configuration:\n  FOS1_APPROVAL_POLICY_NAME, FOS1_APPROVAL_POLICY_FILE: set one (the policy comes from one place)');
  }
  if (e.FOS1_APPROVAL_POLICY_NAME !== undefined && !e.FOS1_KUBECONFIG) {
    throw new Error('invalid worker configuration:\n  FOS1_APPROVAL_POLICY_NAME: needs FOS1_KUBECONFIG (the ApprovalPolicy object is read from the cluster)');
  }
  let quarantine: QuarantineConfig;
  try {
    quarantine = parseQuarantineConfig(e.FOS1_QUARANTINE_FILE ? JSON.parse(readFileSync(e.FOS1_QUARANTINE_FILE, 'utf8')) : {});
  } catch (err) {
    const why = err instanceof QuarantineInputError ? err.message : `cannot be read as JSON: ${err instanceof Error ? err.message : String(err)}`;
    throw new Error(`invalid worker configuration:\n  FOS1_QUARANTINE_FILE (${e.FOS1_QUARANTINE_FILE}): ${why}`);
  }
  let guard: GuardConfig;
  try {
    guard = parseGuardConfig(e.FOS1_GUARD_FILE ? readGuardFile(e.FOS1_GUARD_FILE) : {}, `FOS1_GUARD_FILE (${e.FOS1_GUARD_FILE ?? 'unset'})`);
  } catch (err) {
    // Indented under the heading, one field per line.
    throw new Error(`invalid worker configuration:\n  ${(err instanceof Error ? err.message : String(err)).replace(/\n/g, '\n  ')}`);
  }
  const key = (variable: 'FOS1_IDENTITY_KEY_FILE' | 'FOS1_CONTROLLER_IDENTITY_KEY_FILE'): Buffer | undefined => {
    const path = e[variable];
    try {
      return path ? loadIdentityKey(path) : undefined;
    } catch (err) {
      throw new Error(`invalid worker configuration:\n  ${variable}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const identityKey = key('FOS1_IDENTITY_KEY_FILE');
  const controllerIdentityKey = key('FOS1_CONTROLLER_IDENTITY_KEY_FILE');
  if (identityKey && controllerIdentityKey?.equals(identityKey)) {
    // One key for both would let the API vouch for the controller and the controller for anyone.
    throw new Error('invalid worker configuration:\n  FOS1_CONTROLLER_IDENTITY_KEY_FILE: must be another key than FOS1_IDENTITY_KEY_FILE (the controllers\' key vouches for fos1-controller only)');
  }
  if (e.FOS1_WORKFLOW_BUNDLE !== undefined && !isReadableFile(e.FOS1_WORKFLOW_BUNDLE)) {
    throw new Error(`invalid worker configuration:\n  FOS1_WORKFLOW_BUNDLE (${e.FOS1_WORKFLOW_BUNDLE}): must be a readable file (build it with scripts/build-workflow-bundle.ts)`);
  }
  return {
    temporal,
    nodeName: e.FOS1_NODE_NAME,
    netns: e.FOS1_NETNS === '' ? undefined : e.FOS1_NETNS,
    bpfPinDir: e.FOS1_BPF_PIN_DIR,
    blocklistMaxEntries: { v4: e.FOS1_BLOCKLIST_MAX_ENTRIES_V4, v6: e.FOS1_BLOCKLIST_MAX_ENTRIES_V6 },
    blocklistHostMaxEntries: { v4: e.FOS1_BLOCKHOST_MAX_ENTRIES_V4, v6: e.FOS1_BLOCKHOST_MAX_ENTRIES_V6 },
    rateLimitMaxEntries: e.FOS1_RATELIMIT_MAX_ENTRIES,
    routeProtocol: e.FOS1_ROUTE_PROTOCOL,
    natTable: e.FOS1_NAT_TABLE,
    blocklistStoreDir: e.FOS1_BLOCKLIST_STORE_DIR,
    feeds: { dirs: e.FOS1_FEED_DIRS, maxBytes: e.FOS1_FEED_MAX_BYTES, readTimeoutMs: e.FOS1_FEED_READ_TIMEOUT_MS },
    kubeconfig: e.FOS1_KUBECONFIG === '' ? undefined : e.FOS1_KUBECONFIG,
    fieldManager: e.FOS1_FIELD_MANAGER,
    quarantine,
    inventoryFile: e.FOS1_INVENTORY_FILE,
    clusterWorker: e.FOS1_CLUSTER_WORKER,
    nodeWorker: e.FOS1_NODE_WORKER,
    health: e.FOS1_HEALTH_PORT === undefined ? undefined : { port: e.FOS1_HEALTH_PORT, host: e.FOS1_HEALTH_HOST },
    guard,
    resolvConf: e.FOS1_RESOLV_CONF,
    identityKey,
    controllerIdentityKey,
    audit: auditConfigFrom(e),
    approvalPolicyFile: e.FOS1_APPROVAL_POLICY_FILE,
    approvalPolicyName: e.FOS1_APPROVAL_POLICY_NAME,
    workflowBundle: e.FOS1_WORKFLOW_BUNDLE,
    logLevel: e.LOG_LEVEL,
  };
}

function isReadableFile(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The guard file's JSON; the error names the file, never its content. */
function readGuardFile(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    const why = err instanceof SyntaxError ? 'is not valid JSON' : `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
    throw new Error(`FOS1_GUARD_FILE ${file} ${why}`);
  }
}
