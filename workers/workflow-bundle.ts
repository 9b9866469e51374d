/**
 * How fos1's workflow code is bundled: the one set of options every worker, script and test
 * that bundles it uses (workers/fos1-worker.ts, scripts/build-workflow-bundle.ts,
 * scripts/start-dev.ts, test/helpers/workflow-bundle.ts, …).
 *
 * A worker evaluates the bundle's modules again for every workflow it starts (the SDK's
 * reusable V8 context gives each workflow a fresh module cache), so what a workflow imports
 * costs CPU on every start: measured in bench/rollout with a V8 profile of a node host, it was
 * ~40 % of a node worker's CPU. Two things keep it small:
 * - the entry, workflows/worker-entry.ts, loads each workflow's modules on its first call, so
 *   a node workflow evaluates only its own module graph;
 * - zod, which every model module imports, is preloaded: evaluated once per worker, before
 *   any workflow, and shared by all of them (the SDK freezes what it exports).
 */
import type { BundleOptions } from '@temporalio/worker';

/** The workers' workflow entry (see workflows/worker-entry.ts for why it is not workflows/index.ts). */
export const WORKFLOWS_PATH = require.resolve('../workflows/worker-entry');

/**
 * Modules evaluated once per worker and shared by its workflows. Only modules with no state
 * that differs between workflows belong here, and nothing that imports `@temporalio/workflow`:
 * zod keeps none (its schemas are built by each workflow's own model modules; its module-level
 * state is its default error messages and an empty global registry fos1 never writes).
 */
export const WORKFLOW_PRELOAD_MODULES = ['zod'];

/** `bundleWorkflowCode` options for fos1's workflows; `extra` adds interceptor modules, a logger. */
export function workflowBundleOptions(extra: Omit<BundleOptions, 'workflowsPath' | 'preloadModules'> = {}): BundleOptions {
  return { workflowsPath: WORKFLOWS_PATH, preloadModules: WORKFLOW_PRELOAD_MODULES, ...extra };
}
