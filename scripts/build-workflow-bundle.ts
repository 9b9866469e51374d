/**
 * Builds the workflow bundle ahead of time, for FOS1_WORKFLOW_BUNDLE (workers/config.ts):
 * a worker that loads it polls as soon as it is connected instead of bundling workflows/
 * first (13.6 s of a restart on the loaded 2-core test machine; issue 16, recovery).
 *
 *   npx tsx scripts/build-workflow-bundle.ts <out.js> [--tracing]
 *
 * Build it from the same tree the worker runs (an image build step): a bundle from other
 * sources runs other workflow code. `--tracing` includes the OpenTelemetry workflow
 * interceptors, for workers started with tracing (telemetry/tracing.ts).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { TRACING_WORKFLOW_INTERCEPTOR_MODULES } from '../telemetry/tracing';
import { workflowBundleOptions } from '../workers/workflow-bundle';

/** Bundles workflows/ into `out` (written whole, then renamed); returns its size in bytes. */
export async function buildWorkflowBundle(out: string, options: { tracing?: boolean } = {}): Promise<number> {
  const tracing = options.tracing ?? false;
  const bundle = await bundleWorkflowCode(
    workflowBundleOptions({
      ...(tracing ? { workflowInterceptorModules: TRACING_WORKFLOW_INTERCEPTOR_MODULES } : {}),
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn: (m: string) => console.warn(m), error: (m: string) => console.error(m) },
    }),
  );
  mkdirSync(dirname(out), { recursive: true });
  // Written whole, then renamed: a worker never loads half a bundle.
  writeFileSync(`${out}.tmp`, bundle.code);
  renameSync(`${out}.tmp`, out);
  return bundle.code.length;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const tracing = args.includes('--tracing');
  const rest = args.filter((a) => a !== '--tracing');
  if (rest.length !== 1 || !rest[0]?.endsWith('.js')) throw new Error('usage: build-workflow-bundle.ts <out.js> [--tracing]');
  const out = resolve(rest[0]);
  const started = Date.now();
  const bytes = await buildWorkflowBundle(out, { tracing });
  console.log(`workflow bundle ${out}: ${bytes} bytes${tracing ? ', with tracing interceptors' : ''} in ${Date.now() - started} ms`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
