/**
 * Heartbeats for long activities. Node activities run with a heartbeat time-out of a few
 * seconds (workflows/node-change.ts), so a node worker that was SIGKILLed in the middle of
 * an apply is noticed within seconds instead of after the start-to-close time-out, and the
 * attempt is retried as soon as a worker polls again.
 *
 * A heartbeat only leaves the process when the event loop turns, so code that works for
 * a long time on one stack (a million-entry map load) must also yield: {@link progress}
 * heartbeats and then yields once, and {@link withHeartbeats} keeps a ticker running for
 * the stretches between progress calls.
 *
 * Outside an activity (a unit test calling the activities directly) both do nothing but
 * yield. Local activities cannot heartbeat (the SDK keeps their workflow task alive
 * instead); the calls are harmless there.
 */
import { Context } from '@temporalio/activity';

/** Progress details sent with a heartbeat: what the activity is doing now. */
export type HeartbeatDetails = Record<string, string | number | boolean | undefined>;

/** How often the ticker of {@link withHeartbeats} heartbeats (the SDK throttles sends to 80 % of the time-out). */
export const HEARTBEAT_TICK_MS = 1000;

function currentContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // not inside an activity
  }
}

/** Yields to the event loop once (timers, I/O and the SDK's heartbeat sends run). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

const latest = new WeakMap<Context, HeartbeatDetails>();

/**
 * Reports progress: heartbeats with `details` (remembered for the ticker) and yields, so
 * the heartbeat gets out before the next stretch of synchronous work.
 */
export async function progress(details: HeartbeatDetails): Promise<void> {
  const ctx = currentContext();
  if (ctx && !ctx.info.isLocal) {
    latest.set(ctx, details);
    ctx.heartbeat(details);
  }
  await yieldToEventLoop();
}

/**
 * Runs `fn` with a heartbeat every {@link HEARTBEAT_TICK_MS} (the last progress details,
 * or `details`), so an activity that waits on I/O (a feed file, a netlink dump) keeps
 * heartbeating. The ticker is a timer: it cannot fire while `fn` blocks the event loop,
 * which is why long synchronous work calls {@link progress} between its steps.
 */
export async function withHeartbeats<T>(details: HeartbeatDetails, fn: () => Promise<T>): Promise<T> {
  const ctx = currentContext();
  if (!ctx || ctx.info.isLocal) return fn();
  latest.set(ctx, details);
  ctx.heartbeat(details);
  const ticker = setInterval(() => ctx.heartbeat(latest.get(ctx) ?? details), HEARTBEAT_TICK_MS);
  try {
    return await fn();
  } finally {
    clearInterval(ticker);
  }
}
