/**
 * Replay safety: every committed history in test/replay/histories (recorded by
 * scripts/record-histories.ts from the workflow code that runs in production) must replay
 * against the current workflow code. A change that would make a running execution issue
 * different commands — an activity moved, a timer added, a child started in another order —
 * fails here with the SDK's non-determinism error, instead of failing the long-lived
 * enforcement and coordinator workflows in production. Such a change needs `patched()`:
 * see docs/workflow-versioning.md.
 *
 * No server and no root: the replay worker feeds the histories to the workflow code itself.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DefaultLogger, Runtime, Worker, type InjectedSinks } from '@temporalio/worker';
import type { AuditSinks } from '../../model/audit';
import type { MetricsSinks } from '../../model/metrics';
import { metricsSinks } from '../../metrics/registry';
import { historyFromObject } from '../helpers/history-file';
import { workflowBundle } from '../helpers/time-skipping';

const DIR = join(__dirname, 'histories');

interface RecordedHistory {
  workflowId: string;
  workflowType: string;
  scenario: string;
  recordedFrom: string;
  history: unknown;
}

const files = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort();
const recorded = files.map((file) => ({ file, ...(JSON.parse(readFileSync(join(DIR, file), 'utf8')) as RecordedHistory) }));

describe('replay of recorded workflow histories', () => {
  beforeAll(() => {
    try {
      Runtime.install({ logger: new DefaultLogger('ERROR') });
    } catch {
      // Already installed by another test file in this worker process.
    }
  });

  it('covers every workflow that outlives a deployment', () => {
    const types = new Set(recorded.map((r) => r.workflowType));
    for (const type of ['changeWorkflow', 'nodeChangeWorkflow', 'enforcementWorkflow', 'enforcementCoordinatorWorkflow', 'quarantineWorkflow']) {
      expect({ type, recorded: types.has(type) }).toEqual({ type, recorded: true });
    }
    // A run that continued as new, and one that started from carried state.
    expect(recorded.some((r) => JSON.stringify(r.history).includes('EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW'))).toBe(true);
  });

  it('replays every history against the current workflow code', async () => {
    const sinks: InjectedSinks<AuditSinks & MetricsSinks> = {
      audit: { record: { fn: () => undefined, callDuringReplay: false } },
      // The workers' own metrics sinks: never called during replay (callDuringReplay: false).
      ...metricsSinks(),
    };
    const histories = recorded.map((r) => ({ workflowId: r.workflowId, history: historyFromObject(r.history) }));
    const failures: string[] = [];
    let replayed = 0;
    for await (const result of Worker.runReplayHistories({ workflowBundle: await workflowBundle(), replayName: 'fos1-replay-test', sinks }, histories)) {
      replayed++;
      if (result.error) {
        const source = recorded[replayed - 1];
        failures.push(`${source?.file ?? result.workflowId} (recorded from ${source?.recordedFrom ?? '?'}): ${result.error.name}: ${result.error.message}`);
      }
    }
    expect(failures).toEqual([]);
    expect(replayed).toBe(recorded.length);
  });
});
