/**
 * The Temporal connection settings every fos1 process shares: the SDK's TEMPORAL_* variables
 * become TLS/mTLS options, and every bad setting is named (with its path, never the contents).
 * Certificates are real ones made by openssl in a temporary folder.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseControllerConfig } from '../../controllers/main';
import { parseIngestConfig } from '../../ingest/config';
import { parseWorkerConfig } from '../../workers/config';
import { clientConnectionOptions, nativeConnectionOptions, parseTemporalEnv, TemporalConfigError } from '../../workers/temporal-connection';
import { TestPki, type CertFiles } from '../helpers/test-pki';

let pki: TestPki;
let ca: CertFiles;
let client: CertFiles;
let other: CertFiles;

beforeAll(() => {
  pki = TestPki.create();
  ca = pki.ca('unit-ca');
  client = pki.leaf('unit-client', ca);
  other = pki.leaf('unit-other', ca);
});
afterAll(() => pki.destroy());

function issuesOf(env: NodeJS.ProcessEnv): string[] {
  try {
    parseTemporalEnv(env);
  } catch (err) {
    if (err instanceof TemporalConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a TemporalConfigError');
}

describe('parseTemporalEnv', () => {
  it('is plaintext to localhost:7233, namespace default, when nothing is set', () => {
    const config = parseTemporalEnv({});
    expect(config).toMatchObject({ address: 'localhost:7233', namespace: 'default', tls: undefined });
    expect(clientConnectionOptions(config)).toEqual({ address: 'localhost:7233', tls: false });
    expect(nativeConnectionOptions(config)).toEqual({ address: 'localhost:7233', tls: false });
  });

  it('TEMPORAL_TLS=true alone is TLS with the system roots and no client certificate', () => {
    const config = parseTemporalEnv({ TEMPORAL_ADDRESS: 'temporal.example:7233', TEMPORAL_TLS: 'true' });
    expect(config.tls).toEqual({});
    expect(config.describe.tls).toBe('tls');
  });

  it('reads the client pair, the server CA and the server name into the SDK shape (mTLS)', () => {
    const config = parseTemporalEnv({
      TEMPORAL_ADDRESS: '127.0.0.1:7233',
      TEMPORAL_NAMESPACE: 'fos1',
      TEMPORAL_TLS_CLIENT_CERT_PATH: client.cert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: client.key,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: ca.cert,
      TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
    });
    expect(config.namespace).toBe('fos1');
    expect(config.tls?.clientCertPair?.crt.toString()).toContain('-----BEGIN CERTIFICATE-----');
    expect(config.tls?.clientCertPair?.key.toString()).toContain('PRIVATE KEY-----');
    expect(config.tls?.serverRootCACertificate?.toString()).toContain('-----BEGIN CERTIFICATE-----');
    expect(config.tls?.serverNameOverride).toBe('temporal.internal');
    expect(config.describe).toEqual({ address: '127.0.0.1:7233', namespace: 'fos1', tls: 'mtls', serverName: 'temporal.internal', clientCertSubject: 'CN=unit-client, O=fos1-test' });
    expect(clientConnectionOptions(config).tls).toBe(config.tls);
  });

  it('takes PEM data instead of paths (the SDK _DATA variables)', () => {
    const config = parseTemporalEnv({ TEMPORAL_TLS_SERVER_CA_CERT_DATA: readFileSync(ca.cert, 'utf8') });
    expect(config.tls?.serverRootCACertificate?.toString()).toBe(readFileSync(ca.cert, 'utf8'));
  });

  it('an API key turns TLS on and is passed to both connection kinds', () => {
    const config = parseTemporalEnv({ TEMPORAL_API_KEY: 'k-123' });
    expect(config.tls).toEqual({});
    expect(clientConnectionOptions(config).apiKey).toBe('k-123');
    expect(nativeConnectionOptions(config).apiKey).toBe('k-123');
    expect(JSON.stringify(config.describe)).not.toContain('k-123');
  });

  it('a missing or unreadable file names the variable and the path, not the contents', () => {
    const missing = join(pki.dir, 'nope.pem');
    expect(issuesOf({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: missing })).toEqual([`TEMPORAL_TLS_SERVER_CA_CERT_PATH (${missing}): cannot be read (ENOENT)`]);
    expect(issuesOf({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.dir })).toEqual([`TEMPORAL_TLS_SERVER_CA_CERT_PATH (${pki.dir}): cannot be read (EISDIR)`]);
    if (process.getuid?.() !== 0) {
      const locked = join(pki.dir, 'locked.pem');
      writeFileSync(locked, 'x');
      chmodSync(locked, 0o000);
      expect(issuesOf({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: locked })).toEqual([`TEMPORAL_TLS_SERVER_CA_CERT_PATH (${locked}): cannot be read (EACCES)`]);
    }
  });

  it('a file that is not PEM, or a key that does not match the certificate, is refused without echoing the file', () => {
    const secret = join(pki.dir, 'secret.txt');
    writeFileSync(secret, 'root:SECRET-LINE:0:0\n');
    const issues = issuesOf({ TEMPORAL_TLS_CLIENT_CERT_PATH: secret, TEMPORAL_TLS_CLIENT_KEY_PATH: secret });
    expect(issues).toEqual([`TEMPORAL_TLS_CLIENT_CERT_PATH (${secret}): does not hold a PEM certificate`, `TEMPORAL_TLS_CLIENT_KEY_PATH (${secret}): does not hold a PEM private key`]);
    expect(issues.join('\n')).not.toContain('SECRET-LINE');
    expect(issuesOf({ TEMPORAL_TLS_CLIENT_CERT_PATH: client.cert, TEMPORAL_TLS_CLIENT_KEY_PATH: other.key })).toEqual([
      `TEMPORAL_TLS_CLIENT_KEY_PATH (${other.key}): is not the private key of the certificate in TEMPORAL_TLS_CLIENT_CERT_PATH (${client.cert})`,
    ]);
  });

  it('names every inconsistent or unsupported setting at once', () => {
    expect(
      issuesOf({
        TEMPORAL_ADDRESS: 'no-port',
        TEMPORAL_NAMESPACE: '',
        TEMPORAL_TLS: 'yes',
        TEMPORAL_TLS_CLIENT_CERT_PATH: client.cert,
        TEMPORAL_TLS_SERVER_CA_CERT_PATH: ca.cert,
        TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'pem',
        TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: 'true',
        TEMPORAL_TLS_CERT: '/etc/ui.pem',
        TEMPORAL_CONFIG_FILE: '/etc/temporal.toml',
      }),
    ).toEqual([
      expect.stringMatching(/^TEMPORAL_CONFIG_FILE: TOML profiles are not read/),
      expect.stringMatching(/^TEMPORAL_TLS_CERT: not a Temporal SDK variable .* use TEMPORAL_TLS_CLIENT_CERT_PATH$/),
      'TEMPORAL_ADDRESS: must be host:port (an IPv6 host in brackets)',
      'TEMPORAL_NAMESPACE: must not be empty',
      'TEMPORAL_TLS: must be true or false',
      expect.stringMatching(/^TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: only false is supported/),
      'TEMPORAL_TLS_SERVER_CA_CERT_PATH: cannot be combined with TEMPORAL_TLS_SERVER_CA_CERT_DATA; set one',
      'TEMPORAL_TLS_CLIENT_KEY_PATH: is needed with TEMPORAL_TLS_CLIENT_CERT_*',
    ]);
    expect(issuesOf({ TEMPORAL_TLS: 'false', TEMPORAL_TLS_SERVER_NAME: 'x.example' })).toEqual([expect.stringMatching(/^TEMPORAL_TLS: is false, but TLS settings are given/)]);
  });

  it('accepts an IPv6 address in brackets', () => {
    expect(parseTemporalEnv({ TEMPORAL_ADDRESS: '[::1]:7233' }).address).toBe('[::1]:7233');
  });
});

describe('every entry point parses the same Temporal settings', () => {
  it('worker, ingest and controller configurations carry the mTLS settings', () => {
    const full = { TEMPORAL_ADDRESS: 'temporal:7233', TEMPORAL_TLS_CLIENT_CERT_PATH: client.cert, TEMPORAL_TLS_CLIENT_KEY_PATH: client.key, FOS1_ENFORCE_NODES: 'node-a', FOS1_NODE_NAME: 'node-a' };
    for (const config of [parseWorkerConfig(full), parseIngestConfig(full), parseControllerConfig(full)]) {
      expect(config.temporal.address).toBe('temporal:7233');
      expect(config.temporal.describe.tls).toBe('mtls');
    }
  });

  it('a bad Temporal setting is listed with the process\'s own bad variables', () => {
    const missing = join(pki.dir, 'gone.pem');
    expect(() => parseWorkerConfig({ FOS1_NODE_NAME: 'Bad_Name', TEMPORAL_TLS_SERVER_CA_CERT_PATH: missing })).toThrow(
      new RegExp(`^invalid worker configuration:\\n {2}FOS1_NODE_NAME: .*\\n {2}TEMPORAL_TLS_SERVER_CA_CERT_PATH \\(${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\): cannot be read \\(ENOENT\\)$`),
    );
  });
});
