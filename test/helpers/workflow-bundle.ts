/** The production workflow code (workflows/index.ts), bundled once per test file, quietly. */
import { bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import { TRACING_WORKFLOW_INTERCEPTOR_MODULES } from '../../telemetry/tracing';
import { workflowBundleOptions } from '../../workers/workflow-bundle';

let bundle: Promise<WorkflowBundle> | undefined;
let tracedBundle: Promise<WorkflowBundle> | undefined;

/**
 * Bundles workflows/index.ts once per test file; `traced` adds the OpenTelemetry workflow
 * interceptors (telemetry/tracing.ts), as a worker with tracing on bundles them.
 */
export function workflowBundle(options: { traced?: boolean } = {}): Promise<WorkflowBundle> {
  if (options.traced) {
    tracedBundle ??= bundleWorkflowCode(workflowBundleOptions({ workflowInterceptorModules: TRACING_WORKFLOW_INTERCEPTOR_MODULES, logger: quietBundlerLogger }));
    return tracedBundle;
  }
  bundle ??= bundleWorkflowCode(workflowBundleOptions({ logger: quietBundlerLogger }));
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
