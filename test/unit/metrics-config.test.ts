import { parseMetricsConfig, temporalTelemetryOptions } from '../../metrics/config';

describe('metrics configuration', () => {
  it('is off unless a port is set', () => {
    expect(parseMetricsConfig({})).toEqual({});
    expect(temporalTelemetryOptions(parseMetricsConfig({}))).toEqual({});
  });

  it('binds loopback by default, on the ports given', () => {
    const config = parseMetricsConfig({ FOS1_METRICS_PORT: '9464', FOS1_TEMPORAL_METRICS_PORT: '9465' });
    expect(config).toEqual({ listener: { port: 9464, host: '127.0.0.1' }, temporalBindAddress: '127.0.0.1:9465' });
    expect(temporalTelemetryOptions(config)).toEqual({ telemetryOptions: { metrics: { prometheus: { bindAddress: '127.0.0.1:9465' } } } });
  });

  it('brackets an IPv6 host in the SDK bind address', () => {
    expect(parseMetricsConfig({ FOS1_METRICS_HOST: '::1', FOS1_TEMPORAL_METRICS_PORT: '9465' }).temporalBindAddress).toBe('[::1]:9465');
  });

  it('names the variable of a bad port', () => {
    expect(() => parseMetricsConfig({ FOS1_METRICS_PORT: '70000' })).toThrow(/^FOS1_METRICS_PORT: /);
    expect(() => parseMetricsConfig({ FOS1_TEMPORAL_METRICS_PORT: 'nine' })).toThrow(/^FOS1_TEMPORAL_METRICS_PORT: /);
  });
});
