/**
 * The workers' workflow bundle entry (workers/workflow-bundle.ts bundles this file): every
 * workflow type fos1 registers, by its name. workflows/index.ts re-exports these for clients,
 * with the signal, query and update definitions.
 *
 * **Each workflow loads its own modules on its first call.** A worker evaluates the bundle's
 * entry with a fresh module cache for every workflow it starts (or takes back after a cache
 * eviction), so an entry that imported every workflow would build every module's zod schemas
 * for each node workflow: in bench/rollout that was ~40 % of a node worker's CPU (a V8 profile
 * of a node host), most of it the change request's strategy, gate and cluster-policy schemas a
 * node workflow never uses. Here a workflow evaluates only its own module graph (node-change
 * imports model/node-change-input.ts, not model/change-request.ts).
 *
 * Replay-safe: evaluating a module issues no command, so loading it inside the first
 * activation instead of before it leaves every history's commands as they were (test/replay).
 * Each workflow that keeps an audit trail is wrapped by `withDurableAudit` (workflows/support.ts),
 * as before: however it ends, it first waits until its audit records are durably stored.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- a synchronous require() inside each
   workflow function is what defers a module's evaluation to that workflow's first call; an
   `import()` would add a microtask before the workflow's first command. */
import type * as ApiAudit from './api-audit';
import type * as Change from './change';
import type * as Enforcement from './enforcement';
import type * as EnforcementCoordinator from './enforcement-coordinator';
import type * as NodeChange from './node-change';
import type * as NodeRecovery from './node-recovery';
import type * as PolicyChange from './policy-change';
import type * as Quarantine from './quarantine';
import type * as RolloutWave from './rollout-wave';
import { withDurableAudit } from './support';

export const changeWorkflow = withDurableAudit(function changeWorkflow(...args: Parameters<typeof Change.changeWorkflow>) {
  return (require('./change') as typeof Change).changeWorkflow(...args);
});
export const rolloutWaveWorkflow = withDurableAudit(function rolloutWaveWorkflow(...args: Parameters<typeof RolloutWave.rolloutWaveWorkflow>) {
  return (require('./rollout-wave') as typeof RolloutWave).rolloutWaveWorkflow(...args);
});
export const nodeChangeWorkflow = withDurableAudit(function nodeChangeWorkflow(...args: Parameters<typeof NodeChange.nodeChangeWorkflow>) {
  return (require('./node-change') as typeof NodeChange).nodeChangeWorkflow(...args);
});
/** A node's rollback that keeps retrying, continued as new from nodeChangeWorkflow (workflows/node-recovery.ts). */
export const nodeRestoreWorkflow = withDurableAudit(function nodeRestoreWorkflow(...args: Parameters<typeof NodeRecovery.nodeRestoreWorkflow>) {
  return (require('./node-recovery') as typeof NodeRecovery).nodeRestoreWorkflow(...args);
});
export const policyChangeWorkflow = withDurableAudit(function policyChangeWorkflow(...args: Parameters<typeof PolicyChange.policyChangeWorkflow>) {
  return (require('./policy-change') as typeof PolicyChange).policyChangeWorkflow(...args);
});
export const enforcementWorkflow = withDurableAudit(function enforcementWorkflow(...args: Parameters<typeof Enforcement.enforcementWorkflow>) {
  return (require('./enforcement') as typeof Enforcement).enforcementWorkflow(...args);
});
export const quarantineWorkflow = withDurableAudit(function quarantineWorkflow(...args: Parameters<typeof Quarantine.quarantineWorkflow>) {
  return (require('./quarantine') as typeof Quarantine).quarantineWorkflow(...args);
});

// Workflows without an audit trail of their own.
export function apiAuditWorkflow(...args: Parameters<typeof ApiAudit.apiAuditWorkflow>): ReturnType<typeof ApiAudit.apiAuditWorkflow> {
  return (require('./api-audit') as typeof ApiAudit).apiAuditWorkflow(...args);
}
export function rolloutCheckWorkflow(...args: Parameters<typeof RolloutWave.rolloutCheckWorkflow>): ReturnType<typeof RolloutWave.rolloutCheckWorkflow> {
  return (require('./rollout-wave') as typeof RolloutWave).rolloutCheckWorkflow(...args);
}
export function enforcementCoordinatorWorkflow(...args: Parameters<typeof EnforcementCoordinator.enforcementCoordinatorWorkflow>): ReturnType<typeof EnforcementCoordinator.enforcementCoordinatorWorkflow> {
  return (require('./enforcement-coordinator') as typeof EnforcementCoordinator).enforcementCoordinatorWorkflow(...args);
}
