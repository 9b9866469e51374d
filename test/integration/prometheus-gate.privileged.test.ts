/**
 * The Prometheus gate against a real Prometheus (Debian's `prometheus`) scraping an in-test
 * exporter: a value meeting the success condition passes, one that does not fails, and
 * anything that cannot be measured (empty vector, several samples, NaN, a bad query, a
 * Prometheus that does not answer) is inconclusive — never a pass.
 */
import { createClusterGateActivities } from '../../activities/gates';
import { gateSpecSchema, type PrometheusGateSpec } from '../../model/gates';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { freePort, startGaugeExporter, startPrometheus, type GaugeExporter, type RunningPrometheus } from '../helpers/prometheus';

describePrivileged('Prometheus gate against a real Prometheus', ['prometheus'], () => {
  let exporter: GaugeExporter;
  let prometheus: RunningPrometheus;
  const gates = createClusterGateActivities();
  const gate = (query: string, op: '<' | '<=' | '>' | '>=' | '==', value: number, address = prometheus.address) =>
    gateSpecSchema.parse({ kind: 'prometheus', address, query, successCondition: { op, value }, timeoutMs: 2000 }) as PrometheusGateSpec;

  beforeAll(async () => {
    exporter = await startGaugeExporter();
    exporter.set('fos1_test_error_ratio', 0.02);
    exporter.set('fos1_test_links_up', 1, { link: 'wan0' });
    exporter.set('fos1_test_links_up', 1, { link: 'wan1' });
    prometheus = await startPrometheus([`127.0.0.1:${exporter.port}`]);
    // Wait until a scrape has landed: the query returns the exporter's value.
    await eventually(() => prometheus.query('fos1_test_error_ratio'), (r) => r.data?.result[0]?.value[1] === '0.02', 'the first scrape of the test exporter', 60_000, 200);
  });

  afterAll(async () => {
    await prometheus?.stop();
    await exporter?.stop();
  });

  it('succeeds when the value meets the condition, with the value measured', async () => {
    const m = await gates.measurePrometheusGate({ name: 'errors', spec: gate('fos1_test_error_ratio', '<', 0.05) });
    expect(m).toMatchObject({ result: 'success', value: 0.02 });
  });

  it('fails when it does not, and follows the metric as it changes', async () => {
    expect(await gates.measurePrometheusGate({ name: 'errors', spec: gate('fos1_test_error_ratio', '>=', 0.05) })).toMatchObject({ result: 'failure', value: 0.02, detail: expect.stringContaining('is not >= 0.05') });
    exporter.set('fos1_test_error_ratio', 0.3);
    const m = await eventually(() => gates.measurePrometheusGate({ name: 'errors', spec: gate('fos1_test_error_ratio', '<', 0.05) }), (r) => r.value === 0.3, 'the new value scraped', 30_000, 200);
    expect(m.result).toBe('failure');
    exporter.set('fos1_test_error_ratio', 0.02);
  });

  it('takes a scalar and an aggregated vector', async () => {
    expect(await gates.measurePrometheusGate({ name: 'links', spec: gate('sum(fos1_test_links_up)', '==', 2) })).toMatchObject({ result: 'success', value: 2 });
    expect(await gates.measurePrometheusGate({ name: 'scalar', spec: gate('scalar(sum(fos1_test_links_up))', '>', 1) })).toMatchObject({ result: 'success', value: 2 });
  });

  it.each([
    ['an empty vector', 'fos1_test_no_such_metric', 'empty vector'],
    ['several samples', 'fos1_test_links_up', '2 samples; aggregate it'],
    ['NaN', 'fos1_test_error_ratio * 0 / 0', 'not a finite number'],
    ['a query Prometheus rejects', 'sum(', 'HTTP 400 bad_data'],
    ['a range vector', 'fos1_test_error_ratio[1m]', 'matrix result'],
  ])('is inconclusive for %s', async (_what, query, detail) => {
    const m = await gates.measurePrometheusGate({ name: 'x', spec: gate(query, '>', 0) });
    expect(m.result).toBe('inconclusive');
    expect(m.detail).toContain(detail);
  });

  it('is inconclusive when Prometheus does not answer', async () => {
    const m = await gates.measurePrometheusGate({ name: 'down', spec: gate('up', '>', 0, `http://127.0.0.1:${await freePort()}`) });
    expect(m).toMatchObject({ result: 'inconclusive', detail: expect.stringContaining('ECONNREFUSED') });
  });
});
