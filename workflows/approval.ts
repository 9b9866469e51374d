/**
 * The approval gate of the change workflow: policy, plan digest, approvals, change windows.
 *
 *   load the policy (local activity, recorded) → emergency override allowed? →
 *   [a rule may ask for approval] plan on every node (dry-run node workflows) → digest of
 *   every node's diff and the strategy → rule → awaiting-approval (durable timer; approve /
 *   reject updates with the caller's verified identity) → before each wave: wait for the
 *   maintenance window / end of freeze / notBefore → where a wave reports its nodes: compare
 *   each node's diff with the approved plan (a change voids the approvals: PlanChanged)
 *
 * The change workflow (workflows/change.ts) calls this through three hooks: `ApprovalGate.open`
 * once the waves are planned, `beforeNode` before each wave starts, `planDrift` where a
 * wave's node summaries arrive. Every command here is behind `patched('approval-gate')` in
 * the caller, so histories from before the gate replay unchanged.
 *
 * Who approves: the API authenticates the caller and signs an identity assertion over the
 * vote (model/approval-policy.ts approvalAssertionSubject), verified here by the same local
 * activity that verifies the author. An update sent straight through Temporal (the Web UI)
 * carries none: it is recorded self-asserted and counts only when the policy says
 * `allowUnverifiedApprovals: true`. The author never approves their own change.
 */
import { condition, defineUpdate, executeChild, ParentClosePolicy, proxyLocalActivities, setCurrentDetails, setHandler, upsertMemo, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { ApprovalActivities } from '../activities/approval';
import type { IdentityActivities } from '../activities/identity';
import { approvalAssertionSubject, matchingRule, needsPlan, nodeDiffDigest, planDigest, type ApprovalAction, type ApprovalPolicy, type ApprovalRule, type ApprovalVote, type ChangeFacts } from '../model/approval-policy';
import type { ChangeRequest } from '../model/change-request';
import { nextOpening, type Schedule } from '../model/change-window';
import { failure, FailureType, summariseFailure, type FailureTypeName } from '../model/failures';
import { canonicalJson } from '../model/identity';
import { nodeTaskQueue, SearchAttributes } from '../model/naming';
import { changeScope, subsystemIntents } from '../model/subsystem';
import { nodeChangeWorkflow, type NodeChangeResult } from './node-change';
import type { AuditTrail } from './support';

const { loadApprovalPolicy } = proxyLocalActivities<ApprovalActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 3 } });
const { verifyIdentity } = proxyLocalActivities<IdentityActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 3 } });

/** The phases the gate puts a change in (part of ChangePhase). */
export type GatePhase = 'planning' | 'awaiting-approval' | 'waiting-for-window' | 'rolling-out';

/** The pending (or settled) approval, as the `status` query shows it. */
export interface ApprovalStatus {
  state: 'pending' | 'approved' | 'rejected' | 'expired' | 'void';
  /** The policy rule that asked for it. */
  rule: string;
  required: number;
  /** Every vote, counting or not (a self-asserted one when unverified approvals are off). */
  received: ApprovalVote[];
  /** Roles an approver must hold. */
  eligibleRoles: string[];
  /** Who may not approve: the author. */
  excluded: string[];
  /** When the request lapses and the change ends with nothing applied (ISO 8601). */
  expiresAt: string;
  /** The plan the approvals are bound to: `sha256:` over every node's diff and the strategy. */
  planDigest: string;
  /** What is being approved: each node's diff (`+ route …`, `- block …`). */
  plan: Record<string, string[]>;
}

/** Why a change waits before its next node (phase `waiting-for-window`). */
export interface WindowStatus {
  waitingUntil: string;
  why: string;
}

/** `approve` / `reject`: a vote for the plan named by `planDigest`. */
export const approveUpdate = defineUpdate<ApprovalStatus, [ApprovalAction]>('approve');
export const rejectUpdate = defineUpdate<ApprovalStatus, [ApprovalAction]>('reject');

/** What the gate needs from the change workflow. */
export interface GateHost {
  request: ChangeRequest;
  /** The nodes the change rolls out to, in order. */
  targets: string[];
  /** The planned waves, part of the digest (undefined: one node at a time in `targets` order). */
  strategy?: unknown;
  /** The author as verified at submit time. */
  identity: { verified: boolean; roles: string[] };
  trail: AuditTrail;
  status: { approval?: ApprovalStatus; window?: WindowStatus };
  setPhase(phase: GatePhase, message: string): void;
  aborted(): boolean;
}

/** The gate ended the change before anything was applied. */
export interface GateStop {
  phase: 'rejected' | 'expired' | 'aborted' | 'rolled-back';
  message: string;
  failureType?: FailureTypeName;
}

/**
 * A node's applied plan as the change sees it: a wave's node summary carries a capped diff,
 * its length and the digest of the whole diff (model/sha256.ts over the canonical JSON).
 */
export interface AppliedPlan {
  node: string;
  outcome: string;
  diff: string[];
  diffLines?: number;
  diffDigest?: string;
}

/** The open gate: what the rest of the change must respect. */
export class ApprovalGate {
  private windowWaits = 0;
  /** Digests of the approved diffs, computed once per node. */
  private readonly approvedDigests = new Map<string, string>();

  private constructor(
    private readonly host: GateHost,
    /** When the change may apply; undefined when nothing holds it (override, automation). */
    private readonly schedule: Schedule | undefined,
    /** The approved plan per node; undefined when no approval was needed. */
    private readonly approvedPlan: Record<string, string[]> | undefined,
  ) {}

  /**
   * Judges the change by the policy; resolves once it may roll out (approved, or no approval
   * needed), or with a {@link GateStop} when it ends before anything is applied.
   */
  static async open(host: GateHost): Promise<ApprovalGate | GateStop> {
    const { request, trail } = host;
    let policy: ApprovalPolicy;
    try {
      policy = await loadApprovalPolicy();
    } catch (err) {
      const why = summariseFailure(err);
      if (why.type !== FailureType.InvalidApprovalPolicy) throw err;
      trail.record('approval policy', 'failed', Date.now(), why.message);
      return { phase: 'rejected', message: `${why.message}; nothing was applied`, failureType: FailureType.InvalidApprovalPolicy };
    }
    const automation = policy.automation.authors.includes(request.author);
    const roles = host.identity.verified ? host.identity.roles : [];

    // The emergency override lifts windows and freezes, never approvals; it takes the role.
    const override = request.options.override;
    if (override) {
      if (!roles.includes(policy.emergencyRole)) {
        const message = `options.override needs the "${policy.emergencyRole}" role on the author's verified identity (${host.identity.verified ? `${request.author} holds ${roles.length > 0 ? roles.join(', ') : 'no roles'}` : 'the author is self-asserted: submit through the API'}); nothing was applied`;
        trail.record('override', 'failed', Date.now(), message);
        return { phase: 'rejected', message, failureType: FailureType.OverrideRefused };
      }
      trail.record('override', 'ok', Date.now(), `emergency override by ${request.author} (role ${policy.emergencyRole}): ${override.reason}; maintenance windows and freezes do not apply`);
    }
    const notBefore = request.options.notBefore !== undefined ? Date.parse(request.options.notBefore) : undefined;
    const windowsApply = !override && (!automation || policy.automation.respectWindows);
    const schedule: Schedule | undefined =
      windowsApply && (policy.windows.length > 0 || policy.freezes.length > 0 || notBefore !== undefined)
        ? { windows: policy.windows, freezes: policy.freezes, ...(notBefore !== undefined ? { notBefore } : {}) }
        : notBefore !== undefined
          ? { windows: [], freezes: [], notBefore }
          : undefined;

    if (!needsPlan(policy)) return new ApprovalGate(host, schedule, undefined);

    // Plan on every node (the dry-run path of the node workflow): the size of the diff
    // decides the rule, and the diffs are what an approval names.
    host.setPhase('planning', 'planning on every node for the approval policy');
    const planned = await planEveryNode(request, host.targets);
    const failed = planned.find((r) => r.outcome !== 'planned');
    if (failed) {
      const message = `planning failed on node ${failed.node} (${failed.error?.type}: ${failed.error?.message}); nothing was applied`;
      trail.record('plan', 'failed', Date.now(), message);
      return { phase: 'rolled-back', message, failureType: FailureType.ChangeRolledBack };
    }
    const nodes = Object.fromEntries(planned.map((r) => [r.node, r.diff]));
    const digest = planDigest({ nodes, strategy: host.strategy });
    const facts: ChangeFacts = {
      targets: host.targets,
      subsystems: changeScope(subsystemIntents(request)),
      operations: planned.reduce((n, r) => n + r.diff.length, 0),
      authorRoles: roles,
      automation,
    };
    const rule = matchingRule(policy, facts);
    trail.record('approval policy', 'ok', Date.now(), rule ? `rule "${rule.name}": ${rule.approvals} approval(s)${rule.approvals > 0 ? ` from role ${rule.approverRole}` : ''}; plan ${digest}` : `no rule matches; plan ${digest}`);
    if (!rule || rule.approvals === 0) return new ApprovalGate(host, schedule, undefined);

    const stop = await awaitApprovals(host, policy, rule, digest, nodes);
    return stop ?? new ApprovalGate(host, schedule, nodes);
  }

  /**
   * Waits, durably, until the change may apply its next node (inside a maintenance window,
   * outside every freeze, after notBefore); returns at once when nothing holds it, and early
   * when the change is aborted. A rollout that leaves its window stops before the next node
   * and resumes where it stopped when the next one opens.
   */
  async beforeNode(): Promise<void> {
    if (!this.schedule) return;
    const { host } = this;
    let waitedSince: number | undefined;
    for (;;) {
      if (host.aborted()) return;
      const opening = nextOpening(Date.now(), this.schedule);
      if (opening.open) break;
      const until = new Date(opening.until).toISOString();
      if (waitedSince === undefined) {
        waitedSince = Date.now();
        this.windowWaits++;
        host.trail.record('wait for window', 'ok', waitedSince, `until ${until}: ${opening.why}`);
      }
      host.status.window = { waitingUntil: until, why: opening.why };
      setCurrentDetails(`**Waiting for the change window** until ${until}: ${opening.why}. An emergency override is a new change with \`override\` (docs/approvals.md).`);
      host.setPhase('waiting-for-window', `waiting until ${until}: ${opening.why}`);
      await condition(() => host.aborted(), opening.until - Date.now());
    }
    if (waitedSince !== undefined) {
      delete host.status.window;
      setCurrentDetails('');
      host.trail.record('window open', 'ok', waitedSince, 'resuming the rollout');
      host.setPhase('rolling-out', 'the window is open: rolling out wave by wave');
    }
  }

  /**
   * Compares the plan a node just applied with the approved one. A difference (another
   * change landed, the node drifted) voids the approvals: returns why, and the caller
   * stops the change and restores every node it touched, this one included. A summary
   * with a digest is compared by digest (its diff may be cut short); otherwise by the diff.
   */
  planDrift(result: AppliedPlan): string | undefined {
    if (!this.approvedPlan || (result.outcome !== 'applied' && result.outcome !== 'unchanged')) return undefined;
    const approved = this.approvedPlan[result.node];
    if (approved !== undefined && this.samePlan(result.node, approved, result)) return undefined;
    const approval = this.host.status.approval;
    if (approval) approval.state = 'void';
    setApprovalAttributes('void', []);
    const why = `the plan on node ${result.node} changed since it was approved (${approval?.planDigest ?? 'unknown plan'}): approvals are void; approve the new plan in a new change`;
    this.host.trail.record('plan check', 'failed', Date.now(), `${why}; approved ${approved?.length ?? 0} line(s), now ${result.diffLines ?? result.diff.length}`);
    return why;
  }

  private samePlan(node: string, approved: string[], applied: AppliedPlan): boolean {
    if (applied.diffDigest === undefined) return canonicalJson(approved) === canonicalJson(applied.diff);
    let digest = this.approvedDigests.get(node);
    if (digest === undefined) {
      digest = nodeDiffDigest(approved);
      this.approvedDigests.set(node, digest);
    }
    return digest === applied.diffDigest;
  }
}

/** Runs the dry-run node workflow on every target, in parallel (a dry run needs no node lock). */
async function planEveryNode(request: ChangeRequest, targets: string[]): Promise<NodeChangeResult[]> {
  return Promise.all(
    targets.map((node) =>
      executeChild(nodeChangeWorkflow, {
        taskQueue: nodeTaskQueue(node),
        workflowId: `${workflowInfo().workflowId}/plan/${node}`,
        parentClosePolicy: ParentClosePolicy.TERMINATE,
        args: [{ changeId: request.id, author: request.author, node, ...(request.desired ? { desired: request.desired } : {}), ...(request.patch ? { patch: request.patch } : {}), dryRun: true }],
      }).catch((err: unknown): NodeChangeResult => ({
        node,
        outcome: 'not-applied',
        diff: [],
        snapshot: { interfaces: [], routes: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [] },
        scope: [],
        error: summariseFailure(err),
        audit: [],
      })),
    ),
  );
}

function setApprovalAttributes(state: ApprovalStatus['state'], approvers: string[]): void {
  upsertSearchAttributes([
    { key: SearchAttributes.approval, value: state },
    { key: SearchAttributes.approvers, value: approvers },
  ]);
}

/**
 * Opens the approval request and waits (durable timer) for enough approvals, a rejection,
 * an abort, or the expiry. Undefined when approved; otherwise how the change ends.
 */
async function awaitApprovals(host: GateHost, policy: ApprovalPolicy, rule: ApprovalRule, digest: string, plan: Record<string, string[]>): Promise<GateStop | undefined> {
  const { request, trail } = host;
  const openedAt = Date.now();
  const approval: ApprovalStatus = {
    state: 'pending',
    rule: rule.name,
    required: rule.approvals,
    received: [],
    eligibleRoles: [rule.approverRole],
    excluded: [request.author],
    expiresAt: new Date(openedAt + rule.expiresAfter).toISOString(),
    planDigest: digest,
    plan,
  };
  host.status.approval = approval;
  const counted = (decision: ApprovalVote['decision']) => approval.received.filter((v) => v.counts && v.decision === decision);

  const vote = async (decision: ApprovalVote['decision'], action: ApprovalAction): Promise<ApprovalStatus> => {
    const at = Date.now();
    let principal = typeof action.by === 'string' && action.by !== '' ? action.by : undefined;
    let verified = false;
    let roles: string[] = [];
    const refuse = (type: FailureTypeName, why: string) => {
      trail.record(decision, 'failed', at, why, principal ?? 'unknown');
      return failure(type, why);
    };
    if (action.assertion !== undefined && action.assertion !== null) {
      try {
        const identity = await verifyIdentity({ request: approvalAssertionSubject(request.id, principal ?? '', decision, action), assertion: action.assertion, workflowStartedAt: at });
        if (identity.verified) {
          verified = true;
          principal = identity.principal;
          roles = identity.roles;
        }
      } catch (err) {
        const why = summariseFailure(err);
        if (why.type !== FailureType.InvalidIdentityAssertion) throw err;
        throw refuse(FailureType.ApprovalRefused, `identity assertion refused: ${why.message}`);
      }
    }
    if (principal === undefined) throw refuse(FailureType.ApprovalRefused, 'say who votes ("by"); approvals through the API carry the caller\'s identity');
    if (principal === request.author) throw refuse(FailureType.SelfApprovalRefused, `${principal} is the author of change ${request.id}: an author cannot ${decision} their own change`);
    // The verification above awaited: the request may have been settled meanwhile.
    if (approval.state !== 'pending') throw refuse(FailureType.ApprovalRefused, `nothing to ${decision}: the approval is ${approval.state}`);
    if (verified && !roles.includes(rule.approverRole)) throw refuse(FailureType.ApprovalRefused, `${principal} does not hold the role "${rule.approverRole}" that rule "${rule.name}" asks approvers for`);
    const counts = verified || policy.allowUnverifiedApprovals;
    if (approval.received.some((v) => v.by === principal && v.counts && counts)) return approval;
    approval.received.push({ by: principal, decision, planDigest: digest, ...(action.reason ? { reason: action.reason.slice(0, 200) } : {}), verified, roles, counts, at: new Date(at).toISOString() });
    if (approval.state === 'pending') setCurrentDetails(details());
    const how = `${verified ? 'verified' : 'self-asserted'}${counts ? '' : '; does not count: unverified approvals are off (allowUnverifiedApprovals)'}`;
    trail.record(decision, 'ok', at, `${decision === 'approve' ? 'approved' : 'rejected'} by ${principal} (${how}) for plan ${digest}${action.reason ? `: ${action.reason.slice(0, 200)}` : ''}`, principal);
    return approval;
  };
  const validator = (decision: string) => (action: ApprovalAction) => {
    if (approval.state !== 'pending') throw new Error(`nothing to ${decision}: the approval is ${approval.state}`);
    if (typeof action?.planDigest !== 'string') throw new Error(`planDigest is required: name the plan you reviewed (status.approval.planDigest, now ${digest})`);
    if (action.planDigest !== digest) throw new Error(`planDigest ${action.planDigest} is not the plan awaiting approval (${digest}); review the current plan`);
  };
  setHandler(approveUpdate, (action) => vote('approve', action), { validator: validator('approve') });
  setHandler(rejectUpdate, (action) => vote('reject', action), { validator: validator('reject') });

  setApprovalAttributes('pending', [rule.approverRole]);
  // The Web UI's "Current Details" (workflow metadata, not a command: free to change).
  const details = () => {
    const votes = approval.received.map((v) => `- ${v.by}: ${v.decision}${v.counts ? '' : ' (not counted)'}`);
    return [
      `**Awaiting approval** (rule \`${rule.name}\`): ${counted('approve').length} of ${rule.approvals} from role \`${rule.approverRole}\`, not by the author ${request.author}, before ${approval.expiresAt}.`,
      `Plan \`${digest}\`.`,
      `Approve: \`fos1 approve ${request.id}\` (or POST /v1/changes/${request.id}/approve); reject: \`fos1 reject ${request.id} --reason …\`.`,
      ...(votes.length > 0 ? ['', 'Votes:', ...votes] : []),
    ].join('\n');
  };
  setCurrentDetails(details());
  upsertMemo({ approval: { rule: rule.name, required: rule.approvals, eligibleRoles: [rule.approverRole], notBy: request.author, expiresAt: approval.expiresAt, planDigest: digest } });
  trail.record('approval requested', 'ok', openedAt, `rule "${rule.name}": ${rule.approvals} approval(s) from role ${rule.approverRole}, not ${request.author}, before ${approval.expiresAt}; plan ${digest}`);
  host.setPhase('awaiting-approval', `needs ${rule.approvals} approval(s) from role "${rule.approverRole}" (not the author ${request.author}) before ${approval.expiresAt}; plan ${digest}`);

  const settled = await condition(() => counted('approve').length >= rule.approvals || counted('reject').length > 0 || host.aborted(), rule.expiresAfter);
  setCurrentDetails('');
  const received = `${counted('approve').length} of ${rule.approvals} approval(s)`;
  if (settled && counted('reject').length > 0) {
    const [rejection] = counted('reject');
    approval.state = 'rejected';
    setApprovalAttributes('rejected', []);
    return { phase: 'rejected', message: `rejected by ${rejection?.by}${rejection?.reason ? `: ${rejection.reason}` : ''}; nothing was applied`, failureType: FailureType.ApprovalRejected };
  }
  if (settled && counted('approve').length >= rule.approvals) {
    approval.state = 'approved';
    setApprovalAttributes('approved', []);
    trail.record('approved', 'ok', openedAt, `${received} (${counted('approve').map((v) => v.by).join(', ')}) for plan ${digest}`);
    return undefined;
  }
  if (settled) {
    approval.state = 'void';
    setApprovalAttributes('void', []);
    return { phase: 'aborted', message: 'aborted while awaiting approval; nothing was applied' };
  }
  approval.state = 'expired';
  setApprovalAttributes('expired', []);
  const message = `approval expired: ${received} within ${rule.expiresAfter / 1000}s (rule "${rule.name}"); nothing was applied`;
  trail.record('approval expired', 'failed', openedAt, message);
  return { phase: 'expired', message, failureType: FailureType.ApprovalExpired };
}
