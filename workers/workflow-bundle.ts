/**
 * How fos1's workflow code is bundled: the one set of options every worker, script and test
 * that bundles it uses (workers/fos1-worker.ts, scripts/build-workflow-bundle.ts,
 * scripts/start-dev.ts, test/helpers/workflow-bundle.ts, …).
 *
 * A worker evaluates the bundle's modules again for every workflow it starts (the SDK's
 * reusable V8 context gives each workflow a fresh module cache), so what a workflow imports
 * costs CPU on every start: in bench/rollout, with a V8 profile of a node host, it was ~40 %
 * of a node worker's CPU. The entry, workflows/worker-entry.ts, loads each workflow's modules
 * on its first call, so a node workflow evaluates only its own module graph.
 *
 * Not done, on purpose: preloading zod (the SDK's `preloadModules`, evaluated once per worker
 * and deep-frozen). zod 4 initialises parts of itself lazily — its default locale on the first
 * schema a workflow builds, members on first read — and writes them into objects the SDK has
 * frozen by then; tried, it failed workflow tasks with "object is not extensible".
 */
import type { BundleOptions } from '@temporalio/worker';

/** The workers' workflow entry (see workflows/worker-entry.ts for why it is not workflows/index.ts). */
export const WORKFLOWS_PATH = require.resolve('../workflows/worker-entry');

/** `bundleWorkflowCode` options for fos1's workflows; `extra` adds interceptor modules, a logger. */
export function workflowBundleOptions(extra: Omit<BundleOptions, 'workflowsPath'> = {}): BundleOptions {
  return { workflowsPath: WORKFLOWS_PATH, ...extra };
}
