/**
 * Change windows and freezes: time-zone-aware weekly windows (across DST and midnight),
 * freezes that win over windows, notBefore, and the opening a waiting change sleeps until.
 */
import { inWindow, localTime, nextOpening, nextWindowStart, type MaintenanceWindow } from '../../model/change-window';

const at = (iso: string) => Date.parse(iso);
const berlin: MaintenanceWindow = { days: ['Sat', 'Sun'], start: '02:00', end: '05:00', timeZone: 'Europe/Berlin' };

describe('maintenance windows', () => {
  it('reads wall-clock time in the window\'s zone, daylight saving included', () => {
    // 2026-07-04 is a Saturday; Berlin is UTC+2 in summer, UTC+1 in winter.
    expect(localTime(at('2026-07-04T00:30:00Z'), 'Europe/Berlin')).toMatchObject({ weekday: 6, minutes: 150 });
    expect(localTime(at('2026-12-05T01:30:00Z'), 'Europe/Berlin')).toMatchObject({ weekday: 6, minutes: 150 });
  });

  it('contains instants inside the local interval only', () => {
    expect(inWindow(at('2026-07-04T00:00:00Z'), berlin)).toBe(true); // Sat 02:00 CEST
    expect(inWindow(at('2026-07-03T23:59:00Z'), berlin)).toBe(false); // Sat 01:59 CEST
    expect(inWindow(at('2026-07-04T03:00:00Z'), berlin)).toBe(false); // Sat 05:00 CEST: end excluded
    expect(inWindow(at('2026-07-06T00:30:00Z'), berlin)).toBe(false); // Mon 02:30
  });

  it('runs past midnight when end is before start; days name the starting day', () => {
    const night: MaintenanceWindow = { days: ['Fri'], start: '22:00', end: '02:00', timeZone: 'UTC' };
    expect(inWindow(at('2026-07-03T23:00:00Z'), night)).toBe(true); // Fri 23:00
    expect(inWindow(at('2026-07-04T01:00:00Z'), night)).toBe(true); // Sat 01:00
    expect(inWindow(at('2026-07-04T23:00:00Z'), night)).toBe(false); // Sat 23:00
  });

  it('finds the next start in the zone, in summer and in winter', () => {
    expect(new Date(nextWindowStart(at('2026-07-01T12:00:00Z'), berlin)).toISOString()).toBe('2026-07-04T00:00:00.000Z');
    expect(new Date(nextWindowStart(at('2026-12-01T12:00:00Z'), berlin)).toISOString()).toBe('2026-12-05T01:00:00.000Z');
    // Late on Saturday in the window's zone: Sunday's window is next.
    expect(new Date(nextWindowStart(at('2026-07-04T10:00:00Z'), berlin)).toISOString()).toBe('2026-07-05T00:00:00.000Z');
  });
});

describe('nextOpening', () => {
  it('is open with no windows, no freezes and no notBefore', () => {
    expect(nextOpening(at('2026-07-01T12:00:00Z'), { windows: [], freezes: [] })).toEqual({ open: true });
  });

  it('waits for notBefore', () => {
    expect(nextOpening(at('2026-07-01T12:00:00Z'), { windows: [], freezes: [], notBefore: at('2026-07-01T13:00:00Z') })).toEqual({ open: false, until: at('2026-07-01T13:00:00Z'), why: expect.stringContaining('notBefore') });
  });

  it('waits for the next window, then past a freeze that covers it', () => {
    const now = at('2026-07-01T12:00:00Z');
    expect(nextOpening(now, { windows: [berlin], freezes: [] })).toMatchObject({ open: false, until: at('2026-07-04T00:00:00Z'), why: expect.stringContaining('Sat,Sun 02:00–05:00 Europe/Berlin') });
    const freeze = { from: '2026-07-03T00:00:00Z', to: '2026-07-05T01:00:00Z', reason: 'summer release' };
    // Saturday's window and the first hour of Sunday's are frozen: it opens at Sunday 03:00 CEST.
    expect(nextOpening(now, { windows: [berlin], freezes: [freeze] })).toMatchObject({ open: false, until: at('2026-07-05T01:00:00Z') });
    expect(nextOpening(at('2026-07-03T06:00:00Z'), { windows: [], freezes: [freeze] })).toMatchObject({ open: false, until: at('2026-07-05T01:00:00Z'), why: 'freeze until 2026-07-05T01:00:00Z: summer release' });
  });

  it('is open inside a window', () => {
    expect(nextOpening(at('2026-07-04T01:00:00Z'), { windows: [berlin], freezes: [] })).toEqual({ open: true });
  });
});
