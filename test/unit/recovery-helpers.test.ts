/**
 * The pure parts of recovery (issue 16): the node's store of first prepares (a repeat of a
 * run's prepare gets the first answer, durable on disk, pruned by age), the back-off of
 * retrying restores and of lock waits (bounded pauses, so the history of a wait of days
 * stays bounded), and the heartbeat helpers outside an activity.
 */
import { mkdtempSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { progress, withHeartbeats } from '../../activities/heartbeat';
import { PreparedStore } from '../../activities/prepared-store';
import { LOCK_WAIT_MAX_DELAY_MS, lockWaitDelayMs } from '../../workflows/support';

describe('PreparedStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-prepared-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('returns the first value stored for a key, from a new instance too (a restarted worker)', () => {
    const store = new PreparedStore(dir);
    expect(store.get('node-change/n1/run-1')).toBeUndefined();
    store.put('node-change/n1/run-1', { blocklist: { snapshot: { check: { kind: 'entries', present: [], absent: ['10.0.0.1/32'] } } } });
    const again = new PreparedStore(dir);
    expect(again.get('node-change/n1/run-1')).toEqual({ blocklist: { snapshot: { check: { kind: 'entries', present: [], absent: ['10.0.0.1/32'] } } } });
    expect(again.get('node-change/n1/run-2')).toBeUndefined();
    // One file per key, named by its hash: no key text in file names, no temp file left.
    expect(readdirSync(dir)).toEqual([expect.stringMatching(/^[0-9a-f]{64}\.json$/)]);
  });

  it('prunes entries older than its retention when it stores a new one', () => {
    const store = new PreparedStore(dir, 60_000);
    store.put('old', { a: 1 });
    const [file] = readdirSync(dir);
    const past = new Date(Date.now() - 120_000);
    utimesSync(join(dir, file as string), past, past);
    store.put('new', { b: 2 });
    expect(store.get('old')).toBeUndefined();
    expect(store.get('new')).toEqual({ b: 2 });
  });
});

describe('lockWaitDelayMs', () => {
  it('doubles from 250 ms to 5 s at first, then pauses a tenth of the time waited, at most an hour', () => {
    expect([250, 500, 1000, 2500, 5000].map((d) => lockWaitDelayMs(d, 1000))).toEqual([500, 1000, 2000, 5000, 5000]);
    expect(lockWaitDelayMs(5000, 600_000)).toBe(60_000);
    expect(lockWaitDelayMs(60_000, 10 * 3_600_000)).toBe(LOCK_WAIT_MAX_DELAY_MS);
  });

  it('needs a few hundred tries for the longest lockTimeout (7 days)', () => {
    const week = 7 * 24 * 3_600_000;
    let waited = 0;
    let delay = 250;
    let tries = 0;
    while (waited < week) {
      waited += delay;
      delay = lockWaitDelayMs(delay, waited);
      tries++;
    }
    expect(tries).toBeGreaterThan(150);
    expect(tries).toBeLessThan(300);
  });
});

describe('heartbeat helpers outside an activity', () => {
  it('run the work and yield, heartbeating nothing', async () => {
    await expect(withHeartbeats({ phase: 'test' }, async () => 42)).resolves.toBe(42);
    await expect(progress({ phase: 'test' })).resolves.toBeUndefined();
  });
});
