/** The production workflow code (workflows/index.ts), bundled once per test file, quietly. */
import { bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';

let bundle: Promise<WorkflowBundle> | undefined;

/** Bundles workflows/index.ts once per test file. */
export function workflowBundle(): Promise<WorkflowBundle> {
  bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows/index'), logger: quietBundlerLogger });
  return bundle;
}

const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: (message: string) => console.error(message),
};
