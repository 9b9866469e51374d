/**
 * The enforcement coordinator: the singleton workflow that applies the cluster-wide caps on
 * automated actions: blocks, rate limits and quarantines, each with its own cap on the number
 * active and on new ones per minute. The caps are the cluster worker's configuration
 * (FOS1_GUARD_FILE), read through a local activity at the start of each run and again when
 * a minute old; a request that carries caps of its own is refused. Enforcement workflows
 * (workflows/enforcement.ts) and the ingest bridge (ingest/bridge.ts) are its only clients.
 *
 * Why a coordinator: the caps are cluster-wide, so one place must count every block that
 * starts and lifts. It does not serialise changes: every change takes the node's lock, so two
 * enforcement changes at once are safe (see workflows/enforcement.ts).
 *
 *   admit (update, update-with-start from the bridge) → a reservation: counted as an active
 *     block and a new start until claimed (claim), handed back (release unused) or expired
 *   acquire (signal from an enforcement workflow without an admission) → leaseGrant back
 *   release (after a change) → whether the target's block (rate limit, quarantine) is active now
 *
 * Versioning: runs recorded before the caps came from the worker (no `caps-from-worker-config`
 * marker) keep taking them from each request, as they did; they switch at their next
 * continue-as-new.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  patched,
  proxyLocalActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { EnforcementConfigActivities } from '../activities/enforcement-config';
import type { Admission } from '../model/enforcement-decision';
import { authorityFieldsIn, capLimits, checkCapLimits, guardConfigSchema, type CapKind, type GuardConfig, type GuardRefusal } from '../model/enforcement-guard';
import { failure, FailureType } from '../model/failures';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { isAlreadyStarted } from './support';

const { readEnforcementConfig } = proxyLocalActivities<EnforcementConfigActivities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 5 } });

/** Patch: caps from the worker's configuration (a local activity), per kind, never from a request. */
export const CAPS_FROM_WORKER_PATCH = 'caps-from-worker-config';
/** How old the coordinator's copy of the caps may get before it reads them again. */
const CAPS_REFRESH_MS = 60_000;

/** Workflow id of the singleton coordinator. */
export const ENFORCEMENT_COORDINATOR_ID = 'fos1-enforcement-coordinator';

/** A request for the coordinator's admission of a new block (the `acquire` signal's path). */
export interface LeaseRequest {
  requester: string;
  /** Unique per request; the grant and the release carry it back. */
  requestId: string;
  target: string;
  /** An action that is not yet active: subject to the caps. */
  newBlock: boolean;
  /** What is asked for (default `block`). */
  kind?: CapKind;
  /** Only runs recorded before {@link CAPS_FROM_WORKER_PATCH} take caps from a request; later ones refuse it. */
  maxActiveBlocks?: number;
  maxNewBlocksPerMinute?: number;
}

/** The coordinator's answer to an `acquire`. */
export interface LeaseGrant {
  requestId: string;
  granted: boolean;
  code?: GuardRefusal['code'] | 'invalid-request' | 'caps-unavailable';
  reason?: string;
}

/** Argument of the `admit` update: the ingest bridge asks before it signals a new block. */
export interface AdmitRequest {
  target: string;
  /** Only runs recorded before {@link CAPS_FROM_WORKER_PATCH} take caps from a request; later ones reject the update. */
  maxActiveBlocks?: number;
  maxNewBlocksPerMinute?: number;
  /**
   * ISO 8601: the asker stops waiting then. Past it the coordinator refuses instead of
   * reserving a slot nobody will claim (an update can wait on the server while workers are down).
   */
  deadline: string;
}

/** Answer of the `admit` update. */
export type AdmitAnswer = ({ granted: true } & Admission) | { granted: false; code: GuardRefusal['code'] | 'too-late' | 'caps-unavailable'; reason: string };

/** A reservation the coordinator holds for an admitted block until it is claimed, handed back or expires. */
export interface Reservation {
  token: string;
  target: string;
  /** When it was admitted (ms). */
  at: number;
  /** Whether it counts as a new start (the target was not active when admitted). */
  newStart: boolean;
  expiresAt: number;
}

/** What the coordinator tracks; carried across continue-as-new. */
export interface CoordinatorState {
  /** Targets whose block is active, or admitted and being applied. */
  activeBlocks: string[];
  /** Start times (ms) of new blocks in the last minute, admitted ones included. */
  recentStarts: number[];
  queue: LeaseRequest[];
  reservations?: Reservation[];
  granted: number;
  refused: number;
  /** Tokens issued so far (for unique tokens across runs). */
  issued?: number;
  /** Requests and updates served per run before it continues as new (default 500; tests lower it). */
  continueAsNewAfter?: number;
  /** Runs before this one. */
  continuedRuns?: number;
  /** Targets whose automated rate limit is active. */
  activeRateLimits?: string[];
  /** Start times (ms) of new rate limits in the last minute. */
  recentRateLimitStarts?: number[];
  /** Targets whose endpoint is in automated quarantine. */
  activeQuarantines?: string[];
  /** Start times (ms) of new quarantines in the last minute. */
  recentQuarantineStarts?: number[];
}

/** Answer of the coordinator's `coordinator` query: the state, and the caps this run applies (none before they are read). */
export type CoordinatorStatus = CoordinatorState & { caps?: GuardConfig };

export const acquireSignal = defineSignal<[LeaseRequest]>('acquire');
/**
 * After a change (or for an admission or grant not used): `blockActive` (when given) says
 * whether the target's block is active now; `unused` hands an admission back, so it no
 * longer counts as a new start either.
 */
export const releaseSignal = defineSignal<[{ requester: string; requestId: string; target: string; blockActive?: boolean; unused?: boolean; kind?: CapKind }]>('release');
/** An enforcement workflow applies an admitted block: the reservation becomes an active block. */
export const claimSignal = defineSignal<[{ requester: string; requestId: string; target: string }]>('claim');
export const leaseGrantSignal = defineSignal<[LeaseGrant]>('leaseGrant');
export const admitUpdate = defineUpdate<AdmitAnswer, [AdmitRequest]>('admit');
export const coordinatorQuery = defineQuery<CoordinatorStatus>('coordinator');

/** How long an admission is held for a verdict that is on its way. */
export const ADMISSION_TTL_MS = 60_000;

/**
 * The coordinator waits with a timer for the next unclaimed admission to lapse (a run
 * recorded before waits only for requests, and prunes lapsed admissions on the next one).
 */
export const RESERVATION_EXPIRY_PATCH = 'reservation-expiry';

/** The caps a run recorded before {@link CAPS_FROM_WORKER_PATCH} applies to a request that names none. */
const DEFAULT_CAPS = guardConfigSchema.parse({});

/**
 * The singleton that applies the cluster-wide caps on automated blocks, rate limits and
 * quarantines. Started on demand (by the ingest bridge's first `admit`, or the first
 * enforcement workflow that asks); never completes, continues as new to keep its history short.
 */
export async function enforcementCoordinatorWorkflow(carried?: CoordinatorState): Promise<void> {
  // Evaluated once, first: a run recorded before the patch replays the old path throughout.
  const fromWorker = patched(CAPS_FROM_WORKER_PATCH);
  const expiryTimers = patched(RESERVATION_EXPIRY_PATCH);
  const state: CoordinatorState = carried ?? { activeBlocks: [], recentStarts: [], queue: [], granted: 0, refused: 0 };
  const active = new Set(state.activeBlocks);
  const activeOther: Record<Exclude<CapKind, 'block'>, Set<string>> = {
    'rate-limit': new Set(state.activeRateLimits ?? []),
    quarantine: new Set(state.activeQuarantines ?? []),
  };
  const activeOf = (kind: CapKind): Set<string> => (kind === 'block' ? active : activeOther[kind]);
  const reservations = new Map((state.reservations ?? []).map((r) => [r.token, r]));
  let issued = state.issued ?? 0;
  /** Requests and updates handled in this run. */
  let served = 0;

  // ── the caps (new path): the cluster worker's configuration, read through a local activity ──
  let caps: GuardConfig | undefined;
  let capsReadAt = 0;
  let reading: Promise<void> | undefined;
  /** Reads the caps when none are held or they are a minute old; false when there are none to use. */
  const ensureCaps = async (): Promise<boolean> => {
    if (caps && Date.now() - capsReadAt < CAPS_REFRESH_MS) return true;
    reading ??= (async () => {
      try {
        caps = await readEnforcementConfig();
        capsReadAt = Date.now();
      } catch {
        // Keep the caps already held (if any); the next request reads again.
      } finally {
        reading = undefined;
      }
    })();
    await reading;
    return caps !== undefined;
  };
  const capsUnavailable = { code: 'caps-unavailable' as const, reason: "the cluster worker's enforcement configuration could not be read (readEnforcementConfig)" };
  const limitsFor = (kind: CapKind, req: { maxActiveBlocks?: number; maxNewBlocksPerMinute?: number }) =>
    fromWorker ? capLimits(caps!, kind) : { maxActive: req.maxActiveBlocks ?? DEFAULT_CAPS.maxActiveBlocks, maxNewPerMinute: req.maxNewBlocksPerMinute ?? DEFAULT_CAPS.maxNewBlocksPerMinute };
  const carriedCaps = (what: string, req: object): { code: 'invalid-request'; reason: string } | null => {
    const fields = authorityFieldsIn(req);
    return fields.length === 0 ? null : { code: 'invalid-request', reason: `${what} field(s) ${fields.join(', ')} refused: the caps come from the cluster worker's configuration (FOS1_GUARD_FILE), never from a request` };
  };

  /** Start times of new actions of `kind` in the last minute (pruned). */
  const recentStarts = (kind: CapKind, now: number): number[] => {
    const key = kind === 'block' ? 'recentStarts' : kind === 'rate-limit' ? 'recentRateLimitStarts' : 'recentQuarantineStarts';
    const kept = (state[key] ?? []).filter((t) => now - t < 60_000);
    state[key] = kept;
    return kept;
  };

  /** The caps' verdict on one more new action of `kind` now; null when it may start. */
  const checkCaps = (kind: CapKind, limits: { maxActive: number; maxNewPerMinute: number }, now: number): GuardRefusal | null => {
    if (kind !== 'block') return checkCapLimits(limits, kind, activeOther[kind].size, recentStarts(kind, now), now);
    for (const [token, r] of reservations) if (r.expiresAt <= now) reservations.delete(token);
    const starts = recentStarts('block', now);
    const pending = new Set([...reservations.values()].map((r) => r.target).filter((t) => !active.has(t)));
    return checkCapLimits(limits, 'block', active.size + pending.size, starts, now);
  };

  setHandler(acquireSignal, (req) => {
    state.queue.push(req);
  });
  setHandler(releaseSignal, (rel) => {
    const kind = rel.kind ?? 'block';
    if (kind !== 'block') {
      // Runs recorded before the patch never counted these.
      if (!fromWorker) return;
      if (rel.blockActive === true) activeOther[kind].add(rel.target);
      else if (rel.blockActive === false) activeOther[kind].delete(rel.target);
      return;
    }
    const reservation = reservations.get(rel.requestId);
    reservations.delete(rel.requestId);
    if (rel.unused && reservation?.newStart) {
      // Never used: it was not a new start after all.
      const i = state.recentStarts.indexOf(reservation.at);
      if (i >= 0) state.recentStarts.splice(i, 1);
    }
    if (rel.blockActive === true) active.add(rel.target);
    else if (rel.blockActive === false) active.delete(rel.target);
  });
  setHandler(claimSignal, (claim) => {
    reservations.delete(claim.requestId);
    active.add(claim.target);
  });
  /** The admission itself, once the caps are known. */
  const admit = (req: AdmitRequest): AdmitAnswer => {
    const now = Date.now();
    if (Date.parse(req.deadline) <= now) return { granted: false, code: 'too-late', reason: `asked to answer by ${req.deadline}` };
    // A target already active or admitted needs no second slot (a repeat, or an extension).
    const refusal = active.has(req.target) ? null : checkCaps('block', limitsFor('block', req), now);
    if (refusal) {
      state.refused++;
      return { granted: false, code: refusal.code, reason: refusal.reason };
    }
    state.granted++;
    const token = `adm-${workflowInfo().workflowId}-${++issued}`;
    const newStart = !active.has(req.target);
    reservations.set(token, { token, target: req.target, at: now, newStart, expiresAt: now + ADMISSION_TTL_MS });
    if (newStart) state.recentStarts.push(now);
    return { granted: true, token, expiresAt: new Date(now + ADMISSION_TTL_MS).toISOString() };
  };
  if (fromWorker) {
    setHandler(
      admitUpdate,
      async (req) => {
        served++;
        if (!(await ensureCaps())) {
          state.refused++;
          return { granted: false, ...capsUnavailable };
        }
        return admit(req);
      },
      {
        // Rejected before it is recorded: an update that brings its own caps decides nothing.
        validator: (req) => {
          const bad = carriedCaps('admit', req ?? {});
          if (bad) throw failure(FailureType.InvalidEnforcementInput, bad.reason);
        },
      },
    );
  } else {
    setHandler(admitUpdate, (req) => {
      served++;
      return admit(req);
    });
  }
  setHandler(coordinatorQuery, () => ({
    ...state,
    activeBlocks: [...active],
    activeRateLimits: [...activeOther['rate-limit']],
    activeQuarantines: [...activeOther.quarantine],
    reservations: [...reservations.values()].filter((r) => r.expiresAt > Date.now()),
    issued,
    ...(caps ? { caps } : {}),
  }));

  for (;;) {
    // Updates are answered by their handler; the loop serves `acquire` and keeps the
    // history short (updates alone never fill the queue, so it wakes on the suggestion too).
    const limit = state.continueAsNewAfter ?? 500;
    const wake = () => state.queue.length > 0 || served >= limit || workflowInfo().continueAsNewSuggested;
    if (expiryTimers && reservations.size > 0) {
      // Wake when the next unclaimed admission lapses, so it stops counting (and the status
      // query stops showing it) even when nothing else happens: a query's clock is the last
      // workflow task's, and an idle coordinator has none.
      const nextExpiry = Math.min(...[...reservations.values()].map((r) => r.expiresAt));
      if (!(await condition(wake, Math.max(1, nextExpiry - Date.now())))) {
        const now = Date.now();
        for (const [token, r] of reservations) if (r.expiresAt <= now) reservations.delete(token);
        continue;
      }
    } else {
      await condition(wake);
    }
    while (state.queue.length > 0) {
      const req = state.queue.shift()!;
      served++;
      const kind: CapKind = req.kind ?? 'block';
      let refusal: { code: LeaseGrant['code'] & string; reason: string } | null = null;
      if (fromWorker) {
        refusal = carriedCaps('acquire', req) ?? ((await ensureCaps()) ? null : capsUnavailable);
      }
      const counted = fromWorker || kind === 'block';
      const set = activeOf(kind);
      const now = Date.now();
      refusal ??= counted && req.newBlock && !set.has(req.target) ? checkCaps(kind, limitsFor(kind, req), now) : null;
      const grant: LeaseGrant = refusal ? { requestId: req.requestId, granted: false, code: refusal.code, reason: refusal.reason } : { requestId: req.requestId, granted: true };
      if (refusal) {
        state.refused++;
      } else {
        state.granted++;
        // Counted at once, so a concurrent request sees it; the requester's release
        // (blockActive false) takes it back if the change does not happen.
        if (counted && req.newBlock && !set.has(req.target)) recentStarts(kind, now).push(now);
        if (counted && req.newBlock) set.add(req.target);
      }
      if (!(await notify(req.requester, grant)) && grant.granted && req.newBlock && counted) {
        // The requester is gone: nothing will be applied for it.
        set.delete(req.target);
      }
    }
    if (served >= limit || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      if (state.queue.length > 0) continue;
      const continuedRuns = (state.continuedRuns ?? 0) + 1;
      await continueAsNew<typeof enforcementCoordinatorWorkflow>({
        ...state,
        activeBlocks: [...active],
        ...(fromWorker ? { activeRateLimits: [...activeOther['rate-limit']], activeQuarantines: [...activeOther.quarantine] } : {}),
        reservations: [...reservations.values()],
        issued,
        continuedRuns,
      });
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
export async function signalCoordinator<T extends unknown[]>(signal: ReturnType<typeof defineSignal<T>>, ...args: T): Promise<void> {
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
    if (!isAlreadyStarted(err)) throw err;
  }
  await getExternalWorkflowHandle(ENFORCEMENT_COORDINATOR_ID).signal(signal, ...args);
}
