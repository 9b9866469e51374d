/**
 * Capability checks for privileged tests.
 *
 * A test that needs root, network namespaces, bpffs, a built tool (Temporal CLI or server), Chromium or a
 * PostgreSQL server (test/helpers/postgres.ts) calls
 * {@link describePrivileged}. When something is missing the suite is skipped with a
 * plain message saying what and why — except under `CI=true`, where a missing
 * capability is a failure: CI machines have all of them, so an absence there means a
 * broken install step, not a reason to go green.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { helmPath } from '../../k8s/paths';
import { CHROMIUM_PATH, sharedDataDir, temporalCliPath, temporalServerPath } from '../../scripts/paths';
import { postgresMissingReason } from './postgres';

/** A capability a test may need. */
export type Capability = 'root' | 'netns' | 'bpffs' | 'temporal-cli' | 'temporal-server' | 'openssl' | 'iproute2' | 'shared-data' | 'helm' | 'postgres' | 'prometheus' | 'chromium';

/** Returns null when the capability is present, else the reason it is not. */
export function missingReason(capability: Capability): string | null {
  switch (capability) {
    case 'root':
      return process.getuid?.() === 0 ? null : 'not running as root (uid 0 is needed for netns and bpf syscalls)';
    case 'iproute2':
      return commandWorks('ip', ['-V']) ? null : 'iproute2 (`ip`) is not installed';
    case 'netns':
      if (process.getuid?.() !== 0) return 'network namespaces need root';
      return commandWorks('ip', ['netns', 'list']) ? null : '`ip netns` does not work on this machine';
    case 'bpffs': {
      const mounts = existsSync('/proc/mounts') ? readFileSync('/proc/mounts', 'utf8') : '';
      return /\s\/sys\/fs\/bpf\s+bpf\s/.test(mounts)
        ? null
        : 'bpffs is not mounted at /sys/fs/bpf (scripts/bootstrap.sh mounts it)';
    }
    case 'shared-data':
      return existsSync(sharedDataDir())
        ? null
        : `the shared test data is not at ${sharedDataDir()} (it belongs in ../shared/data beside the repository)`;
    case 'postgres':
      return postgresMissingReason();
    case 'temporal-cli':
      return existsSync(temporalCliPath())
        ? null
        : `Temporal CLI not built at ${temporalCliPath()} (scripts/bootstrap.sh builds it)`;
    case 'helm':
      return existsSync(helmPath()) ? null : `helm not built at ${helmPath()} (scripts/bootstrap.d/55-helm.sh builds it)`;
    case 'temporal-server':
      return existsSync(temporalServerPath())
        ? null
        : `Temporal server not built at ${temporalServerPath()} (scripts/bootstrap.sh builds it: scripts/bootstrap.d/40-temporal-server.sh)`;
    case 'prometheus':
      return commandWorks('prometheus', ['--version']) ? null : '`prometheus` is not installed (scripts/bootstrap.d/65-prometheus.sh installs Debian\'s prometheus package)';
    case 'chromium':
      return existsSync(CHROMIUM_PATH) ? null : `Chromium is not installed at ${CHROMIUM_PATH} (scripts/bootstrap.d/75-chromium.sh installs Debian's chromium package)`;
    case 'openssl':
      return commandWorks('openssl', ['version']) ? null : '`openssl` is not installed (it makes the test certificates)';
  }
}

function commandWorks(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * `describe` that runs only when every capability is present. Outside CI a missing
 * capability skips the suite and says why; under CI=true it fails the run.
 */
export function describePrivileged(name: string, needs: Capability[], body: () => void): void {
  const missing = needs.map((c) => [c, missingReason(c)] as const).filter(([, why]) => why !== null);
  if (missing.length === 0) {
    describe(name, body);
    return;
  }
  const why = missing.map(([c, reason]) => `${c}: ${reason}`).join('; ');
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('has the capabilities it needs', () => {
        throw new Error(`CI=true and a capability is missing — ${why}`);
      });
    });
    return;
  }
  console.warn(`SKIPPED "${name}" — ${why}`);
  const skipped = describe.skip;
  skipped(name, body);
}
