/**
 * How every fos1 process (node and cluster workers, API, ingest, controllers) reaches Temporal:
 * one parser of the Temporal SDK's own environment variables (the names of the SDKs'
 * "environment configuration", `go.temporal.io/sdk/contrib/envconfig`), turned into the
 * options of `Connection.connect` (client) and `NativeConnection.connect` (worker).
 *
 * | variable | meaning |
 * | --- | --- |
 * | `TEMPORAL_ADDRESS` | frontend `host:port` (default `localhost:7233`) |
 * | `TEMPORAL_NAMESPACE` | namespace (default `default`) |
 * | `TEMPORAL_TLS` | `true`: TLS even without any other TLS setting (system roots); `false`: plaintext, and no other TLS variable may be set |
 * | `TEMPORAL_TLS_CLIENT_CERT_PATH` / `_DATA` | client certificate (PEM) for mTLS, a file or the PEM itself |
 * | `TEMPORAL_TLS_CLIENT_KEY_PATH` / `_DATA` | its private key (PEM) |
 * | `TEMPORAL_TLS_SERVER_CA_CERT_PATH` / `_DATA` | CA(s) that sign the server's certificate (default: system roots) |
 * | `TEMPORAL_TLS_SERVER_NAME` | name to check the server certificate for (and SNI), when it differs from the address's host |
 * | `TEMPORAL_API_KEY` | API key (sent as a bearer token); turns TLS on unless `TEMPORAL_TLS=false` |
 *
 * As in the SDKs, TLS is on as soon as any `TEMPORAL_TLS_*` variable (or an API key) is set.
 * Settings this parser cannot honour are refused rather than ignored, because ignoring them
 * would silently connect with less protection than configured: a TOML profile
 * (`TEMPORAL_CONFIG_FILE`, `TEMPORAL_PROFILE`), `TEMPORAL_TLS_DISABLE_HOST_VERIFICATION=true`
 * (the SDK's Rust core cannot skip verification) and the Web UI's older names
 * (`TEMPORAL_TLS_CERT`, `TEMPORAL_TLS_KEY`, `TEMPORAL_TLS_CA`).
 *
 * Files are read once, here, at start-up; errors name the variable, the path and the reason
 * (errno code, or "not a PEM certificate"), never the file's contents.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from '@temporalio/client';
import type { NativeConnectionOptions } from '@temporalio/worker';
import type { z } from 'zod';

/** TLS material as the SDK takes it (both connection kinds use the same shape). */
export interface TemporalTlsConfig {
  serverRootCACertificate?: Buffer;
  clientCertPair?: { crt: Buffer; key: Buffer };
  serverNameOverride?: string;
}

/** Where and how to reach Temporal; parsed once at the entry point by {@link parseTemporalEnv}. */
export interface TemporalConnectionConfig {
  address: string;
  namespace: string;
  /** Undefined: plaintext. `{}`: TLS with the system's roots, no client certificate. */
  tls: TemporalTlsConfig | undefined;
  apiKey?: string;
  /** For logs: what protects the connection, without any secret. */
  describe: { address: string; namespace: string; tls: 'off' | 'tls' | 'mtls'; serverName?: string; clientCertSubject?: string };
}

/** A bad Temporal setting; `issues` holds one line per variable, each naming it. */
export class TemporalConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid Temporal connection configuration:\n${issues.map((i) => `  ${i}`).join('\n')}`);
    this.name = 'TemporalConfigError';
  }
}

const DEFAULT_ADDRESS = 'localhost:7233';
const DEFAULT_NAMESPACE = 'default';
/** Same spellings as the SDKs' envconfig (`envVarToBool`). */
const TRUE = new Set(['1', 'true']);
const FALSE = new Set(['0', 'false']);
/** Upper bound for a PEM file; a certificate chain is a few KiB, so anything bigger is a wrong path. */
const MAX_PEM_BYTES = 1 << 20;

const UNSUPPORTED: Record<string, string> = {
  TEMPORAL_CONFIG_FILE: 'TOML profiles are not read by fos1; set the TEMPORAL_* variables instead',
  TEMPORAL_PROFILE: 'TOML profiles are not read by fos1; set the TEMPORAL_* variables instead',
  TEMPORAL_TLS_CERT: 'not a Temporal SDK variable (that is the Web UI server\'s name); use TEMPORAL_TLS_CLIENT_CERT_PATH',
  TEMPORAL_TLS_KEY: 'not a Temporal SDK variable (that is the Web UI server\'s name); use TEMPORAL_TLS_CLIENT_KEY_PATH',
  TEMPORAL_TLS_CA: 'not a Temporal SDK variable (that is the Web UI server\'s name); use TEMPORAL_TLS_SERVER_CA_CERT_PATH',
};

/**
 * Parses the Temporal variables of `env` (reading the certificate files they name).
 * Throws {@link TemporalConfigError} listing every bad variable.
 */
export function parseTemporalEnv(env: NodeJS.ProcessEnv): TemporalConnectionConfig {
  const issues: string[] = [];
  // The SDKs treat an empty variable as set; an empty path or name is never meant, so unset it.
  const get = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);

  for (const [name, why] of Object.entries(UNSUPPORTED)) if (get(name) !== undefined) issues.push(`${name}: ${why}`);

  const address = env.TEMPORAL_ADDRESS ?? DEFAULT_ADDRESS;
  if (!/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/.test(address)) issues.push('TEMPORAL_ADDRESS: must be host:port (an IPv6 host in brackets)');
  if (env.TEMPORAL_NAMESPACE === '') issues.push('TEMPORAL_NAMESPACE: must not be empty');
  const namespace = get('TEMPORAL_NAMESPACE') ?? DEFAULT_NAMESPACE;

  let tlsFlag: boolean | undefined;
  const tlsRaw = get('TEMPORAL_TLS');
  if (tlsRaw !== undefined) {
    if (TRUE.has(tlsRaw.toLowerCase())) tlsFlag = true;
    else if (FALSE.has(tlsRaw.toLowerCase())) tlsFlag = false;
    else issues.push('TEMPORAL_TLS: must be true or false');
  }
  const hostCheck = get('TEMPORAL_TLS_DISABLE_HOST_VERIFICATION');
  if (hostCheck !== undefined && !FALSE.has(hostCheck.toLowerCase())) {
    issues.push('TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: only false is supported (the SDK always verifies the server); set TEMPORAL_TLS_SERVER_NAME to the name in the server certificate instead');
  }

  const clientCert = pemSource(get, 'TEMPORAL_TLS_CLIENT_CERT', issues);
  const clientKey = pemSource(get, 'TEMPORAL_TLS_CLIENT_KEY', issues);
  const serverCa = pemSource(get, 'TEMPORAL_TLS_SERVER_CA_CERT', issues);
  const serverName = get('TEMPORAL_TLS_SERVER_NAME');
  if (serverName !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(serverName)) issues.push('TEMPORAL_TLS_SERVER_NAME: must be a DNS name or an IP address');
  const apiKey = get('TEMPORAL_API_KEY');

  const tlsSettings = [clientCert, clientKey, serverCa].some((s) => s !== undefined) || serverName !== undefined;
  if (tlsFlag === false && tlsSettings) issues.push('TEMPORAL_TLS: is false, but TLS settings are given (TEMPORAL_TLS_CLIENT_*, TEMPORAL_TLS_SERVER_*); remove one or the other');
  if ((clientCert === undefined) !== (clientKey === undefined)) {
    issues.push(clientCert ? 'TEMPORAL_TLS_CLIENT_KEY_PATH: is needed with TEMPORAL_TLS_CLIENT_CERT_*' : 'TEMPORAL_TLS_CLIENT_CERT_PATH: is needed with TEMPORAL_TLS_CLIENT_KEY_*');
  }

  // Read and check the PEM material only when the variables themselves make sense.
  let crt: Buffer | undefined;
  let key: Buffer | undefined;
  let ca: Buffer | undefined;
  let clientCertSubject: string | undefined;
  if (issues.length === 0) {
    crt = clientCert && readPem(clientCert, issues);
    key = clientKey && readPem(clientKey, issues);
    ca = serverCa && readPem(serverCa, issues);
    let leaf: X509Certificate | undefined;
    if (crt && clientCert) leaf = parseCertificate(crt, clientCert.label, issues);
    if (ca && serverCa) parseCertificate(ca, serverCa.label, issues);
    if (key && clientKey) {
      try {
        const privateKey = createPrivateKey(key);
        if (leaf && !leaf.checkPrivateKey(privateKey)) issues.push(`${clientKey.label}: is not the private key of the certificate in ${clientCert?.label}`);
      } catch {
        issues.push(`${clientKey.label}: does not hold a PEM private key`);
      }
    }
    clientCertSubject = leaf?.subject.replace(/\n/g, ', ');
  }
  if (issues.length > 0) throw new TemporalConfigError(issues);

  const tlsOn = tlsFlag ?? (tlsSettings || apiKey !== undefined);
  const tls: TemporalTlsConfig | undefined = tlsOn
    ? {
        ...(ca ? { serverRootCACertificate: ca } : {}),
        ...(crt && key ? { clientCertPair: { crt, key } } : {}),
        ...(serverName ? { serverNameOverride: serverName } : {}),
      }
    : undefined;
  return {
    address,
    namespace,
    tls,
    ...(apiKey !== undefined ? { apiKey } : {}),
    describe: {
      address,
      namespace,
      tls: !tls ? 'off' : tls.clientCertPair ? 'mtls' : 'tls',
      ...(serverName ? { serverName } : {}),
      ...(clientCertSubject ? { clientCertSubject } : {}),
    },
  };
}

/**
 * Parses a process's own variables (`schema`) and the Temporal ones together, so one error
 * lists every bad variable of either kind: `invalid <what> configuration:` then one line each.
 */
export function parseEnvWithTemporal<S extends z.ZodType>(what: string, schema: S, env: NodeJS.ProcessEnv): { vars: z.output<S>; temporal: TemporalConnectionConfig } {
  const parsed = schema.safeParse(env);
  const issues = parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  let temporal: TemporalConnectionConfig | undefined;
  try {
    temporal = parseTemporalEnv(env);
  } catch (err) {
    if (!(err instanceof TemporalConfigError)) throw err;
    issues.push(...err.issues);
  }
  if (!parsed.success || !temporal) throw new Error(`invalid ${what} configuration:\n${issues.map((i) => `  ${i}`).join('\n')}`);
  return { vars: parsed.data, temporal };
}

/** Options for `Connection.connect` (clients: API, ingest, controllers). */
export function clientConnectionOptions(config: TemporalConnectionConfig, extra: Partial<ConnectionOptions> = {}): ConnectionOptions {
  return { address: config.address, tls: config.tls ?? false, ...(config.apiKey !== undefined ? { apiKey: config.apiKey } : {}), ...extra };
}

/** Options for `NativeConnection.connect` (workers). */
export function nativeConnectionOptions(config: TemporalConnectionConfig, extra: Partial<NativeConnectionOptions> = {}): NativeConnectionOptions {
  return { address: config.address, tls: config.tls ?? false, ...(config.apiKey !== undefined ? { apiKey: config.apiKey } : {}), ...extra };
}

interface PemSource {
  /** The variable it came from, for messages. */
  label: string;
  path?: string;
  data?: string;
}

/** `<base>_PATH` or `<base>_DATA` (not both), as in the SDKs. */
function pemSource(get: (name: string) => string | undefined, base: string, issues: string[]): PemSource | undefined {
  const path = get(`${base}_PATH`);
  const data = get(`${base}_DATA`);
  if (path !== undefined && data !== undefined) {
    issues.push(`${base}_PATH: cannot be combined with ${base}_DATA; set one`);
    return undefined;
  }
  if (path !== undefined) return { label: `${base}_PATH (${path})`, path };
  if (data !== undefined) return { label: `${base}_DATA`, data };
  return undefined;
}

function readPem(source: PemSource, issues: string[]): Buffer | undefined {
  if (source.data !== undefined) return Buffer.from(source.data, 'utf8');
  try {
    const content = readFileSync(source.path as string);
    if (content.length > MAX_PEM_BYTES) {
      issues.push(`${source.label}: is larger than ${MAX_PEM_BYTES} bytes, not a PEM file`);
      return undefined;
    }
    return content;
  } catch (err) {
    // Only the errno code: a message could carry more than the path we already show.
    const code = (err as NodeJS.ErrnoException).code ?? 'read error';
    issues.push(`${source.label}: cannot be read (${code})`);
    return undefined;
  }
}

function parseCertificate(pem: Buffer, label: string, issues: string[]): X509Certificate | undefined {
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    issues.push(`${label}: does not hold a PEM certificate`);
    return undefined;
  }
  try {
    return new X509Certificate(pem);
  } catch {
    issues.push(`${label}: does not hold a valid PEM certificate`);
    return undefined;
  }
}
