/**
 * Where fos1 keeps the tools it builds (outside the work tree, reused across clones)
 * and the state of the embedded dev stack. Shared by scripts, workers and tests.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** Pinned Temporal CLI version; scripts/bootstrap.sh builds exactly this one. */
export const TEMPORAL_CLI_VERSION = 'v1.5.1';

/** Pinned Temporal server version (the one CLI v1.5.1 embeds); scripts/bootstrap.d/40-temporal-server.sh builds it. */
export const TEMPORAL_SERVER_VERSION = 'v1.29.1';

/** Root of fos1's tool cache: `$FOS1_CACHE_DIR`, else `$XDG_CACHE_HOME/fos1`, else `~/.cache/fos1`. */
export function cacheDir(): string {
  return process.env.FOS1_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'fos1');
}

/** Path of the Temporal CLI binary built by scripts/bootstrap.sh. */
export function temporalCliPath(): string {
  return join(cacheDir(), `temporal-${TEMPORAL_CLI_VERSION}`, 'temporal');
}

/** Path of the Temporal server binary (runs from a config file: TLS, mTLS) built by scripts/bootstrap.d. */
export function temporalServerPath(): string {
  return join(cacheDir(), `temporal-server-${TEMPORAL_SERVER_VERSION}`, 'temporal-server');
}

/** Pinned version of Temporal's Java time-skipping test server; scripts/bootstrap.d/70-temporal-test-server.sh fetches exactly this one. */
export const TEMPORAL_TEST_SERVER_VERSION = '1.38.0';

/** Wrapper script that runs the time-skipping test server (`temporal-test-server PORT`), installed by scripts/bootstrap.sh. */
export function temporalTestServerPath(): string {
  return join(cacheDir(), `temporal-test-server-${TEMPORAL_TEST_SERVER_VERSION}`, 'temporal-test-server');
}

/** Folder for the dev stack's persistent state (Temporal's SQLite file). */
export function devStateDir(): string {
  return process.env.FOS1_STATE_DIR ?? join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'fos1');
}

/**
 * The shared third-party test data (Cilium CRDs and policies, Suricata EVE, nDPI captures):
 * `../shared/data` beside the repository, found from this file so any clone location works.
 */
export function sharedDataDir(): string {
  return resolve(__dirname, '..', '..', 'shared', 'data');
}

/** Debian's Chromium (scripts/bootstrap.d/75-chromium.sh), the browser of the Web UI test. */
export const CHROMIUM_PATH = '/usr/bin/chromium';
