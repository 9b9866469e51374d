/**
 * Enforcement workflows: IDS/DPI decisions become durable, expiring actions.
 *
 *   ingest worker (rules) ──signalWithStart(verdict)──► enforcementWorkflow(target)
 *        one workflow per target prefix (id from the target), so 10,000 alerts about one
 *        source are one workflow; repeated verdicts extend, stronger ones escalate
 *        ├─ guard: allow-lists and prefix bound (refusals audited)
 *        ├─ caps on active blocks and new blocks/min, kept by the coordinator: a new block
 *        │  needs its admission (see below); extensions and lifts do not ask
 *        ├─ child changeWorkflow (author "fos1-enforcer", patch blocklist.upsert) on the
 *        │  cluster queue → every node's eBPF blocklist through the normal change path
 *        ├─ rate-limit verdicts: child changeWorkflow (patch rateLimits.upsert) → every
 *        │  node's per-source limit in the eBPF firewall (not counted against the block caps)
 *        ├─ durable timer → child changeWorkflow (patch blocklist.remove) lifts the block
 *        └─ remembers the offence for `memory`, so a repeat offender's next block is
 *           longer (fail2ban's bantime.increment); then completes. Continue-as-new keeps
 *           long-lived targets' histories bounded.
 *
 * Why a coordinator (workflows/enforcement-coordinator.ts): the caps are cluster-wide, so one place must count every block that
 * starts and lifts. It does not serialise changes: two enforcement changes at once are
 * safe because every change takes the node's lock (`node-change/<node>`, the node
 * workflow's id) and resolves its blocklist patch against what the node holds under that
 * lock, so neither can write the blocklist without the other's entry.
 *
 * Admission of a new block, fastest first:
 * - the ingest bridge asks the coordinator with an Update (`admit`, update-with-start)
 *   before it signals, and passes the admission along with the verdict. The coordinator
 *   counts it as a reservation (an active block and a new start) until this workflow
 *   claims it — together with starting the change, no round trip — or hands it back unused
 *   (an extension needs none), or it expires;
 * - without a usable admission (a verdict signalled by other means, a refused or expired
 *   one) this workflow asks itself: an `acquire` signal and a `leaseGrant` back.
 *
 * Workflows decide, they do not evaluate rules: verdicts arrive already decided.
 */
import { condition, continueAsNew, defineQuery, defineSignal, executeChild, patched, proxyActivities, proxyLocalActivities, proxySinks, setHandler, workflowInfo } from '@temporalio/workflow';
import type { EnforcementConfigActivities } from '../activities/enforcement-config';
import type { NodeActivities } from '../activities/node-activities';
import type { AuditRecord } from '../model/audit';
import type { MetricsSinks } from '../model/metrics';
import type { ChangeRequestInput } from '../model/change-request';
import { actionStrength, escalatedDuration, type Admission, type Decision, type EnforcementAction } from '../model/enforcement-decision';
import { authorityFieldsIn, effectiveGuardConfig, EnforcementGuard, type CapKind, type GuardConfig, type GuardRefusal, type NodeProtectedAddresses } from '../model/enforcement-guard';
import { failure, FailureType, summariseFailure } from '../model/failures';
import { parseCidr } from '../model/ip';
import { CLUSTER_TASK_QUEUE, changeWorkflowId, nodeTaskQueue } from '../model/naming';
import { shortHash } from '../model/short-hash';
import { changeWorkflow } from './change';
import { acquireSignal, claimSignal, leaseGrantSignal, releaseSignal, signalCoordinator, type LeaseGrant } from './enforcement-coordinator';
import { enforceQuarantine, liftQuarantine, type QuarantinedEndpoint, type QuarantineRefusalCode } from './quarantine';
import { AuditTrail, retryUntil } from './support';

/** Why enforcement did not act: the guard's reasons, a change that failed, a rate limit on a prefix. */
export type RefusalCode =
  | GuardRefusal['code']
  | 'change-failed'
  | 'not-a-host'
  | QuarantineRefusalCode
  /** A verdict (or a request to the coordinator) that carried guard or cap fields of its own. */
  | 'invalid-request'
  /** The cluster worker's configuration, or a target node's protected addresses, could not be read. */
  | 'guard-unavailable'
  | 'caps-unavailable';

/**
 * Patch: the guard from the cluster worker's configuration and the nodes' own addresses
 * (activities), input and signals carrying guard or caps refused, caps on rate limits and
 * quarantines. Executions recorded before it keep `input.guard` and the old command order.
 */
export const GUARD_FROM_WORKER_PATCH = 'guard-from-worker-config';
/** How old the workflow's copy of the guard may get before a decision reads it again. */
const GUARD_REFRESH_MS = 5 * 60_000;

/** Refusals and unreachable nodes for the worker's metrics (a sink: no command, nothing on replay). */
const { metrics } = proxySinks<MetricsSinks>();

const { readEnforcementConfig } = proxyLocalActivities<EnforcementConfigActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 5 } });
/** Each node's own addresses, on its task queue; bounded, so a node that is down refuses the verdict rather than stalling it. */
const nodeActivities = (node: string) =>
  proxyActivities<NodeActivities>({ taskQueue: nodeTaskQueue(node), startToCloseTimeout: '20s', scheduleToCloseTimeout: '1 minute', retry: { initialInterval: '1s', maximumAttempts: 3 } });

const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Author of every change enforcement makes; approval gates let it through, audits name it. */
export const ENFORCER = 'fos1-enforcer';

/** Input of {@link enforcementWorkflow}. */
export interface EnforcementInput {
  /** Canonical prefix this workflow enforces on (its workflow id is derived from it). */
  target: string;
  /** Nodes whose blocklists carry the block. */
  nodes: string[];
  /**
   * Only executions recorded before {@link GUARD_FROM_WORKER_PATCH} take the guard from here;
   * a new one that is given a guard (or any cap field) fails `InvalidEnforcementInput`.
   */
  guard?: GuardConfig;
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
  /** Whether the action reached the nodes (blocks, rate limits) or could only be recorded (others). */
  enforced: boolean;
  /** The rate of an enforced rate limit (packets per second). */
  rateLimitPps?: number;
  /** The labelled pod of an enforced quarantine (workflows/quarantine.ts). */
  quarantined?: QuarantinedEndpoint;
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
  refusals: { at: string; code: RefusalCode; reason: string }[];
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

const MAX_KEPT = 50;

/** How long an enforcement workflow waits for the coordinator's answer before asking again. */
const LEASE_WAIT_MS = 15 * 60_000;
/** An admission with less than this left is not used (it could lapse while the change starts). */
const ADMISSION_MARGIN_MS = 10_000;

/** Enforces decisions about one target until nothing is active and its offences are forgotten. */
export async function enforcementWorkflow(input: EnforcementInput): Promise<EnforcementStatus> {
  // Evaluated once, first: an execution recorded before the patch replays the old path throughout.
  const fromWorker = patched(GUARD_FROM_WORKER_PATCH);
  if (!fromWorker && (!input || typeof input.target !== 'string' || !Array.isArray(input.nodes) || input.nodes.length === 0 || !input.guard)) {
    throw failure(FailureType.InvalidEnforcementInput, 'enforcement input needs target (a prefix), nodes (at least one) and guard');
  }
  if (fromWorker) input = validateInput(input);
  /** The guard in force: the input's (old path), or read from the worker and the nodes (see {@link ensureGuard}). */
  let guard: EnforcementGuard | undefined = fromWorker ? undefined : new EnforcementGuard(input.guard!);
  let guardReadAt = 0;
  const state: EnforcementState = input.carried ?? { offences: 0, verdictsReceived: 0, blocks: [], refusals: [], audit: [] };
  // Records go into the state, so they travel across continue-as-new.
  const trail = new AuditTrail(workflowInfo().workflowId, ENFORCER, { records: state.audit });
  const pending: Decision[] = [];
  let leaseSequence = 0;
  let phase: EnforcementStatus['phase'] = state.active ? 'active' : 'remembering';

  let operatorLift: OperatorLift | undefined;
  setHandler(verdictSignal, (decision) => {
    const carried = fromWorker ? authorityFieldsIn(decision) : [];
    if (carried.length > 0) {
      // A verdict that brings its own guard or caps decides nothing; it is audited.
      refuse('invalid-request', `verdict field(s) ${carried.join(', ')} refused: the guard and its caps come from the cluster worker's configuration (FOS1_GUARD_FILE), never from a signal`, Date.now());
      return;
    }
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
      // This run's audit records reach the store first (docs/audit.md); a verdict that arrives
      // meanwhile is handled before continuing, so none is lost to the new run.
      await trail.flush();
      if (pending.length > 0) continue;
      trimState();
      state.continuedRuns = (state.continuedRuns ?? 0) + 1;
      // Never the guard: the next run reads the worker's (an old run's input.guard stops here).
      const { guard: _dropped, ...rest } = input;
      await continueAsNew<typeof enforcementWorkflow>({ ...rest, carried: state });
    }
  }
  phase = 'done';
  record('done', 'ok', Date.now(), `forgotten after ${state.offences} offence(s)`);
  return { target: input.target, phase, ...state };

  /**
   * Applies a batch of verdicts: the strongest one decides. Admissions that came with the
   * batch and were not used are handed back, so they stop counting against the caps.
   */
  async function handleVerdicts(batch: Decision[]): Promise<void> {
    const admissions = batch.flatMap((d) => (d.admission ? [d.admission] : []));
    try {
      await decide(batch, admissions);
    } finally {
      // Not awaited; a lost hand-back only holds the slot until the admission lapses.
      for (const unused of admissions) signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: unused.token, target: input.target, unused: true }).catch(() => undefined);
    }
  }

  async function decide(batch: Decision[], admissions: Admission[]): Promise<void> {
    state.verdictsReceived += batch.length;
    const strongest = batch.reduce((a, b) => (actionStrength(b.action) > actionStrength(a.action) ? b : a));
    if (strongest.action === 'allow' || strongest.action === 'notify') {
      record('verdict', 'skipped', Date.now(), `${strongest.action} from ${strongest.rule}: nothing to enforce`);
      return;
    }
    const current = await ensureGuard();
    const startedAt = Date.now();
    if (!current.ok) return refuse('guard-unavailable', current.reason, startedAt);
    const refusal = current.guard.checkTarget(input.target);
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
    let quarantined: QuarantinedEndpoint | undefined;
    if (strongest.action === 'block' || strongest.action === 'rate-limit') {
      const newBlock = strongest.action === 'block' && (!active || active.action !== 'block');
      const outcome =
        strongest.action === 'block'
          ? await changeBlocklist('block', { upsertFor: { reason: strongest.reason, durationMs } }, newBlock, newBlock ? takeAdmission(admissions) : undefined)
          : await changeRateLimit('rate-limit', { pps: strongest.rateLimitPps ?? 1, reason: strongest.reason, durationMs }, active?.action !== 'rate-limit');
      if (!outcome.ok) return refuse(outcome.code, outcome.reason, startedAt);
      enforced = true;
      changeId = outcome.changeId;
      expiresAt = outcome.expiresAt ?? expiresAt;
      if (strongest.action === 'block') {
        state.blocks.push({ startedAt: new Date(startedAt).toISOString(), durationMs, changeId });
        // A block supersedes a rate limit in force: take the limit off the nodes too.
        if (active?.action === 'rate-limit' && active.enforced) await liftRateLimit(startedAt);
        if (active?.quarantined) await endQuarantine(active.quarantined, (n, why) => record('lift', 'failed', Date.now(), `quarantine superseded by block, attempt ${n}: ${why}`));
      }
    } else if (strongest.action === 'quarantine') {
      const outcome = await capped('quarantine', () => enforceQuarantine(input.target, strongest, ENFORCER));
      if (!outcome.ok) return refuse(outcome.code, outcome.reason, startedAt);
      ({ changeId, endpoint: quarantined } = outcome);
      enforced = true;
      // A quarantine supersedes a rate limit in force: take the limit off the nodes too.
      if (active?.action === 'rate-limit' && active.enforced) await liftRateLimit(startedAt);
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
      ...(strongest.action === 'rate-limit' ? { rateLimitPps: strongest.rateLimitPps ?? 1 } : {}),
      ...(quarantined ? { quarantined } : {}),
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
    if (active.enforced && (active.action === 'block' || active.action === 'rate-limit')) {
      const outcome =
        active.action === 'block'
          ? await changeBlocklist('extend', { upsertFor: { reason: active.reason, durationMs: active.durationMs } }, false)
          : await changeRateLimit('extend', { pps: active.rateLimitPps ?? 1, reason: active.reason, durationMs: active.durationMs });
      if (!outcome.ok) return refuse(outcome.code, outcome.reason, startedAt);
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
      await retryUntil(() => changeBlocklist('lift', { remove: true }, false), (n, why) => record('lift', 'failed', startedAt, `attempt ${n}: ${why}`));
    }
    if (active.action === 'rate-limit' && active.enforced) await liftRateLimit(startedAt);
    if (active.quarantined) await endQuarantine(active.quarantined, (n, why) => record('lift', 'failed', startedAt, `attempt ${n}: ${why}`));
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
   * Runs one blocklist change. A `newBlock` is admitted by the coordinator's caps first:
   * with the bridge's `admission` it is claimed in the same workflow task that starts the
   * change (no round trip); without one, this workflow asks and waits for the answer.
   * Extensions and lifts are never refused and need no admission; the coordinator hears
   * afterwards whether the target's block is active.
   */
  async function changeBlocklist(
    step: 'block' | 'extend' | 'lift',
    what: { upsertFor?: { reason: string; durationMs: number }; remove?: true },
    newBlock: boolean,
    admission?: Admission,
  ): Promise<{ ok: true; changeId: string; expiresAt?: string } | { ok: false; code: RefusalCode; reason: string }> {
    let requestId = '';
    if (newBlock && admission) {
      requestId = admission.token;
      // Not awaited: the claim and the change's start leave in the same workflow task.
      // (If it is lost, the release after the change still records the block as active.)
      signalCoordinator(claimSignal, { requester: workflowInfo().workflowId, requestId, target: input.target }).catch(() => undefined);
    } else if (newBlock) {
      const grant = await acquireLease();
      if (!grant.granted) return { ok: false, code: grant.code ?? 'too-many-active-blocks', reason: grant.reason ?? 'refused by the coordinator' };
      requestId = grant.requestId;
    }
    const changeId = changeIdFor(step);
    // The block's time starts when it is applied, not when the verdict arrived: waiting
    // for the node lock behind other changes must not eat into (or, for a short block, past)
    // its duration — the change workflow refuses an expiry already in the past.
    const expiresAt = what.upsertFor ? new Date(Date.now() + what.upsertFor.durationMs).toISOString() : undefined;
    const blocklist = {
      upsert: what.upsertFor && expiresAt ? [{ cidr: input.target, reason: what.upsertFor.reason, expiresAt }] : [],
      remove: what.remove ? [input.target] : [],
    };
    let blockActive = state.active?.action === 'block' && state.active.enforced;
    try {
      await runChange(step, changeId, { blocklist });
      blockActive = step !== 'lift';
      return expiresAt ? { ok: true, changeId, expiresAt } : { ok: true, changeId };
    } catch (err) {
      return changeFailed(changeId, err);
    } finally {
      // Tells the coordinator whether the target's block is active now. An extension
      // changes nothing it counts, so it is not told.
      if (step !== 'extend') await signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId, target: input.target, blockActive });
    }
  }

  /**
   * Runs one rate-limit change: the target's per-source limit on every node's eBPF
   * firewall (TC ingress), expiring by itself at the given duration as a safety net. Not
   * counted against the block caps: a limit slows a source down, it does not cut it off.
   */
  async function changeRateLimit(
    step: 'rate-limit' | 'extend' | 'lift',
    what: { pps: number; reason: string; durationMs: number } | { remove: true },
    newLimit = false,
  ): Promise<{ ok: true; changeId: string; expiresAt?: string } | { ok: false; code: RefusalCode; reason: string }> {
    if (!input.target.endsWith('/32') && !input.target.endsWith('/128')) {
      return { ok: false, code: 'not-a-host', reason: `${input.target} is a prefix; a rate limit applies to one source host` };
    }
    // Runs recorded before the patch did not count rate limits.
    if (fromWorker && step !== 'extend') {
      if (step === 'lift') {
        try {
          return await rateLimitChange(step, what);
        } finally {
          await signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: '', target: input.target, blockActive: false, kind: 'rate-limit' });
        }
      }
      if (newLimit) return capped('rate-limit', () => rateLimitChange(step, what));
    }
    return rateLimitChange(step, what);
  }

  /** The rate-limit change itself (see {@link changeRateLimit}). */
  async function rateLimitChange(
    step: 'rate-limit' | 'extend' | 'lift',
    what: { pps: number; reason: string; durationMs: number } | { remove: true },
  ): Promise<{ ok: true; changeId: string; expiresAt?: string } | { ok: false; code: RefusalCode; reason: string }> {
    const changeId = changeIdFor(step);
    const expiresAt = 'pps' in what ? new Date(Date.now() + what.durationMs).toISOString() : undefined;
    const rateLimits = {
      upsert: 'pps' in what && expiresAt ? [{ cidr: input.target, pps: what.pps, reason: what.reason, expiresAt }] : [],
      remove: 'remove' in what ? [input.target] : [],
    };
    try {
      await runChange(step, changeId, { rateLimits });
      return expiresAt ? { ok: true, changeId, expiresAt } : { ok: true, changeId };
    } catch (err) {
      return changeFailed(changeId, err);
    }
  }

  /** Runs one automated change on the target's nodes through the change workflow, authored by the enforcer. */
  async function runChange(step: string, changeId: string, patch: NonNullable<ChangeRequestInput['patch']>): Promise<void> {
    const request: ChangeRequestInput = {
      id: changeId,
      author: ENFORCER,
      reason: `automated ${step} of ${input.target}${state.active ? ` (${state.active.rule})` : ''}`.slice(0, 1000),
      // One wave, no bake, the nodes one after another in name order. An automated block is
      // worth most in its first seconds: the default strategy (a canary, 30 s bake, half, 30 s
      // bake, the rest) left the other nodes open for a minute while each finished wave held its
      // node's lock, so on a fleet every other change queued behind each block and each lift
      // (bench/soak found it). Not all at once: every node of a change holds its lock until the
      // change commits, so two blocks taking their nodes in parallel can each hold a node the
      // other waits for (until lockTimeout); taking them in one order, as every enforcement
      // change does, no two can.
      targets: [...input.nodes].sort(),
      patch,
      strategy: { waves: [{ name: 'all', parallelism: 1 }] },
    };
    await executeChild(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(changeId), args: [request] });
  }

  /** Takes the target's rate limit off the nodes, retrying until the change path takes it. */
  async function liftRateLimit(startedAt: number): Promise<void> {
    await retryUntil(() => changeRateLimit('lift', { remove: true }), (n, why) => record('lift rate limit', 'failed', startedAt, `attempt ${n}: ${why}`));
  }

  /** The first admission still valid for long enough to cover the change's start, if any. */
  function takeAdmission(admissions: Admission[]): Admission | undefined {
    const index = admissions.findIndex((a) => Date.parse(a.expiresAt) - Date.now() >= ADMISSION_MARGIN_MS);
    return index < 0 ? undefined : admissions.splice(index, 1)[0];
  }

  /**
   * The guard in force (new path): the cluster worker's configuration (a local activity) with
   * the default allow-lists and every target node's own addresses, gateways and DNS servers
   * (an activity on each node's queue), read at the first decision and again when
   * {@link GUARD_REFRESH_MS} old. Not ok when any of it cannot be read: a guard that may be
   * missing a node's addresses must not let a block through.
   */
  async function ensureGuard(): Promise<{ ok: true; guard: EnforcementGuard } | { ok: false; reason: string }> {
    if (guard && (!fromWorker || Date.now() - guardReadAt < GUARD_REFRESH_MS)) return { ok: true, guard };
    try {
      const [config, ...reports] = await Promise.all([readEnforcementConfig(), ...input.nodes.map(reportProtected)]);
      guard = new EnforcementGuard(effectiveGuardConfig(config, reports));
      guardReadAt = Date.now();
      return { ok: true, guard };
    } catch (err) {
      if (guard) return { ok: true, guard };
      return { ok: false, reason: `the guard could not be read (the cluster worker's configuration and the protected addresses of ${input.nodes.join(', ')}): ${summariseFailure(err).message}` };
    }
  }

  /**
   * One node's protected addresses; whether it answered goes to the metrics (a node that cannot
   * report leaves the guard unreadable: enforcement fails closed). The sink is no command, and
   * the callers await the same activities as before.
   */
  function reportProtected(node: string): Promise<NodeProtectedAddresses> {
    return nodeActivities(node)
      .reportProtectedAddresses({ node })
      .then(
        (report) => {
          metrics.protectedAddresses(node, true);
          return report;
        },
        (err: unknown) => {
          metrics.protectedAddresses(node, false);
          throw err;
        },
      );
  }

  /**
   * Runs `start` (a new rate limit or quarantine) once the coordinator's caps for `kind`
   * admit it, and tells the coordinator afterwards whether it is active. Runs recorded before
   * the patch ask nobody.
   */
  async function capped<T extends { ok: boolean }>(kind: Exclude<CapKind, 'block'>, start: () => Promise<T>): Promise<T | { ok: false; code: RefusalCode; reason: string }> {
    if (!fromWorker) return start();
    const grant = await acquireLease(kind);
    if (!grant.granted) return { ok: false, code: grant.code ?? 'too-many-active-blocks', reason: grant.reason ?? 'refused by the coordinator' };
    let ok = false;
    try {
      const outcome = await start();
      ok = outcome.ok;
      return outcome;
    } finally {
      await signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: grant.requestId, target: input.target, blockActive: ok, kind });
    }
  }

  /** Lifts a quarantine (retrying until it is off) and, on the new path, tells the coordinator. */
  async function endQuarantine(endpoint: QuarantinedEndpoint, onFailure: (attempt: number, reason: string) => void): Promise<void> {
    await liftQuarantine(endpoint, ENFORCER, onFailure);
    if (fromWorker) await signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: '', target: input.target, blockActive: false, kind: 'quarantine' });
  }

  async function acquireLease(kind: CapKind = 'block'): Promise<LeaseGrant> {
    for (;;) {
      const requestId = `${workflowInfo().runId}-${++leaseSequence}`;
      let grant: LeaseGrant | undefined;
      setHandler(leaseGrantSignal, (g) => {
        if (g.requestId === requestId) {
          grant = g;
        } else if (g.granted) {
          // A grant for a request given up on: hand it back, so the caps stop counting it.
          void signalCoordinator(releaseSignal, { requester: workflowInfo().workflowId, requestId: g.requestId, target: input.target, blockActive: state.active?.action === 'block' && state.active.enforced });
        }
      });
      await signalCoordinator(
        acquireSignal,
        // The caps are the coordinator's own (the worker's configuration) on the new path.
        fromWorker
          ? { requester: workflowInfo().workflowId, requestId, target: input.target, newBlock: true, kind }
          : { requester: workflowInfo().workflowId, requestId, target: input.target, newBlock: true, maxActiveBlocks: input.guard!.maxActiveBlocks, maxNewBlocksPerMinute: input.guard!.maxNewBlocksPerMinute },
      );
      // A coordinator that was terminated or reset forgets its queue; ask again rather
      // than wait for ever.
      if (await condition(() => grant !== undefined, LEASE_WAIT_MS)) return grant!;
      record('lease', 'failed', Date.now() - LEASE_WAIT_MS, `no answer from the coordinator in ${LEASE_WAIT_MS / 60_000} min; asking again`);
    }
  }

  function refuse(code: RefusalCode, reason: string, startedAt: number): void {
    state.refusals.push({ at: new Date(startedAt).toISOString(), code, reason });
    metrics.guardRefusal(code, 'workflow');
    record('refused', 'failed', startedAt, `${code}: ${reason}`);
  }

  function record(step: string, result: AuditRecord['result'], startedAt: number, detail: string, actor = ENFORCER): void {
    trail.record(step, result, startedAt, detail, actor);
  }

  function changeIdFor(step: string): string {
    // Change ids are DNS labels; the workflow clock makes the id unique per run and step.
    return `enf-${step}-${shortHash(input.target)}-${Date.now().toString(36)}`;
  }

  function trimState(): void {
    // In place: the audit trail holds this list.
    state.audit.splice(0, Math.max(0, state.audit.length - MAX_KEPT));
    state.blocks = state.blocks.slice(-MAX_KEPT);
    state.refusals = state.refusals.slice(-MAX_KEPT);
  }
}

/**
 * Checks an enforcement input (new path): target a canonical prefix, nodes DNS labels, and no
 * guard or cap field — those are the cluster worker's. A run continued as new from an
 * execution recorded before the patch inherits its `guard`; it is dropped, not obeyed.
 */
function validateInput(input: EnforcementInput): EnforcementInput {
  const bad = (message: string): never => {
    throw failure(FailureType.InvalidEnforcementInput, `invalid enforcement input: ${message}`);
  };
  if (!input || typeof input !== 'object') bad('expected an object with target and nodes');
  let carried = authorityFieldsIn(input);
  if (carried.length > 0 && workflowInfo().continuedFromExecutionRunId && carried.every((f) => f === 'guard')) {
    const { guard: _inherited, ...rest } = input;
    input = rest;
    carried = [];
  }
  if (carried.length > 0) bad(`field(s) ${carried.join(', ')} refused: the guard and its caps come from the cluster worker's configuration (FOS1_GUARD_FILE), never from a workflow input`);
  if (typeof input.target !== 'string') bad('target: must be a prefix such as 198.51.100.7/32');
  try {
    parseCidr(input.target);
  } catch (err) {
    bad(`target: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Array.isArray(input.nodes) || input.nodes.length === 0 || input.nodes.length > 1000) bad('nodes: must list 1–1000 node names');
  input.nodes.forEach((n, i) => {
    if (typeof n !== 'string' || !NODE_NAME.test(n)) bad(`nodes[${i}]: must be a DNS-1123 label`);
  });
  if (input.continueAsNewAfter !== undefined && (!Number.isInteger(input.continueAsNewAfter) || input.continueAsNewAfter < 10)) bad('continueAsNewAfter: must be an integer of at least 10');
  return input;
}

/** A failed child change as an enforcement refusal, with the failure type the change reported. */
function changeFailed(changeId: string, err: unknown): { ok: false; code: 'change-failed'; reason: string } {
  const failure = summariseFailure(err);
  return { ok: false, code: 'change-failed', reason: `change ${changeId} failed (${failure.type}): ${failure.message}` };
}
