/** Every workflow the fos1 workers register (the worker bundles this file). */
export { changeWorkflow, statusQuery, confirmUpdate, abortSignal, ChangeFailureType } from './change';
export type { ChangeStatus, ChangePhase, NodeReport, OperatorAction } from './change';
export { nodeChangeWorkflow, nodeProgressQuery, nodeDecisionSignal, nodeReadySignal } from './node-change';
export type { NodeChangeInput, NodeChangeResult, NodeDecision, NodeProgress } from './node-change';
export { policyChangeWorkflow, PolicyFailureType } from './policy-change';
export type { PolicyChangeInput, PolicyChangeResult } from './policy-change';
export { enforcementWorkflow, enforcementCoordinatorWorkflow, verdictSignal, enforcementQuery, coordinatorQuery, ENFORCER } from './enforcement';
export type { EnforcementInput, EnforcementStatus, EnforcementState, CoordinatorStatus } from './enforcement';
export { quarantineWorkflow, QuarantineFailureType } from './quarantine';
export type { QuarantineRequest, QuarantineResult } from './quarantine';
