/** The controller entry point's configuration: parsed once, every bad variable named. */
import { parseControllerConfig } from '../../controllers/main';

describe('parseControllerConfig', () => {
  it('fills defaults and treats an empty kubeconfig path as "in-cluster or default"', () => {
    expect(parseControllerConfig({})).toMatchObject({ kubeconfigPath: undefined, temporal: { address: 'localhost:7233', namespace: 'default', tls: undefined }, logLevel: 'info' });
    expect(parseControllerConfig({ KUBECONFIG_PATH: '/etc/fos1/kubeconfig', TEMPORAL_ADDRESS: 'temporal:7233' })).toMatchObject({ kubeconfigPath: '/etc/fos1/kubeconfig', temporal: { address: 'temporal:7233' } });
  });

  it('names every bad variable', () => {
    expect(() => parseControllerConfig({ LOG_LEVEL: 'loud', TEMPORAL_NAMESPACE: '' })).toThrow(/invalid controller configuration:\n {2}LOG_LEVEL: .*\n {2}TEMPORAL_NAMESPACE: /);
  });
});
