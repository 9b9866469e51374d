/**
 * Errors of the network subsystems (links, VLANs, addresses, rules, NAT). The activities
 * turn them into ApplicationFailures whose `type` the workflows branch on.
 */
import { IpCommandError } from './ip-runner';

/** Subsystems whose kernel refusals are reported as `<Name>ApplyFailed`. */
export type NetworkSubsystem = 'Link' | 'Vlan' | 'Address' | 'Rule' | 'Zone' | 'Nat';

/** An operation the kernel (or nft) refused; `operation` names it in diff form. */
export class NetworkApplyError extends Error {
  override readonly name = 'NetworkApplyError';
  constructor(
    readonly subsystem: NetworkSubsystem,
    readonly operation: string,
    readonly kernelMessage: string,
  ) {
    super(`the kernel refused "${operation}": ${kernelMessage}`);
  }

  /** The failure type workflows see, e.g. `RuleApplyFailed`. */
  get failureType(): string {
    return `${this.subsystem}ApplyFailed`;
  }
}

/**
 * The kernel lacks a feature the change needs (802.1Q VLANs, VRF, …). Detected before
 * anything of the step is applied; `feature` names it the way an operator searches for it.
 */
export class KernelFeatureMissingError extends Error {
  override readonly name = 'KernelFeatureMissingError';
  constructor(
    readonly feature: string,
    readonly detail: string,
  ) {
    super(`missing kernel feature: ${feature} — ${detail}`);
  }
}

/** fos1's nftables table holds something fos1 did not write; fos1 refuses to guess. */
export class ForeignStateError extends Error {
  override readonly name = 'ForeignStateError';
}

/** The kernel's message of a failed `ip` call, without iproute2's decoration. */
export function kernelMessage(err: unknown): string {
  if (err instanceof IpCommandError) {
    return (
      err.stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('Command failed'))
        .join('; ')
        .replace(/^Error: /, '') || `exit ${err.exitCode}`
    );
  }
  return err instanceof Error ? err.message : String(err);
}
