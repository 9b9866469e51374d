/**
 * Change windows and freezes: when a change may apply.
 *
 * A maintenance window is a weekly interval in a time zone (`{ days: ['Sat', 'Sun'], start:
 * '02:00', end: '05:00', timeZone: 'Europe/Berlin' }`; an `end` at or before `start` runs
 * past midnight into the next day, and `days` name the day it starts). A freeze is an
 * absolute interval (`{ from, to, reason }`) in which nothing applies, windows or not. A
 * change's own `notBefore` holds it until then.
 *
 * Local times are computed with `Intl.DateTimeFormat` (its `timeZone` option carries the
 * IANA database, daylight saving included), which the Temporal workflow sandbox provides:
 * the change workflow calls these functions directly with its deterministic clock.
 *
 * Pure code: the workflow sandbox imports this file.
 */
import { z } from 'zod';

/** Day names as `days` writes them, in `Date.getUTCDay()` order. */
export const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

const HH_MM = /^([01]\d|2[0-3]):[0-5]\d$/;

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** A weekly maintenance window. */
export const maintenanceWindowSchema = z
  .object({
    days: z.array(z.enum(WEEKDAYS, { message: `must be one of ${WEEKDAYS.join(', ')}` })).min(1, 'must name at least one day'),
    start: z.string().regex(HH_MM, 'must be a time "HH:MM" (24 h)'),
    end: z.string().regex(HH_MM, 'must be a time "HH:MM" (24 h)'),
    timeZone: z.string().refine(validTimeZone, 'must be an IANA time zone such as "Europe/Berlin" or "UTC"').default('UTC'),
  })
  .strict();

/** A freeze: nothing applies from `from` until `to`. */
export const freezeSchema = z
  .object({
    from: z.string().datetime({ offset: true, message: 'must be an ISO 8601 time' }),
    to: z.string().datetime({ offset: true, message: 'must be an ISO 8601 time' }),
    reason: z.string().min(1, 'must say why').max(500),
  })
  .strict()
  .refine((f) => Date.parse(f.to) > Date.parse(f.from), { path: ['to'], message: 'must be after "from"' });

export type MaintenanceWindow = z.output<typeof maintenanceWindowSchema>;
export type Freeze = z.output<typeof freezeSchema>;

/** When a change may apply. */
export interface Schedule {
  /** Empty: any time (outside freezes). */
  windows: MaintenanceWindow[];
  freezes: Freeze[];
  /** The change's own `notBefore`, ms since epoch. */
  notBefore?: number;
}

/** Answer of {@link nextOpening}. */
export type Opening = { open: true } | { open: false; until: number; why: string };

const minutesOf = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', weekday: 'short', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Wall-clock fields of instant `t` in `timeZone`. */
export function localTime(t: number, timeZone: string): { weekday: number; year: number; month: number; day: number; minutes: number; second: number } {
  const parts: Record<string, string> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(t))) parts[p.type] = p.value;
  return {
    weekday: WEEKDAYS.indexOf((parts.weekday ?? 'Sun') as Weekday),
    year: Number(parts.year),
    month: Number(parts.month),
    day: Number(parts.day),
    minutes: Number(parts.hour) * 60 + Number(parts.minute),
    second: Number(parts.second),
  };
}

/** The instant at which the wall clock in `timeZone` reads year-month-day + minutes (the earlier one on a DST overlap). */
function instantOf(year: number, month: number, day: number, minutes: number, timeZone: string): number {
  const wall = Date.UTC(year, month - 1, day, 0, minutes);
  // Two passes settle the offset, also across a DST change between the guess and the answer.
  let t = wall;
  for (let i = 0; i < 2; i++) {
    const l = localTime(t, timeZone);
    const shown = Date.UTC(l.year, l.month - 1, l.day, 0, l.minutes, l.second);
    t = t - (shown - wall);
  }
  return t;
}

/** Whether instant `t` falls inside `window`. */
export function inWindow(t: number, window: MaintenanceWindow): boolean {
  const { weekday, minutes } = localTime(t, window.timeZone);
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  const days = new Set(window.days.map((d) => WEEKDAYS.indexOf(d)));
  if (start < end) return days.has(weekday) && minutes >= start && minutes < end;
  // Past midnight: the evening of a listed day, or the small hours after one.
  return (days.has(weekday) && minutes >= start) || (days.has((weekday + 6) % 7) && minutes < end);
}

/** The first start of `window` at or after `t` (within the next eight days). */
export function nextWindowStart(t: number, window: MaintenanceWindow): number {
  const start = minutesOf(window.start);
  const days = new Set(window.days.map((d) => WEEKDAYS.indexOf(d)));
  let best = Number.POSITIVE_INFINITY;
  const today = localTime(t, window.timeZone);
  for (let offset = -1; offset <= 8; offset++) {
    // Calendar arithmetic on the local date (UTC fields as a plain calendar).
    const date = new Date(Date.UTC(today.year, today.month - 1, today.day + offset));
    if (!days.has(date.getUTCDay())) continue;
    const at = instantOf(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), start, window.timeZone);
    if (at >= t && at < best) best = at;
  }
  return best;
}

/**
 * Whether a change may apply at `now`, and if not, the earliest instant it may (and why it
 * waits). Freezes win over windows; a window that opens inside a freeze is skipped.
 */
export function nextOpening(now: number, schedule: Schedule): Opening {
  let t = Math.max(now, schedule.notBefore ?? now);
  let why = t > now ? `not before ${new Date(t).toISOString()} (the change's notBefore)` : '';
  // Each pass moves t forward to the end of a freeze or the start of a window; a bounded
  // number of passes covers any realistic overlap of the two.
  for (let pass = 0; pass < 100; pass++) {
    const freeze = schedule.freezes.find((f) => t >= Date.parse(f.from) && t < Date.parse(f.to));
    if (freeze) {
      t = Date.parse(freeze.to);
      why = `freeze until ${freeze.to}: ${freeze.reason}`;
      continue;
    }
    if (schedule.windows.length > 0 && !schedule.windows.some((w) => inWindow(t, w))) {
      t = Math.min(...schedule.windows.map((w) => nextWindowStart(t, w)));
      why = `outside the maintenance windows (${schedule.windows.map(describeWindow).join('; ')})`;
      continue;
    }
    return t <= now ? { open: true } : { open: false, until: t, why };
  }
  return { open: false, until: t, why: why || 'no opening found' };
}

/** `Sat,Sun 02:00–05:00 Europe/Berlin`. */
export function describeWindow(w: MaintenanceWindow): string {
  return `${w.days.join(',')} ${w.start}–${w.end} ${w.timeZone}`;
}
