/**
 * Enforcement workflows: IDS/DPI decisions become durable, expiring actions.
 *
 *   ingest worker (rules) ──signalWithStart(verdict)──► enforcementWorkflow(target)
 *        one workflow per target prefix (id from the target), so 10,000 alerts about one
 *        source are one workflow; repeated verdicts extend, stronger ones escalate
 *        ├─ guard: allow-lists and prefix bound (refusals audited)
 *        ├─ coordinator lease: caps on active blocks and new blocks/min, and one
 *        │  enforcement change at a time (see below)
 *        ├─ child changeWorkflow (author "fos1-enforcer", patch blocklist.upsert) on the
 *        │  cluster queue → every node's eBPF blocklist through the normal change path
 *        ├─ durable timer → child changeWorkflow (patch blocklist.remove) lifts the block
 *        └─ remembers the offence for `memory`, so a repeat offender's next block is
 *           longer (fail2ban's bantime.increment); then completes. Continue-as-new keeps
 *           long-lived targets' histories bounded.
 *
 * Why a coordinator: a `patch` is resolved against the node's snapshot and converged as
 * a whole, so two enforcement changes running at once on one node could each write the
 * blocklist without the other's entry. The coordinator grants one lease at a time, and
 * because it sees every block start and lift it is also where the cluster-wide caps live.
 *
 * Workflows decide, they do not evaluate rules: verdicts arrive already decided.
 */
import {
  ApplicationFailure,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  executeChild,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  proxySinks,
  setHandler,
  sleep,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { AuditRecord, AuditSinks } from '../model/audit';
import type { ChangeRequestInput } from '../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../model/naming';
import { actionStrength, escalatedDuration, type Decision, type EnforcementAction } from '../rules/decision';
import { EnforcementGuard, type GuardConfig, type GuardRefusal } from '../rules/guard';
import { changeWorkflow } from './change';

/** Author of every change enforcement makes; approval gates let it through, audits name it. */
export const ENFORCER = 'fos1-enforcer';

/** Workflow id of the singleton coordinator. */
export const ENFORCEMENT_COORDINATOR_ID = 'fos1-enforcement-coordinator';

/** Failure types of enforcement workflows. */
export const EnforcementFailureType = {
  InvalidEnforcementInput: 'InvalidEnforcementInput',
} as const;

/** Input of {@link enforcementWorkflow}. */
export interface EnforcementInput {
  /** Canonical prefix this workflow enforces on (its workflow id is derived from it). */
  target: string;
  /** Nodes whose blocklists carry the block. */
  nodes: string[];
  guard: GuardConfig;
  /** History length past which the workflow continues as new (default 2000; tests lower it). */
  continueAsNewAfter?: number;
  /** Carried across continue-as-new. */
  carried?: EnforcementState;
}

/** An action in force. */
export interface ActiveAction {
  action: EnforcementAction;
  rule: string;
  reason: string;
  durationMs: number;
  /** How long the offence is remembered after the action lifts. */
  memoryMs: number;
  startedAt: string;
  expiresAt: string;
  /** Whether the action reached the nodes (blocks) or could only be recorded (others). */
  enforced: boolean;
}

/** What the workflow remembers about its target. */
export interface EnforcementState {
  /** Offences within memory: the n-th block lasts base × factor^(n-1). */
  offences: number;
  /** Until when the latest offence still counts (ISO 8601). */
  rememberUntil?: string;
  active?: ActiveAction;
  verdictsReceived: number;
  /** Runs before this one (continue-as-new). */
  continuedRuns?: number;
  /** Every block this workflow applied, oldest first (bounded). */
  blocks: { startedAt: string; durationMs: number; changeId: string }[];
  refusals: { at: string; code: GuardRefusal['code'] | 'change-failed'; reason: string }[];
  audit: AuditRecord[];
}

/** Answer of the `enforcement` query. */
export interface EnforcementStatus extends EnforcementState {
  target: string;
  phase: 'active' | 'remembering' | 'done';
}

/** Who lifts a block early, and why (for the audit trail). */
export interface OperatorLift {
  by?: string;
  reason?: string;
}

export const verdictSignal = defineSignal<[Decision]>('verdict');
/** An operator lifts the target's action now and clears its offences (a false positive). */
export const liftSignal = defineSignal<[OperatorLift]>('lift');
export const enforcementQuery = defineQuery<EnforcementStatus>('enforcement');

const { audit: auditSink } = proxySinks<AuditSinks>();

const MAX_KEPT = 50;

/** Enforces decisions about one target until nothing is active and its offences are forgotten. */
export async function enforcementWorkflow(input: EnforcementInput): Promise<EnforcementStatus> {
  if (!input || typeof input.target !== 'string' || !Array.isArray(input.nodes) || input.nodes.length === 0 || !input.guard) {
    throw ApplicationFailure.create({
      type: EnforcementFailureType.InvalidEnforcementInput,
      message: 'enforcement input needs target (a prefix), nodes (at least one) and guard',
      nonRetryable: true,
    });
  }
  const guard = new EnforcementGuard(input.guard);
  const state: EnforcementState = input.carried ?? { offences: 0, verdictsReceived: 0, blocks: [], refusals: [], audit: [] };
  const pending: Decision[] = [];
  let leaseSequence = 0;
  let currentLease = '';
  let phase: EnforcementStatus['phase'] = state.active ? 'active' : 'remembering';

  let operatorLift: OperatorLift | undefined;
  setHandler(verdictSignal, (decision) => {
    pending.push(decision);
  });
  setHandler(liftSignal, (request) => {
    operatorLift ??= request ?? {};
  });
  setHandler(enforcementQuery, () => ({ target: input.target, phase, ...state }));

  for (;;) {
    if (state.active) {
      const remaining = Date.parse(state.active.expiresAt) - Date.now();
      // The durable timer: survives worker and server restarts; fires at expiry.
      const woke = remaining > 0 ? await condition(() => pending.length > 0 || operatorLift !== undefined, remaining) : false;
      if (!woke || operatorLift) await lift();
    } else if (operatorLift) {
      // Nothing active: the operator's word still clears the record below.
      await lift();
    } else {
      const memoryLeft = state.rememberUntil ? Date.parse(state.rememberUntil) - Date.now() : 0;
      if (pending.length === 0 && (memoryLeft <= 0 || !(await condition(() => pending.length > 0, memoryLeft)))) break;
    }
    if (pending.length > 0) await handleVerdicts(pending.splice(0, pending.length));
    // Continue only with nothing pending: verdicts that arrived while a change ran are
    // handled first, so none is lost to the new run.
    if (pending.length === 0 && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > (input.continueAsNewAfter ?? 2000))) {
      trimState();
      state.continuedRuns = (state.continuedRuns ?? 0) + 1;
      await continueAsNew<typeof enforcementWorkflow>({ ...input, carried: state });
    }
  }
  phase = 'done';
  record('done', 'ok', Date.now(), `forgotten after ${state.offences} offence(s)`);
  return { target: input.target, phase, ...state };

  /** Applies a batch of verdicts: the strongest one decides. */
  async function handleVerdicts(batch: Decision[]): Promise<void> {
    state.verdictsReceived += batch.length;
    const strongest = batch.reduce((a, b) => (actionStrength(b.action) > actionStrength(a.action) ? b : a));
    if (strongest.action === 'allow' || strongest.action === 'notify') {
      record('verdict', 'skipped', Date.now(), `${strongest.action} from ${strongest.rule}: nothing to enforce`);
      return;
    }
    const startedAt = Date.now();
    const refusal = guard.checkTarget(input.target);
    if (refusal) {
      refuse(refusal.code, refusal.reason, startedAt);
      return;
    }
    const active = state.active;
    if (active && actionStrength(strongest.action) <= actionStrength(active.action)) {
      await extend(active, startedAt);
      return;
    }
    // A new offence (nothing active, or a stronger action than the one in force).
    const offence = state.offences + 1;
    const durationMs = escalatedDuration(strongest.durationMs, strongest.escalation, offence);
    let expiresAt = new Date(startedAt + durationMs).toISOString();
    let enforced = false;
    let changeId = '';
    if (strongest.action === 'block') {
      const outcome = await changeBlocklist('block', { upsertFor: { reason: strongest.reason, durationMs } }, !active || active.action !== 'block');
      if (!outcome.ok) {
        refuse(outcome.code, outcome.reason, startedAt);
        return;
      }
      enforced = true;
      changeId = outcome.changeId;
      expiresAt = outcome.expiresAt ?? expiresAt;
      state.blocks.push({ startedAt: new Date(startedAt).toISOString(), durationMs, changeId });
    }
    state.offences = offence;
    state.rememberUntil = new Date(Date.parse(expiresAt) + strongest.memoryMs).toISOString();
    state.active = {
      action: strongest.action,
      rule: strongest.rule,
      reason: strongest.reason,
      durationMs,
      memoryMs: strongest.memoryMs,
      startedAt: new Date(startedAt).toISOString(),
      expiresAt,
      enforced,
    };
    phase = 'active';
    record(
      strongest.action,
      enforced ? 'ok' : 'skipped',
      startedAt,
      `${input.target} for ${durationMs / 1000}s (offence ${offence}) by ${strongest.rule}${enforced ? ` via change ${changeId}` : ': recorded only, the change path has no ' + strongest.action + ' step yet'}`,
    );
  }

  /**
   * A repeated verdict while an action is in force: push the expiry out to a full
   * duration from now. Only worth a change when it moves the expiry by a tenth of the
   * duration or more; a burst of alerts must not become a burst of changes.
   */
  async function extend(active: ActiveAction, startedAt: number): Promise<void> {
    if (startedAt + active.durationMs - Date.parse(active.expiresAt) < active.durationMs / 10) return;
    let expiresAt = new Date(startedAt + active.durationMs).toISOString();
    if (active.action === 'block' && active.enforced) {
      const outcome = await changeBlocklist('extend', { upsertFor: { reason: active.reason, durationMs: active.durationMs } }, false);
      if (!outcome.ok) {
        refuse(outcome.code, outcome.reason, startedAt);
        return;
      }
      expiresAt = outcome.expiresAt ?? expiresAt;
    }
    active.expiresAt = expiresAt;
    state.rememberUntil = new Date(Date.parse(expiresAt) + active.memoryMs).toISOString();
    record('extend', 'ok', startedAt, `${input.target} until ${expiresAt}`);
  }

  /** The durable timer fired: lift the action (retrying until the change path takes it). */
  async function lift(): Promise<void> {
    const active = state.active;
    if (!active) {
      if (operatorLift) {
        record('lift', 'skipped', Date.now(), `nothing active on ${input.target}; offences forgotten at the request of ${operatorLift.by ?? 'an operator'}`, operatorLift.by ?? 'operator');
        state.offences = 0;
        state.rememberUntil = new Date(Date.now()).toISOString();
        operatorLift = undefined;
      }
      return;
    }
    const startedAt = Date.now();
    if (active.action === 'block' && active.enforced) {
      for (let attempt = 1; ; attempt++) {
        const outcome = await changeBlocklist('lift', { remove: true }, false);
        if (outcome.ok) break;
        record('lift', 'failed', startedAt, `attempt ${attempt}: ${outcome.reason}; retrying in 30s`);
        await sleep(30_000);
      }
    }
    state.active = undefined;
    phase = 'remembering';
    if (operatorLift) {
      // A person said this was wrong: forget the offences too, so the next verdict about
      // the target is a first offence again, and let the workflow end.
      record('lift', 'ok', startedAt, `${active.action} on ${input.target} lifted early by ${operatorLift.by ?? 'an operator'}${operatorLift.reason ? `: ${operatorLift.reason}` : ''}; offences forgotten`, operatorLift.by ?? 'operator');
      state.offences = 0;
      state.rememberUntil = new Date(Date.now()).toISOString();
      pending.length = 0;
      operatorLift = undefined;
      return;
    }
    record('lift', 'ok', startedAt, `${active.action} on ${input.target} lifted at expiry`);
  }

  /**
   * Runs one blocklist change under the coordinator's lease. `newBlock` asks the
   * coordinator to apply the caps (extensions and lifts are never refused).
   */
  async function changeBlocklist(
    step: 'block' | 'extend' | 'lift',
    what: { upsertFor?: { reason: string; durationMs: number }; remove?: true },
    newBlock: boolean,
  ): Promise<{ ok: true; changeId: string; expiresAt?: string } | { ok: false; code: GuardRefusal['code'] | 'change-failed'; reason: string }> {
    const grant = await acquireLease(newBlock);
    if (!grant.granted) return { ok: false, code: grant.code ?? 'too-many-active-blocks', reason: grant.reason ?? 'refused by the coordinator' };
    const changeId = changeIdFor(step);
    // The block's time starts when it is applied, not when the verdict arrived: waiting
    // for the lease behind other changes must not eat into (or, for a short block, past)
    // its duration — the change workflow refuses an expiry already in the past.
    const expiresAt = what.upsertFor ? new Date(Date.now() + what.upsertFor.durationMs).toISOString() : undefined;
    const blocklist = {
      upsert: what.upsertFor && expiresAt ? [{ cidr: input.target, reason: what.upsertFor.reason, expiresAt }] : [],
      remove: what.remove ? [input.target] : [],
    };
    let blockActive = state.active?.action === 'block' && state.active.enforced;
    try {
      const request: ChangeRequestInput = {
        id: changeId,
        author: ENFORCER,
        reason: `automated ${step} of ${input.target}${state.active ? ` (${state.active.rule})` : ''}`.slice(0, 1000),
        targets: input.nodes,
        patch: { blocklist },
      };
      await executeChild(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(changeId), args: [request] });
      blockActive = step !== 'lift';
      return expiresAt ? { ok: true, changeId, expiresAt } : { ok: true, changeId };
    } catch (err) {
      const cause = err instanceof ChildWorkflowFailure && err.cause instanceof ApplicationFailure ? err.cause : undefined;
      return { ok: false, code: 'change-failed', reason: `change ${changeId} failed${cause?.type ? ` (${cause.type})` : ''}: ${cause?.message ?? (err instanceof Error ? err.message : String(err))}` };
    } finally {
      await releaseLease(blockActive);
    }
  }

  async function acquireLease(newBlock: boolean): Promise<LeaseGrant> {
    for (;;) {
      const requestId = `${workflowInfo().runId}-${++leaseSequence}`;
      let grant: LeaseGrant | undefined;
      setHandler(leaseGrantSignal, (g) => {
        if (g.requestId === requestId) {
          grant = g;
        } else if (g.granted) {
          // A grant for a request given up on: hand it straight back so nobody waits on it.
          void signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: g.requestId, target: input.target });
        }
      });
      currentLease = requestId;
      await signalCoordinator(acquireSignal, {
        requester: workflowInfo().workflowId,
        requestId,
        target: input.target,
        newBlock,
        maxActiveBlocks: input.guard.maxActiveBlocks,
        maxNewBlocksPerMinute: input.guard.maxNewBlocksPerMinute,
      });
      // A coordinator that was terminated or reset forgets its queue; ask again rather
      // than wait for ever.
      if (await condition(() => grant !== undefined, LEASE_WAIT_MS)) return grant!;
      record('lease', 'failed', Date.now() - LEASE_WAIT_MS, `no answer from the coordinator in ${LEASE_WAIT_MS / 60_000} min; asking again`);
    }
  }

  async function releaseLease(blockActive: boolean): Promise<void> {
    await signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: currentLease, target: input.target, blockActive });
  }

  function refuse(code: GuardRefusal['code'] | 'change-failed', reason: string, startedAt: number): void {
    state.refusals.push({ at: new Date(startedAt).toISOString(), code, reason });
    record('refused', 'failed', startedAt, `${code}: ${reason}`);
  }

  function record(step: string, result: AuditRecord['result'], startedAt: number, detail: string, actor = ENFORCER): void {
    const entry: AuditRecord = {
      changeId: workflowInfo().workflowId,
      actor,
      step,
      result,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: Date.now() - startedAt,
      detail,
    };
    state.audit.push(entry);
    auditSink.record(entry);
  }

  function changeIdFor(step: string): string {
    // Change ids are DNS labels; the workflow clock makes the id unique per run and step.
    return `enf-${step}-${hash(input.target)}-${Date.now().toString(36)}`;
  }

  function trimState(): void {
    state.audit = state.audit.slice(-MAX_KEPT);
    state.blocks = state.blocks.slice(-MAX_KEPT);
    state.refusals = state.refusals.slice(-MAX_KEPT);
  }
}

// ─── coordinator ────────────────────────────────────────────────────────────────────

/** A request for the enforcement lease. */
export interface LeaseRequest {
  requester: string;
  /** Unique per request; the grant and the release carry it back. */
  requestId: string;
  target: string;
  /** A block that is not yet active: subject to the caps. */
  newBlock: boolean;
  maxActiveBlocks: number;
  maxNewBlocksPerMinute: number;
}

/** The coordinator's answer. */
export interface LeaseGrant {
  requestId: string;
  granted: boolean;
  code?: GuardRefusal['code'];
  reason?: string;
}

/** What the coordinator tracks; carried across continue-as-new. */
export interface CoordinatorState {
  activeBlocks: string[];
  recentStarts: number[];
  queue: LeaseRequest[];
  granted: number;
  refused: number;
}

/** Answer of the coordinator's `coordinator` query. */
export interface CoordinatorStatus extends CoordinatorState {
  holder: string | null;
}

export const acquireSignal = defineSignal<[LeaseRequest]>('acquire');
/** Ends a lease; `blockActive` (absent for a stale grant handed back) updates the active-block set. */
export const releaseSignal = defineSignal<[{ requester: string; requestId: string; target: string; blockActive?: boolean }]>('release');
export const leaseGrantSignal = defineSignal<[LeaseGrant]>('leaseGrant');
export const coordinatorQuery = defineQuery<CoordinatorStatus>('coordinator');

/** A lease not released in this time is taken back (its holder crashed or hangs). */
const LEASE_TIMEOUT_MS = 10 * 60_000;
/** How long an enforcement workflow waits for the coordinator's answer before asking again. */
const LEASE_WAIT_MS = 15 * 60_000;

/**
 * The singleton that serialises enforcement changes and applies the cluster-wide caps.
 * Started on demand by the first enforcement workflow that needs it; never completes,
 * continues as new to keep its history short.
 */
export async function enforcementCoordinatorWorkflow(carried?: CoordinatorState): Promise<void> {
  const state: CoordinatorState = carried ?? { activeBlocks: [], recentStarts: [], queue: [], granted: 0, refused: 0 };
  const active = new Set(state.activeBlocks);
  let holder: { requester: string; requestId: string; target: string } | null = null;

  setHandler(acquireSignal, (req) => {
    state.queue.push(req);
  });
  setHandler(releaseSignal, (rel) => {
    if (rel.blockActive === true) active.add(rel.target);
    else if (rel.blockActive === false) active.delete(rel.target);
    if (holder && holder.requestId === rel.requestId) holder = null;
  });
  setHandler(coordinatorQuery, () => ({ ...state, activeBlocks: [...active], holder: holder?.requester ?? null }));

  for (let served = 0; ; served++) {
    await condition(() => state.queue.length > 0);
    const req = state.queue.shift()!;
    const now = Date.now();
    state.recentStarts = state.recentStarts.filter((t) => now - t < 60_000);
    let grant: LeaseGrant = { requestId: req.requestId, granted: true };
    if (req.newBlock && !active.has(req.target)) {
      const caps = new EnforcementGuard({ allowLists: {}, minPrefixLengthV4: 0, minPrefixLengthV6: 0, maxActiveBlocks: req.maxActiveBlocks, maxNewBlocksPerMinute: req.maxNewBlocksPerMinute });
      const refusal = caps.checkCaps(active.size, state.recentStarts, now);
      if (refusal) grant = { requestId: req.requestId, granted: false, code: refusal.code, reason: refusal.reason };
    }
    if (!grant.granted) {
      state.refused++;
      await notify(req.requester, grant);
    } else {
      state.granted++;
      if (req.newBlock && !active.has(req.target)) state.recentStarts.push(now);
      holder = { requester: req.requester, requestId: req.requestId, target: req.target };
      if (await notify(req.requester, grant)) {
        if (!(await condition(() => holder === null, LEASE_TIMEOUT_MS))) holder = null;
      } else {
        holder = null;
      }
    }
    if (state.queue.length === 0 && (served >= 500 || workflowInfo().continueAsNewSuggested)) {
      await continueAsNew<typeof enforcementCoordinatorWorkflow>({ ...state, activeBlocks: [...active] });
    }
  }
}

async function notify(requester: string, grant: LeaseGrant): Promise<boolean> {
  try {
    await getExternalWorkflowHandle(requester).signal(leaseGrantSignal, grant);
    return true;
  } catch {
    // The requester is gone (terminated, timed out): nothing to grant.
    return false;
  }
}

/** Signals the coordinator, starting it first if it is not running. */
async function signalCoordinator<T extends unknown[]>(signal: ReturnType<typeof defineSignal<T>>, ...args: T): Promise<void> {
  try {
    await getExternalWorkflowHandle(ENFORCEMENT_COORDINATOR_ID).signal(signal, ...args);
    return;
  } catch {
    // Not running yet (or between runs): start it, then signal again.
  }
  try {
    await startChild(enforcementCoordinatorWorkflow, {
      workflowId: ENFORCEMENT_COORDINATOR_ID,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [undefined],
      // The coordinator outlives whichever enforcement workflow happened to start it.
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  await getExternalWorkflowHandle(ENFORCEMENT_COORDINATOR_ID).signal(signal, ...args);
}

/** FNV-1a, 32 bits, base 36: a short stable tag of a target for change ids. */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}
