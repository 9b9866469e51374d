/**
 * fos1's failure vocabulary: every `ApplicationFailure.type` fos1 raises, whether retrying
 * can help, and the one way to read a failure back (`summariseFailure`).
 *
 * Workflows, activities, clients and tests branch on these names (`failure.type`, never
 * `instanceof`, which does not survive the workflow sandbox or the wire), so the names are
 * a public contract: running executions and clients depend on them. Add a type here before
 * raising it; never rename one.
 *
 * Pure code: workflows import it (no Node built-ins here).
 */
import { ApplicationFailure } from '@temporalio/common';

/** What is known about one failure type. */
export interface FailureSpec {
  /** Whether the same request may succeed when retried (a busy apiserver) or never will (a bad prefix). */
  retryable: boolean;
  /** Who raises it, for readers. */
  raisedBy: 'change' | 'node' | 'blocklist' | 'policy' | 'quarantine' | 'enforcement' | 'rollout' | 'audit';
}

const FAILURES = {
  // ── change workflow (workflows/change.ts) ──
  /** The change request failed validation; details carry the issues. */
  InvalidChangeRequest: { retryable: false, raisedBy: 'change' },
  /** A target node stayed held by another change for longer than `lockTimeout`. */
  NodeBusy: { retryable: false, raisedBy: 'change' },
  /** A node failed; every node was restored and verified against its snapshot. */
  ChangeRolledBack: { retryable: false, raisedBy: 'change' },
  /** A rollback or revert did not verify: an operator must look. */
  RollbackFailed: { retryable: false, raisedBy: 'change' },
  /** A target node has no worker polling its task queue: reported before anything was applied anywhere. */
  NodeNotPolling: { retryable: false, raisedBy: 'change' },
  /** A health gate of the rollout failed (or was inconclusive and the change was aborted); every node changed so far was restored and verified. */
  RolloutGateFailed: { retryable: false, raisedBy: 'change' },
  /** The API's identity assertion was given and does not hold (bad signature, other change, other request, stale). */
  InvalidIdentityAssertion: { retryable: false, raisedBy: 'change' },

  // ── approvals and change windows (workflows/approval.ts, model/approval-policy.ts) ──
  /** An approver rejected the change; nothing was applied. */
  ApprovalRejected: { retryable: false, raisedBy: 'change' },
  /** Nobody approved in time (the rule's `expiresAfter`); nothing was applied. */
  ApprovalExpired: { retryable: false, raisedBy: 'change' },
  /** An approve/reject update refused: the author approving their own change. */
  SelfApprovalRefused: { retryable: false, raisedBy: 'change' },
  /** An approve/reject update refused: wrong plan digest, missing role, bad assertion, nothing pending. */
  ApprovalRefused: { retryable: false, raisedBy: 'change' },
  /** A node's plan at apply time differs from the approved one: approvals void, applied nodes restored. */
  PlanChanged: { retryable: false, raisedBy: 'change' },
  /** `options.override` without the emergency role (verified); nothing was applied. */
  OverrideRefused: { retryable: false, raisedBy: 'change' },
  /** The approval policy file is missing, unreadable or invalid; the message names the field. */
  InvalidApprovalPolicy: { retryable: false, raisedBy: 'change' },

  // ── node workflow and node activities (workflows/node-change.ts, activities/node-activities.ts) ──
  /**
   * The node workflow's own input failed validation (it was started by something other than
   * a change workflow, or by one of another version); nothing was read or applied.
   */
  InvalidNodeChangeInput: { retryable: false, raisedBy: 'node' },
  /**
   * A value about to go into an `ip` or `nft` command is not of its form (an interface name
   * with a newline, a prefix not in canonical form): refused before anything ran.
   */
  UnsafeCommandArgument: { retryable: false, raisedBy: 'node' },
  /** The node read back different from what the change asked for. */
  VerificationFailed: { retryable: false, raisedBy: 'node' },
  /** A restore round left the node different from its snapshot (or could not run); the node workflow tries again later. */
  RestoreIncomplete: { retryable: true, raisedBy: 'node' },
  RouteApplyFailed: { retryable: false, raisedBy: 'node' },
  LinkApplyFailed: { retryable: false, raisedBy: 'node' },
  VlanApplyFailed: { retryable: false, raisedBy: 'node' },
  AddressApplyFailed: { retryable: false, raisedBy: 'node' },
  RuleApplyFailed: { retryable: false, raisedBy: 'node' },
  ZoneApplyFailed: { retryable: false, raisedBy: 'node' },
  /** A zone membership operation names a zone the node does not have (`patch.zoneMembers.join[i].zone`). */
  ZoneNotFound: { retryable: false, raisedBy: 'node' },
  /** A zone membership operation would put an interface in a second zone (an interface belongs to at most one). */
  ZoneMembershipConflict: { retryable: false, raisedBy: 'node' },
  NatApplyFailed: { retryable: false, raisedBy: 'node' },
  RateLimitApplyFailed: { retryable: false, raisedBy: 'node' },
  /** The kernel lacks a feature the change needs (e.g. 802.1Q VLANs); the message names it. */
  KernelFeatureMissing: { retryable: false, raisedBy: 'node' },
  /** fos1's nftables table holds something fos1 did not write. */
  ForeignState: { retryable: false, raisedBy: 'node' },
  /** A fault injected by a test (node activities' `faults` hook). */
  InjectedFault: { retryable: false, raisedBy: 'node' },
  BlocklistMapFull: { retryable: false, raisedBy: 'node' },
  PermissionDenied: { retryable: false, raisedBy: 'node' },
  /** A pinned map's layout is not the one fos1 expects. */
  BlocklistMapMismatch: { retryable: false, raisedBy: 'node' },
  /** Any other libbpf error: may be transient. */
  BpfError: { retryable: true, raisedBy: 'node' },

  // ── blocklist (activities/blocklist-*.ts) ──
  /** A bad line, prefix or reference; the message names the line or field. */
  InvalidBlocklist: { retryable: false, raisedBy: 'blocklist' },
  BlocklistRefNotFound: { retryable: false, raisedBy: 'blocklist' },
  /** The maps read back different from what was just written. */
  BlocklistVerifyFailed: { retryable: true, raisedBy: 'blocklist' },

  // ── policy change (workflows/policy-change.ts, activities/cilium-policy.ts) ──
  InvalidPolicyChange: { retryable: false, raisedBy: 'policy' },
  PolicyRolledBack: { retryable: false, raisedBy: 'policy' },
  PolicyRollbackFailed: { retryable: false, raisedBy: 'policy' },
  PolicyVerificationFailed: { retryable: false, raisedBy: 'policy' },
  /** 409, or an object another fos1 source owns. */
  PolicyConflict: { retryable: false, raisedBy: 'policy' },
  /** Other 4xx, an object fos1 does not write, a field the schema does not declare. */
  PolicyRejected: { retryable: false, raisedBy: 'policy' },
  PolicyMapOverflow: { retryable: false, raisedBy: 'policy' },
  /** 429, 5xx or an unreachable apiserver. */
  KubeUnavailable: { retryable: true, raisedBy: 'policy' },
  /** A change carries cluster policy, and the cluster worker has no Kubernetes (FOS1_KUBECONFIG unset): nothing was applied. */
  ClusterPolicyUnavailable: { retryable: false, raisedBy: 'policy' },

  // ── quarantine (workflows/quarantine.ts, activities/quarantine.ts) ──
  InvalidQuarantine: { retryable: false, raisedBy: 'quarantine' },
  QuarantineRolledBack: { retryable: false, raisedBy: 'quarantine' },
  QuarantineRollbackFailed: { retryable: false, raisedBy: 'quarantine' },
  QuarantineVerificationFailed: { retryable: false, raisedBy: 'quarantine' },
  NoEndpoint: { retryable: false, raisedBy: 'quarantine' },
  AmbiguousEndpoint: { retryable: false, raisedBy: 'quarantine' },
  /** The address is a host-network pod's, i.e. the node's: endpoint policy cannot isolate it. */
  HostNetworkEndpoint: { retryable: false, raisedBy: 'quarantine' },
  /** The pod is in a system namespace (kube-system, fos1's own, …) that the configuration does not open to quarantine. */
  ProtectedNamespace: { retryable: false, raisedBy: 'quarantine' },
  /** Someone else set the label to another value. */
  LabelConflict: { retryable: false, raisedBy: 'quarantine' },
  QuarantineRejected: { retryable: false, raisedBy: 'quarantine' },
  /** The cluster worker runs without Kubernetes (FOS1_KUBECONFIG unset). */
  QuarantineUnavailable: { retryable: false, raisedBy: 'quarantine' },
  /** The quarantine workflow's `failAfter` test hook. */
  InjectedFailure: { retryable: false, raisedBy: 'quarantine' },

  // ── enforcement (workflows/enforcement.ts) ──
  InvalidEnforcementInput: { retryable: false, raisedBy: 'enforcement' },

  // ── rollouts: inventory and gates (activities/inventory.ts, activities/gates.ts) ──
  /** The inventory file or a Kubernetes Node does not parse; the message names the field. */
  InvalidInventory: { retryable: false, raisedBy: 'rollout' },
  /** The inventory could not be read (file missing, apiserver down): may be transient. */
  InventoryUnavailable: { retryable: true, raisedBy: 'rollout' },
  /** Bad input to a gate activity (a task queue name, a sample window); the message names it. */
  InvalidGateInput: { retryable: false, raisedBy: 'rollout' },
  /** Temporal could not describe a task queue (pollers): may be transient. */
  PollersUnavailable: { retryable: true, raisedBy: 'rollout' },

  // ── audit and revisions (workflows/api-audit.ts, activities/audit-store/revisions.ts) ──
  /** The API's audit batch is malformed (not an array, too long, a bad source name). */
  InvalidAuditBatch: { retryable: false, raisedBy: 'audit' },
  /** A revision to record is malformed, or its change id and node are already recorded with other content. */
  InvalidRevision: { retryable: false, raisedBy: 'audit' },
  /** The revision store could not be reached; retrying is safe (the append is idempotent). */
  RevisionStoreUnavailable: { retryable: true, raisedBy: 'audit' },
} as const satisfies Record<string, FailureSpec>;

/** A failure type fos1 raises. */
export type FailureTypeName = keyof typeof FAILURES;

/** Every failure type, by name (`FailureType.NodeBusy === 'NodeBusy'`). */
export const FailureType = Object.freeze(Object.fromEntries(Object.keys(FAILURES).map((k) => [k, k]))) as { readonly [K in FailureTypeName]: K };

/**
 * Names Temporal itself gives failures fos1 branches on (not raised by fos1): an activity
 * the worker does not register, a workflow id already running.
 */
export const TemporalFailureType = {
  /** An activity type the worker does not register: retrying will not grow it. */
  NotFound: 'NotFoundError',
  WorkflowExecutionAlreadyStarted: 'WorkflowExecutionAlreadyStartedError',
} as const;

/** The summary type of a failure that carried no type anywhere in its cause chain. */
export const UNKNOWN_FAILURE = 'UnknownFailure';

/** Whether retrying a failure of this type can help (unknown types: yes, as Temporal assumes). */
export function isRetryable(type: string): boolean {
  return type in FAILURES ? FAILURES[type as FailureTypeName].retryable : true;
}

/** An ApplicationFailure of a vocabulary type; retryable as the vocabulary says. */
export function failure(type: FailureTypeName, message: string, details?: unknown[]): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: !FAILURES[type].retryable, ...(details ? { details } : {}) });
}

/** A failure as workflows report it: the ApplicationFailure type and its message. */
export interface FailureSummary {
  type: string;
  message: string;
}

/**
 * The type and message of the first typed failure in `err`'s cause chain. Activity and
 * child-workflow failures wrap the ApplicationFailure that was raised; the chain is walked
 * by shape (not `instanceof`, which is unreliable across the workflow sandbox). Without a
 * typed failure: `UnknownFailure` with the innermost message (a timeout's, say).
 */
export function summariseFailure(err: unknown): FailureSummary {
  let current: unknown = err;
  let message = err instanceof Error ? err.message : String(err);
  while (current && typeof current === 'object') {
    const candidate = current as { type?: unknown; message?: unknown; cause?: unknown };
    if (typeof candidate.type === 'string' && candidate.type !== '') {
      return { type: candidate.type, message: String(candidate.message ?? '') };
    }
    if (typeof candidate.message === 'string' && candidate.message !== '') message = candidate.message;
    current = candidate.cause;
  }
  return { type: UNKNOWN_FAILURE, message };
}

/** Verification found the node different from what the change asked for (summarised as `VerificationFailed`). */
export class VerificationError extends Error {
  readonly type = FailureType.VerificationFailed;
  constructor(readonly differences: string[]) {
    super(`read-back differs from the desired state: ${differences.join('; ')}`);
  }
}
