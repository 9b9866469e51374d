/**
 * The enforcement coordinator: the singleton workflow that applies the cluster-wide caps on
 * automated blocks (active blocks, new blocks per minute). Enforcement workflows
 * (workflows/enforcement.ts) and the ingest bridge (ingest/bridge.ts) are its only clients.
 *
 * Why a coordinator: the caps are cluster-wide, so one place must count every block that
 * starts and lifts. It does not serialise changes: every change takes the node's lock, so two
 * enforcement changes at once are safe (see workflows/enforcement.ts).
 *
 *   admit (update, update-with-start from the bridge) → a reservation: counted as an active
 *     block and a new start until claimed (claim), handed back (release unused) or expired
 *   acquire (signal from an enforcement workflow without an admission) → leaseGrant back
 *   release (after a change) → whether the target's block is active now
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
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { Admission } from '../model/enforcement-decision';
import { EnforcementGuard, type GuardRefusal } from '../model/enforcement-guard';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import { isAlreadyStarted } from './support';

/** Workflow id of the singleton coordinator. */
export const ENFORCEMENT_COORDINATOR_ID = 'fos1-enforcement-coordinator';

/** A request for the coordinator's admission of a new block (the `acquire` signal's path). */
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

/** The coordinator's answer to an `acquire`. */
export interface LeaseGrant {
  requestId: string;
  granted: boolean;
  code?: GuardRefusal['code'];
  reason?: string;
}

/** Argument of the `admit` update: the ingest bridge asks before it signals a new block. */
export interface AdmitRequest {
  target: string;
  maxActiveBlocks: number;
  maxNewBlocksPerMinute: number;
  /**
   * ISO 8601: the asker stops waiting then. Past it the coordinator refuses instead of
   * reserving a slot nobody will claim (an update can wait on the server while workers are down).
   */
  deadline: string;
}

/** Answer of the `admit` update. */
export type AdmitAnswer = ({ granted: true } & Admission) | { granted: false; code: GuardRefusal['code'] | 'too-late'; reason: string };

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
}

/** Answer of the coordinator's `coordinator` query. */
export type CoordinatorStatus = CoordinatorState;

export const acquireSignal = defineSignal<[LeaseRequest]>('acquire');
/**
 * After a change (or for an admission or grant not used): `blockActive` (when given) says
 * whether the target's block is active now; `unused` hands an admission back, so it no
 * longer counts as a new start either.
 */
export const releaseSignal = defineSignal<[{ requester: string; requestId: string; target: string; blockActive?: boolean; unused?: boolean }]>('release');
/** An enforcement workflow applies an admitted block: the reservation becomes an active block. */
export const claimSignal = defineSignal<[{ requester: string; requestId: string; target: string }]>('claim');
export const leaseGrantSignal = defineSignal<[LeaseGrant]>('leaseGrant');
export const admitUpdate = defineUpdate<AdmitAnswer, [AdmitRequest]>('admit');
export const coordinatorQuery = defineQuery<CoordinatorStatus>('coordinator');

/** How long an admission is held for a verdict that is on its way. */
export const ADMISSION_TTL_MS = 60_000;

/**
 * The singleton that applies the cluster-wide caps on automated blocks. Started on demand
 * (by the ingest bridge's first `admit`, or the first enforcement workflow that asks);
 * never completes, continues as new to keep its history short.
 */
export async function enforcementCoordinatorWorkflow(carried?: CoordinatorState): Promise<void> {
  const state: CoordinatorState = carried ?? { activeBlocks: [], recentStarts: [], queue: [], granted: 0, refused: 0 };
  const active = new Set(state.activeBlocks);
  const reservations = new Map((state.reservations ?? []).map((r) => [r.token, r]));
  let issued = state.issued ?? 0;
  /** Requests and updates handled in this run. */
  let served = 0;

  /** The caps' verdict on one more new block now; null when it may start. */
  const checkCaps = (limits: { maxActiveBlocks: number; maxNewBlocksPerMinute: number }, now: number): GuardRefusal | null => {
    for (const [token, r] of reservations) if (r.expiresAt <= now) reservations.delete(token);
    state.recentStarts = state.recentStarts.filter((t) => now - t < 60_000);
    const pending = new Set([...reservations.values()].map((r) => r.target).filter((t) => !active.has(t)));
    const caps = new EnforcementGuard({ allowLists: {}, minPrefixLengthV4: 0, minPrefixLengthV6: 0, maxActiveBlocks: limits.maxActiveBlocks, maxNewBlocksPerMinute: limits.maxNewBlocksPerMinute });
    return caps.checkCaps(active.size + pending.size, state.recentStarts, now);
  };

  setHandler(acquireSignal, (req) => {
    state.queue.push(req);
  });
  setHandler(releaseSignal, (rel) => {
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
  setHandler(admitUpdate, (req) => {
    served++;
    const now = Date.now();
    if (Date.parse(req.deadline) <= now) return { granted: false, code: 'too-late', reason: `asked to answer by ${req.deadline}` };
    // A target already active or admitted needs no second slot (a repeat, or an extension).
    const refusal = active.has(req.target) ? null : checkCaps(req, now);
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
  });
  setHandler(coordinatorQuery, () => ({ ...state, activeBlocks: [...active], reservations: [...reservations.values()].filter((r) => r.expiresAt > Date.now()), issued }));

  for (;;) {
    // Updates are answered by their handler; the loop serves `acquire` and keeps the
    // history short (updates alone never fill the queue, so it wakes on the suggestion too).
    const limit = state.continueAsNewAfter ?? 500;
    await condition(() => state.queue.length > 0 || served >= limit || workflowInfo().continueAsNewSuggested);
    while (state.queue.length > 0) {
      const req = state.queue.shift()!;
      served++;
      const now = Date.now();
      const refusal = req.newBlock && !active.has(req.target) ? checkCaps(req, now) : null;
      const grant: LeaseGrant = refusal ? { requestId: req.requestId, granted: false, code: refusal.code, reason: refusal.reason } : { requestId: req.requestId, granted: true };
      if (refusal) {
        state.refused++;
      } else {
        state.granted++;
        // Counted at once, so a concurrent request sees it; the requester's release
        // (blockActive false) takes it back if the change does not happen.
        if (req.newBlock && !active.has(req.target)) state.recentStarts.push(now);
        if (req.newBlock) active.add(req.target);
      }
      if (!(await notify(req.requester, grant)) && grant.granted && req.newBlock) {
        // The requester is gone: nothing will be applied for it.
        active.delete(req.target);
      }
    }
    if (served >= limit || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      if (state.queue.length > 0) continue;
      const continuedRuns = (state.continuedRuns ?? 0) + 1;
      await continueAsNew<typeof enforcementCoordinatorWorkflow>({ ...state, activeBlocks: [...active], reservations: [...reservations.values()], issued, continuedRuns });
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
