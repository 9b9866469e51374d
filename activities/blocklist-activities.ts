/**
 * How the blocklist's kernel errors become `ApplicationFailure`s with the node activities'
 * failure types, so workflows branch on one vocabulary. The blocklist subsystem itself is
 * activities/subsystems/blocklist.ts.
 */
import { ApplicationFailure } from '@temporalio/common';
import { BpfError, BpfMapFullError, BpfPermissionError } from '../bpf/libbpf';
import { BpfMapMismatchError } from '../bpf/map';

/** Failure types of the blocklist activities, beyond the sync's own (`InvalidBlocklist`, …). */
export const BlocklistActivityFailureType = {
  BlocklistMapFull: 'BlocklistMapFull',
  PermissionDenied: 'PermissionDenied',
  BlocklistMapMismatch: 'BlocklistMapMismatch',
  BpfError: 'BpfError',
} as const;

/** Kernel errors as `ApplicationFailure`s (input errors already are). */
export async function asFailures<T>(fn: () => T): Promise<T> {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ApplicationFailure) throw err;
    const type =
      err instanceof BpfMapFullError
        ? BlocklistActivityFailureType.BlocklistMapFull
        : err instanceof BpfPermissionError
          ? BlocklistActivityFailureType.PermissionDenied
          : err instanceof BpfMapMismatchError
            ? BlocklistActivityFailureType.BlocklistMapMismatch
            : err instanceof BpfError
              ? BlocklistActivityFailureType.BpfError
              : undefined;
    if (type === undefined) throw err;
    // A full map, a missing privilege or an incompatible pin do not heal by retrying.
    throw ApplicationFailure.create({ type, message: (err as Error).message, nonRetryable: type !== BlocklistActivityFailureType.BpfError });
  }
}
