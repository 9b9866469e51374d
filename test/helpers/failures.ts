/**
 * Awaits a promise that must reject with an ApplicationFailure (an activity's typed
 * failure, called directly) and returns it; any other outcome fails the test.
 */
import { ApplicationFailure } from '@temporalio/common';

export async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error('expected a failure');
}
