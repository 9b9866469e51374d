/**
 * The failure vocabulary (model/failures.ts) and the one error translation of the activities
 * (activities/failures.ts): what each error class becomes, in which domain, and whether it
 * is retried; how a wrapped failure is read back.
 */
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, RetryState, TimeoutFailure, TimeoutType } from '@temporalio/common';
import { classifyError, ErrorDomains, InjectedFaultError, translateErrors, translateErrorsSync } from '../../activities/failures';
import { ForeignStateError, NetworkApplyError } from '../../activities/system/network-errors';
import { BlocklistFileError } from '../../bpf/blocklist-image';
import { BpfError, BpfMapFullError } from '../../bpf/libbpf';
import { KubeApiError } from '../../k8s/client';
import { failure, FailureType, isRetryable, summariseFailure, UNKNOWN_FAILURE, VerificationError } from '../../model/failures';
import { IpParseError } from '../../model/ip';
import { QuarantineInputError } from '../../model/quarantine';

describe('failure vocabulary', () => {
  test('every type is named after itself, and failure() takes its retryability from the vocabulary', () => {
    for (const [key, value] of Object.entries(FailureType)) expect(key).toBe(value);
    expect(failure(FailureType.InvalidBlocklist, 'bad line').nonRetryable).toBe(true);
    expect(failure(FailureType.KubeUnavailable, '503').nonRetryable).toBe(false);
    expect(failure(FailureType.BpfError, 'EIO').nonRetryable).toBe(false);
    expect(failure(FailureType.BlocklistVerifyFailed, 'differs').nonRetryable).toBe(false);
    expect(isRetryable('SomethingTemporalRaised')).toBe(true);
  });

  test('the names clients branch on are unchanged', () => {
    for (const name of ['ChangeRolledBack', 'RollbackFailed', 'NodeBusy', 'InvalidChangeRequest', 'InvalidBlocklist', 'BlocklistRefNotFound', 'PolicyRolledBack', 'PolicyRollbackFailed', 'PolicyConflict', 'PolicyRejected', 'PolicyMapOverflow', 'QuarantineRolledBack', 'QuarantineRollbackFailed', 'NoEndpoint', 'LabelConflict', 'VerificationFailed']) {
      expect(FailureType).toHaveProperty(name, name);
    }
  });

  test('summariseFailure finds the typed failure under activity and child-workflow wrappers', () => {
    const inner = failure(FailureType.NoEndpoint, 'no running pod has the address 10.0.0.9');
    const activity = new ActivityFailure('Activity task failed', 'findEndpoint', '1', RetryState.NON_RETRYABLE_FAILURE, undefined, inner);
    const child = new ChildWorkflowFailure('default', { workflowId: 'q', runId: 'r' }, 'quarantineWorkflow', RetryState.NON_RETRYABLE_FAILURE, activity);
    expect(summariseFailure(child)).toEqual({ type: 'NoEndpoint', message: 'no running pod has the address 10.0.0.9' });
    expect(summariseFailure(new VerificationError(['route 10.0.0.0/8 missing']))).toEqual({ type: 'VerificationFailed', message: 'read-back differs from the desired state: route 10.0.0.0/8 missing' });
  });

  test('without a typed failure: UnknownFailure with the innermost message', () => {
    const timeout = new TimeoutFailure('activity StartToClose timeout', undefined, TimeoutType.START_TO_CLOSE);
    const activity = new ActivityFailure('Activity task failed', 'syncRoutes', '1', RetryState.TIMEOUT, undefined, timeout);
    expect(summariseFailure(activity)).toEqual({ type: UNKNOWN_FAILURE, message: 'activity StartToClose timeout' });
    expect(summariseFailure('plain string')).toEqual({ type: UNKNOWN_FAILURE, message: 'plain string' });
  });
});

describe('error translation', () => {
  test('kernel and eBPF errors read the same in every domain', () => {
    for (const domain of Object.values(ErrorDomains)) {
      expect(classifyError(new NetworkApplyError('Rule', 'add rule 100', 'File exists'), domain)).toMatchObject({ type: 'RuleApplyFailed', nonRetryable: true });
      expect(classifyError(new ForeignStateError('table holds a chain fos1 did not write'), domain)).toMatchObject({ type: 'ForeignState', nonRetryable: true });
      expect(classifyError(new InjectedFaultError('after routes'), domain)).toMatchObject({ type: 'InjectedFault', nonRetryable: true });
      expect(classifyError(new BpfMapFullError('update', 28, 'fos1_block_v4', 16), domain)).toMatchObject({ type: 'BlocklistMapFull', nonRetryable: true });
      // The base class last: its subclasses are more specific.
      expect(classifyError(new BpfError('update', 5, 'fos1_block_v4', 'update failed: EIO'), domain)).toMatchObject({ type: 'BpfError', nonRetryable: false });
    }
  });

  test('bad input is the domain’s own failure, and stays as thrown where the domain parses none', () => {
    expect(classifyError(new IpParseError('"10.0.0.300" is not an IPv4 address'), ErrorDomains.blocklist)).toMatchObject({ type: 'InvalidBlocklist', nonRetryable: true });
    expect(classifyError(new BlocklistFileError(3, 'bad prefix'), ErrorDomains.blocklist)).toMatchObject({ type: 'InvalidBlocklist', message: 'blocklist line 3: bad prefix' });
    expect(classifyError(new QuarantineInputError('label', 'must be key=value'), ErrorDomains.quarantine)).toMatchObject({ type: 'InvalidQuarantine', nonRetryable: true });
    expect(classifyError(new RangeError('expiresAt out of range'), ErrorDomains.node)).toBeUndefined();
  });

  test('an apiserver refusal means what the domain says; a busy apiserver is retried everywhere', () => {
    expect(classifyError(new KubeApiError(409, 'Conflict', 'Apply failed with 1 conflict'), ErrorDomains.cilium)).toMatchObject({ type: 'PolicyConflict', nonRetryable: true, message: expect.stringMatching(/another field manager owns these fields/) });
    expect(classifyError(new KubeApiError(409, 'Conflict', 'Apply failed with 1 conflict'), ErrorDomains.quarantine)).toMatchObject({ type: 'LabelConflict', message: expect.stringMatching(/another field manager set this label/) });
    expect(classifyError(new KubeApiError(422, 'Invalid', 'spec.x: Invalid value'), ErrorDomains.quarantine)).toMatchObject({ type: 'QuarantineRejected', nonRetryable: true });
    expect(classifyError(new KubeApiError(500, 'InternalError', 'failed to create typed patch object: .spec.bogus: field not declared in schema'), ErrorDomains.cilium)).toMatchObject({ type: 'PolicyRejected', nonRetryable: true });
    for (const domain of [ErrorDomains.cilium, ErrorDomains.quarantine]) {
      expect(classifyError(new KubeApiError(503, 'ServiceUnavailable', 'etcd leader changed'), domain)).toMatchObject({ type: 'KubeUnavailable', nonRetryable: false });
    }
    // The node's activities talk to no apiserver: such an error is not theirs to name.
    expect(classifyError(new KubeApiError(409, 'Conflict', 'x'), ErrorDomains.node)).toBeUndefined();
  });

  test('typed failures pass through unchanged; unknown errors are rethrown as they are', async () => {
    const typed = ApplicationFailure.create({ type: 'NoEndpoint', message: 'gone', nonRetryable: true });
    await expect(translateErrors(ErrorDomains.quarantine, () => Promise.reject(typed))).rejects.toBe(typed);
    const unknown = new TypeError('undefined is not a function');
    await expect(translateErrors(ErrorDomains.node, () => Promise.reject(unknown))).rejects.toBe(unknown);
    expect(() => translateErrorsSync(ErrorDomains.blocklist, () => { throw new IpParseError('bad'); })).toThrow(expect.objectContaining({ type: 'InvalidBlocklist' }));
    await expect(translateErrors(ErrorDomains.node, () => 42)).resolves.toBe(42);
  });
});
