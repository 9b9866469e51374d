/**
 * Every workflow the fos1 workers register, with the signals, queries and updates clients
 * send them: what clients import. The workers bundle workflows/worker-entry.ts, which defines
 * the workflow types (each exported function, by its name) and loads each workflow's modules
 * on its first call. Failure types clients branch on are in model/failures.ts (`FailureType`).
 *
 * Each workflow that keeps an audit trail is registered through `withDurableAudit`
 * (workflows/support.ts): however it ends, it first waits until every audit record it made
 * is in the durable audit store (docs/audit.md). Clients start them by name, as before.
 */
export {
  apiAuditWorkflow,
  changeWorkflow,
  enforcementCoordinatorWorkflow,
  enforcementWorkflow,
  nodeChangeWorkflow,
  nodeRestoreWorkflow,
  policyChangeWorkflow,
  quarantineWorkflow,
  rolloutCheckWorkflow,
  rolloutWaveWorkflow,
} from './worker-entry';
export type { ApiAuditInput } from './api-audit';
export { statusQuery, confirmUpdate, abortSignal, abortUpdate, pauseUpdate, resumeUpdate, promoteUpdate, extendBakeUpdate } from './change';
export type { ChangeStatus, ChangePhase, NodeReport, OperatorAction, PromoteAction, ExtendBakeAction, WaveStatus } from './change';
export { waveStatusQuery } from './rollout-wave';
export type { WaveInput, WaveResult, WaveReport, WaveState, WaveNodeSummary } from './rollout-wave';
export { approveUpdate, rejectUpdate } from './approval';
export type { ApprovalStatus, WindowStatus } from './approval';
export { nodeProgressQuery, nodeDecisionSignal, nodeReadySignal } from './node-change';
export type { NodeChangeInput, NodeChangeResult, NodeDecision, NodeProgress } from './node-change';
export { giveUpRestoreSignal } from './node-recovery';
export type { NodeRestoreInput, GiveUpRestore, RestoreRetryStatus } from './node-recovery';
export type { PolicyChangeInput, PolicyChangeResult } from './policy-change';
export { verdictSignal, enforcementQuery, ENFORCER } from './enforcement';
export type { EnforcementInput, EnforcementStatus, EnforcementState } from './enforcement';
export { coordinatorQuery } from './enforcement-coordinator';
export type { CoordinatorStatus } from './enforcement-coordinator';
export type { QuarantineRequest, QuarantineResult } from './quarantine';
export { FailureType } from '../model/failures';
