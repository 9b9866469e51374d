/**
 * The shared third-party test data, read in place from `../shared/data` beside the
 * repository (never copied, never by absolute path). Suites that read it declare the
 * `shared-data` capability (describePrivileged), so a checkout without it says so —
 * and fails under CI=true.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sharedDataDir } from '../../scripts/paths';

/** Path of a file or folder in the shared data, e.g. `sharedData('suricata', 'eve')`. */
export function sharedData(...parts: string[]): string {
  return join(sharedDataDir(), ...parts);
}

/**
 * Non-empty lines of a shared data file; empty when the data is missing, for module-level
 * constants of a suite that the `shared-data` capability then skips (or fails under CI).
 */
export function sharedLines(...parts: string[]): string[] {
  const path = sharedData(...parts);
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter((l) => l !== '') : [];
}
