/**
 * The one place where errors thrown below the activities (kernel, libbpf, nftables, the
 * apiserver, parsers) become ApplicationFailures of fos1's vocabulary (model/failures.ts).
 *
 * Every activity runs its body through {@link translateErrors} with its {@link ErrorDomain}:
 * kernel and eBPF errors read the same everywhere; what differs between families of
 * activities — which input they parse, what an apiserver refusal means for them — is
 * declared in {@link ErrorDomains}, not re-coded per file. Failures already typed
 * (ApplicationFailure) pass through; anything unexpected stays as thrown (Temporal retries it).
 */
import { ApplicationFailure } from '@temporalio/common';
import { BlocklistFileError } from '../bpf/blocklist-image';
import { DatapathCodecError } from '../bpf/datapath-codec';
import { BpfError, BpfMapFullError, BpfPermissionError } from '../bpf/libbpf';
import { BpfMapMismatchError } from '../bpf/map';
import { KubeApiError } from '../k8s/client';
import { failure, FailureType, type FailureTypeName } from '../model/failures';
import { IpParseError } from '../model/ip';
import { QuarantineInputError } from '../model/quarantine';
import { UnsafeArgumentError } from './system/command-args';
import { ForeignStateError, KernelFeatureMissingError, NetworkApplyError, type NetworkSubsystem } from './system/network-errors';
import { RouteApplyError } from './system/route-table';

/** What a test's fault injector throws to fail a step on purpose (node activities' `faults`). */
export class InjectedFaultError extends Error {
  override readonly name = 'InjectedFaultError';
}

/** How one family of activities names the errors whose meaning depends on what it does. */
export interface ErrorDomain {
  /** Input handed to the activity that it could not parse (a bad line, prefix or label): the caller's, never retried. */
  invalidInput?: FailureTypeName;
  /** What the apiserver's refusals are in this domain (429/5xx/unreachable is always `KubeUnavailable`). */
  kube?: { conflict: FailureTypeName; conflictHint: string; rejected: FailureTypeName };
}

/** The error domains of fos1's activities. */
export const ErrorDomains = {
  /** Network subsystems, rate limits and the blocklist maps of a node. */
  node: {},
  /** The blocklist: the node's kernel errors plus bad lists and prefixes. */
  blocklist: { invalidInput: FailureType.InvalidBlocklist },
  cilium: {
    kube: { conflict: FailureType.PolicyConflict, conflictHint: 'another field manager owns these fields; fos1 does not take them over without an operator', rejected: FailureType.PolicyRejected },
  },
  quarantine: {
    invalidInput: FailureType.InvalidQuarantine,
    kube: { conflict: FailureType.LabelConflict, conflictHint: 'another field manager set this label; fos1 does not take it over', rejected: FailureType.QuarantineRejected },
  },
} as const satisfies Record<string, ErrorDomain>;

const APPLY_FAILED: Record<NetworkSubsystem, FailureTypeName> = {
  Link: FailureType.LinkApplyFailed,
  Vlan: FailureType.VlanApplyFailed,
  Address: FailureType.AddressApplyFailed,
  Rule: FailureType.RuleApplyFailed,
  Zone: FailureType.ZoneApplyFailed,
  Nat: FailureType.NatApplyFailed,
};

/**
 * Error classes whose meaning does not depend on the activity, most specific first.
 * Configuration errors the kernel refuses (bad gateway, full map, missing privilege) do not
 * heal by retrying; the vocabulary says which types are retryable.
 */
const BY_CLASS: [new (...args: never[]) => Error, FailureTypeName][] = [
  [InjectedFaultError, FailureType.InjectedFault],
  [UnsafeArgumentError, FailureType.UnsafeCommandArgument],
  [KernelFeatureMissingError, FailureType.KernelFeatureMissing],
  [ForeignStateError, FailureType.ForeignState],
  [RouteApplyError, FailureType.RouteApplyFailed],
  [DatapathCodecError, FailureType.RateLimitApplyFailed],
  [BpfMapFullError, FailureType.BlocklistMapFull],
  [BpfPermissionError, FailureType.PermissionDenied],
  [BpfMapMismatchError, FailureType.BlocklistMapMismatch],
  [BpfError, FailureType.BpfError],
];

/** Errors of input an activity was given: its domain's `invalidInput`, when it has one. */
const INPUT_ERRORS: (new (...args: never[]) => Error)[] = [BlocklistFileError, IpParseError, QuarantineInputError, RangeError];

/** The vocabulary failure `err` is in `domain`, or undefined when it is not one fos1 knows. */
export function classifyError(err: unknown, domain: ErrorDomain): ApplicationFailure | undefined {
  if (err instanceof ApplicationFailure) return err;
  if (!(err instanceof Error)) return undefined;
  if (err instanceof NetworkApplyError) return failure(APPLY_FAILED[err.subsystem], err.message);
  const known = BY_CLASS.find(([cls]) => err instanceof cls);
  if (known) return failure(known[1], err.message);
  if (domain.invalidInput && INPUT_ERRORS.some((cls) => err instanceof cls)) return failure(domain.invalidInput, err.message);
  if (domain.kube && err instanceof KubeApiError) {
    // Server-side apply answers a field the schema does not declare with a 500 ("failed to
    // create typed patch object … field not declared in schema"): it is the object that is
    // wrong, and retrying would only repeat it.
    if (err.status === 500 && err.message.includes('failed to create typed patch object')) return failure(domain.kube.rejected, err.message);
    if (err.retryable) return failure(FailureType.KubeUnavailable, err.message);
    if (err.status === 409) return failure(domain.kube.conflict, `${err.message} (${domain.kube.conflictHint})`);
    return failure(domain.kube.rejected, err.message);
  }
  return undefined;
}

/** Runs an activity's body, turning what it throws into the domain's failures. */
export async function translateErrors<T>(domain: ErrorDomain, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classifyError(err, domain) ?? err;
  }
}

/** {@link translateErrors} for synchronous code (parsers called inside a larger step). */
export function translateErrorsSync<T>(domain: ErrorDomain, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw classifyError(err, domain) ?? err;
  }
}
