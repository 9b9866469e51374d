/**
 * Where fos1 keeps the tools it builds (outside the work tree, reused across clones)
 * and the state of the embedded dev stack. Shared by scripts, workers and tests.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Pinned Temporal CLI version; scripts/bootstrap.sh builds exactly this one. */
export const TEMPORAL_CLI_VERSION = 'v1.5.1';

/** Root of fos1's tool cache: `$FOS1_CACHE_DIR`, else `$XDG_CACHE_HOME/fos1`, else `~/.cache/fos1`. */
export function cacheDir(): string {
  return process.env.FOS1_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'fos1');
}

/** Path of the Temporal CLI binary built by scripts/bootstrap.sh. */
export function temporalCliPath(): string {
  return join(cacheDir(), `temporal-${TEMPORAL_CLI_VERSION}`, 'temporal');
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
