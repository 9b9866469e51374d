/**
 * Client-side helpers for tests that drive change workflows.
 */
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { statusQuery, type changeWorkflow, type ChangeStatus } from '../../workflows/change';

/** Waits for a change that must fail; returns the failure type and the status from its details. */
export async function changeFailure(handle: WorkflowHandle<typeof changeWorkflow>): Promise<{ type: string | undefined; status: ChangeStatus }> {
  const err = await handle.result().then(
    () => {
      throw new Error('expected the change to fail');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as { type?: string; details?: unknown[] };
  return { type: cause.type, status: cause.details?.[0] as ChangeStatus };
}

/** Polls the `status` query until the change reaches `phase` (15 s at most). */
export async function waitForPhase(handle: WorkflowHandle<typeof changeWorkflow>, phase: ChangeStatus['phase']): Promise<ChangeStatus> {
  for (let i = 0; i < 300; i++) {
    const status = await handle.query(statusQuery);
    if (status.phase === phase) return status;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`workflow never reached phase ${phase}`);
}
