/**
 * Errors of the network subsystems (links, VLANs, addresses, rules, NAT). The activities
 * turn them into ApplicationFailures whose `type` the workflows branch on (activities/failures.ts).
 */
import { batchLine } from './command-args';
import { IpCommandError, type IpRunner } from './ip-runner';

/** Subsystems whose kernel refusals are reported as `<Name>ApplyFailed` (model/failures.ts). */
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

/**
 * Runs operations as one `ip -batch -` call (one process instead of one per operation:
 * 500 policy rules take ~60 ms instead of ~3 s). iproute2 stops at the first line the
 * kernel refuses and reports it as "Command failed -:N"; that line's operation is named in
 * the error. What ran before it stays applied — the caller's rollback restores it.
 * `lineOf` checks each value it puts in a line (activities/system/command-args.ts), and
 * each token is checked again here, so a line cannot carry a second command or option.
 */
export async function applyBatch<Op>(
  ip: IpRunner,
  globalArgs: readonly string[],
  ops: readonly Op[],
  lineOf: (op: Op) => string[],
  subsystem: NetworkSubsystem,
  describe: (op: Op) => string,
): Promise<void> {
  if (ops.length === 0) return;
  // Every line is built (and its values checked) before the batch runs: a bad value stops it whole.
  const lines = ops.map((op) => batchLine(lineOf(op)));
  try {
    await ip.run([...globalArgs, '-batch', '-'], lines.join('\n') + '\n');
  } catch (err) {
    if (!(err instanceof IpCommandError)) throw err;
    const lineNo = /Command failed -:(\d+)/.exec(err.stderr)?.[1];
    const failed = lineNo !== undefined ? ops[Number(lineNo) - 1] : undefined;
    throw new NetworkApplyError(subsystem, failed !== undefined ? describe(failed) : `${subsystem.toLowerCase()} batch`, kernelMessage(err));
  }
}
