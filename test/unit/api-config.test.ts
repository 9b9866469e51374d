/** The API process's configuration (api/main.ts), as the Helm chart's API Deployment sets it. */
import { parseApiConfig } from '../../api/config';

describe('parseApiConfig', () => {
  it('defaults to loopback on 8080 and the local Temporal', () => {
    const c = parseApiConfig({});
    expect({ temporal: c.temporal.describe, port: c.port, host: c.host, logLevel: c.logLevel, identityKey: c.identityKey }).toEqual({ temporal: { address: 'localhost:7233', namespace: 'default', tls: 'off' }, port: 8080, host: '127.0.0.1', logLevel: 'info', identityKey: undefined });
  });

  it('takes the chart\'s settings', () => {
    const c = parseApiConfig({ TEMPORAL_ADDRESS: 'temporal:7233', TEMPORAL_NAMESPACE: 'fos1', FOS1_API_PORT: '9000', FOS1_API_HOST: '0.0.0.0', LOG_LEVEL: 'debug' });
    expect({ temporal: c.temporal.describe, port: c.port, host: c.host, logLevel: c.logLevel }).toEqual({ temporal: { address: 'temporal:7233', namespace: 'fos1', tls: 'off' }, port: 9000, host: '0.0.0.0', logLevel: 'debug' });
  });

  it('lists every bad variable with its rule', () => {
    expect(() => parseApiConfig({ FOS1_API_PORT: '70000', FOS1_API_HOST: 'example.com' })).toThrow(
      /invalid API configuration:\n {2}FOS1_API_PORT: FOS1_API_PORT must be a port 1-65535\n {2}FOS1_API_HOST: FOS1_API_HOST must be an IP address/,
    );
  });
});
