/**
 * Polling for tests that watch real systems settle (a map entry appearing, a workflow
 * recording a step): the probe runs until `ok` holds or the time is up, and the error
 * says what was awaited and the last value seen.
 */

/** Polls `probe` every `intervalMs` until `ok(value)`; returns that value or throws after `ms`. */
export async function eventually<T>(probe: () => T | Promise<T>, ok: (v: T) => boolean, what: string, ms = 30_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Waits until `check()` is true (a condition without a value worth reporting). */
export async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  await eventually(check, (v) => v, what, ms, 20);
}
