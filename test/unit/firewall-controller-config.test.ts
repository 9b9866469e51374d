/** The controller entry point's configuration: parsed once, every bad variable named. */
import { parseControllerConfig } from '../../controllers/main';

describe('parseControllerConfig', () => {
  it('fills defaults and treats an empty kubeconfig path as "in-cluster or default"', () => {
    expect(parseControllerConfig({})).toMatchObject({ kubeconfigPath: undefined, temporal: { address: 'localhost:7233', namespace: 'default', tls: undefined }, logLevel: 'info' });
    expect(parseControllerConfig({ KUBECONFIG_PATH: '/etc/fos1/kubeconfig', TEMPORAL_ADDRESS: 'temporal:7233' })).toMatchObject({ kubeconfigPath: '/etc/fos1/kubeconfig', temporal: { address: 'temporal:7233' } });
  });

  it('takes the Lease from the pod: its namespace, and the pod name plus the pid as the candidate', () => {
    expect(parseControllerConfig({ POD_NAMESPACE: 'fos1-system', POD_NAME: 'fos1-controller-abc' }).lease).toEqual({ namespace: 'fos1-system', name: 'fos1-controller', identity: `fos1-controller-abc-${process.pid}`, leaseDurationSeconds: 15 });
    expect(parseControllerConfig({ FOS1_LEASE_NAMESPACE: 'ops', FOS1_LEASE_NAME: 'ctl', FOS1_LEASE_IDENTITY: 'me', FOS1_LEASE_DURATION_SECONDS: '30' }).lease).toEqual({ namespace: 'ops', name: 'ctl', identity: 'me', leaseDurationSeconds: 30 });
    expect(() => parseControllerConfig({ FOS1_LEASE_DURATION_SECONDS: '1', FOS1_LEASE_NAME: 'Bad Name' })).toThrow(/FOS1_LEASE_NAME: must be a Kubernetes object name[\s\S]*FOS1_LEASE_DURATION_SECONDS: must be at least 2 seconds|FOS1_LEASE_DURATION_SECONDS: must be at least 2 seconds[\s\S]*FOS1_LEASE_NAME: must be a Kubernetes object name/);
  });

  it('names every bad variable', () => {
    expect(() => parseControllerConfig({ LOG_LEVEL: 'loud', TEMPORAL_NAMESPACE: '' })).toThrow(/invalid controller configuration:\n {2}LOG_LEVEL: .*\n {2}TEMPORAL_NAMESPACE: /);
  });
});
