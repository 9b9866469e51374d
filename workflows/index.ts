/**
 * Every workflow the fos1 workers register (the worker bundles this file: each exported
 * function is a workflow type, by its name). Failure types clients branch on are in
 * model/failures.ts (`FailureType`).
 */
export { changeWorkflow, statusQuery, confirmUpdate, abortSignal, abortUpdate, pauseUpdate, resumeUpdate, promoteUpdate, extendBakeUpdate } from './change';
export type { ChangeStatus, ChangePhase, NodeReport, OperatorAction, PromoteAction, ExtendBakeAction, WaveStatus } from './change';
export { rolloutWaveWorkflow, rolloutCheckWorkflow, waveStatusQuery } from './rollout-wave';
export type { WaveInput, WaveResult, WaveReport, WaveState, WaveNodeSummary } from './rollout-wave';
export { approveUpdate, rejectUpdate } from './approval';
export type { ApprovalStatus, WindowStatus } from './approval';
export { nodeChangeWorkflow, nodeProgressQuery, nodeDecisionSignal, nodeReadySignal } from './node-change';
export type { NodeChangeInput, NodeChangeResult, NodeDecision, NodeProgress } from './node-change';
export { nodeRestoreWorkflow, giveUpRestoreSignal } from './node-recovery';
export type { NodeRestoreInput, GiveUpRestore, RestoreRetryStatus } from './node-recovery';
export { policyChangeWorkflow } from './policy-change';
export type { PolicyChangeInput, PolicyChangeResult } from './policy-change';
export { enforcementWorkflow, verdictSignal, enforcementQuery, ENFORCER } from './enforcement';
export type { EnforcementInput, EnforcementStatus, EnforcementState } from './enforcement';
export { enforcementCoordinatorWorkflow, coordinatorQuery } from './enforcement-coordinator';
export type { CoordinatorStatus } from './enforcement-coordinator';
export { quarantineWorkflow } from './quarantine';
export type { QuarantineRequest, QuarantineResult } from './quarantine';
export { FailureType } from '../model/failures';
