/**
 * Every workflow the fos1 workers register (the worker bundles this file: each exported
 * function is a workflow type, by its name). Failure types clients branch on are in
 * model/failures.ts (`FailureType`).
 *
 * Each workflow that keeps an audit trail is registered through `withDurableAudit`
 * (workflows/support.ts): however it ends, it first waits until every audit record it made
 * is in the durable audit store (docs/audit.md). Clients start them by name, as before.
 */
import { changeWorkflow as changeWorkflowImpl } from './change';
import { enforcementWorkflow as enforcementWorkflowImpl } from './enforcement';
import { nodeChangeWorkflow as nodeChangeWorkflowImpl } from './node-change';
import { nodeRestoreWorkflow as nodeRestoreWorkflowImpl } from './node-recovery';
import { policyChangeWorkflow as policyChangeWorkflowImpl } from './policy-change';
import { quarantineWorkflow as quarantineWorkflowImpl } from './quarantine';
import { rolloutWaveWorkflow as rolloutWaveWorkflowImpl } from './rollout-wave';
import { withDurableAudit } from './support';

export const changeWorkflow = withDurableAudit(changeWorkflowImpl);
export const rolloutWaveWorkflow = withDurableAudit(rolloutWaveWorkflowImpl);
export const nodeChangeWorkflow = withDurableAudit(nodeChangeWorkflowImpl);
/** A node's rollback that keeps retrying, continued as new from nodeChangeWorkflow (workflows/node-recovery.ts). */
export const nodeRestoreWorkflow = withDurableAudit(nodeRestoreWorkflowImpl);
export const policyChangeWorkflow = withDurableAudit(policyChangeWorkflowImpl);
export const enforcementWorkflow = withDurableAudit(enforcementWorkflowImpl);
export const quarantineWorkflow = withDurableAudit(quarantineWorkflowImpl);
export { apiAuditWorkflow } from './api-audit';
export type { ApiAuditInput } from './api-audit';
export { statusQuery, confirmUpdate, abortSignal, abortUpdate, pauseUpdate, resumeUpdate, promoteUpdate, extendBakeUpdate } from './change';
export type { ChangeStatus, ChangePhase, NodeReport, OperatorAction, PromoteAction, ExtendBakeAction, WaveStatus } from './change';
export { rolloutCheckWorkflow, waveStatusQuery } from './rollout-wave';
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
export { enforcementCoordinatorWorkflow, coordinatorQuery } from './enforcement-coordinator';
export type { CoordinatorStatus } from './enforcement-coordinator';
export type { QuarantineRequest, QuarantineResult } from './quarantine';
export { FailureType } from '../model/failures';
