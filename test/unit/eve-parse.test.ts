/**
 * EVE parsing: every line of the shared samples (Suricata 4.x–6.x) is accepted, including
 * those the 8.x schema rejects; bad lines are refused with the field and the rule, never
 * thrown; field types follow Suricata's own schema.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEveLine } from '../../rules/eve';
import { describePrivileged } from '../helpers/capabilities';
import { sharedData } from '../helpers/shared-data';

const EVE_DIR = sharedData('suricata', 'eve');
const SCHEMA = sharedData('suricata', 'schema.json');

function lines(file: string): string[] {
  return readFileSync(join(EVE_DIR, file), 'utf8').split('\n').filter((l) => l !== '');
}

describePrivileged('EVE parser', ['shared-data'], () => {
  test('accepts all 58 sample lines, old DNS and stats records included', () => {
    const results = ['eve-small.log', 'eve-alerts.log', 'eve-dns-4.1.4.log'].flatMap(lines).map(parseEveLine);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results).toHaveLength(58);
    const types = results.map((r) => (r.ok ? r.facts.event_type : '')).reduce<Record<string, number>>((acc, t) => ({ ...acc, [t]: (acc[t] ?? 0) + 1 }), {});
    expect(types).toEqual({ alert: 22, dns: 25, ssh: 1, http: 3, fileinfo: 1, stats: 1, tls: 4, flow: 1 });
  });

  test('alert facts: signature, category, severity, action, canonical addresses, exact 64-bit flow id', () => {
    const [first] = lines('eve-alerts.log');
    expect(parseEveLine(first!)).toEqual({
      ok: true,
      facts: {
        source: 'suricata',
        event_type: 'alert',
        timestamp: '2018-10-03T14:42:44.836744+0000',
        time_ms: Date.parse('2018-10-03T14:42:44.836Z'),
        src_ip: '192.168.1.146',
        src_port: 32858,
        dest_ip: '93.184.216.34',
        dest_port: 80,
        proto: 'TCP',
        app_proto: 'http',
        in_iface: 'enp0s3',
        flow_id: '2191386088856669',
        signature_id: 2013028,
        signature: 'ET POLICY curl User-Agent Outbound',
        category: 'Attempted Information Leak',
        severity: 2,
        action: 'allowed',
      },
    });
    // Suricata writes IPv6 uncompressed; rules and workflow ids see the canonical form.
    const flow = lines('eve-small.log').map(parseEveLine).find((r) => r.ok && r.facts.event_type === 'flow');
    expect(flow).toMatchObject({ ok: true, facts: { src_ip: 'fe80::fada:cff:fedc:87f1', dest_ip: 'ff02::1:2' } });
    // Above 2^53 a JSON number loses digits; the id is taken from the text.
    expect(parseEveLine('{"timestamp":"2026-01-01T00:00:00Z","event_type":"flow","flow_id":18446744073709551615}')).toMatchObject({ ok: true, facts: { flow_id: '18446744073709551615' } });
  });

  test('refuses bad lines with the field and the rule, never throwing', () => {
    const reasons = [
      'not json at all',
      '[1,2]',
      '{"event_type":"alert"}',
      '{"timestamp":"yesterday","event_type":"dns"}',
      '{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","src_ip":"10.0.0.1"}',
      '{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","alert":{"signature_id":"2013028","severity":2}}',
      '{"timestamp":"2026-01-01T00:00:00Z","event_type":"alert","src_ip":"10.0.0.300","alert":{"signature_id":1,"severity":2}}',
      '{"timestamp":"2026-01-01T00:00:00Z","event_type":"http","src_port":70000}',
    ].map((l) => {
      const r = parseEveLine(l);
      return r.ok ? 'accepted' : r.reason;
    });
    expect(reasons).toEqual([
      expect.stringMatching(/^not JSON: Unexpected token/),
      'not a JSON object',
      'timestamp: Invalid input: expected string, received undefined',
      'timestamp: must be a timestamp (e.g. 2018-07-05T19:01:09.820683+0200)',
      'alert: Invalid input: expected object, received undefined',
      'alert.signature_id: Invalid input: expected number, received string',
      'src_ip: "10.0.0.300" is not an IPv4 or IPv6 address',
      'src_port: Too big: expected number to be <=65535',
    ]);
  });

  test('the fields read are typed as in Suricata 8.0.6\'s EVE schema', () => {
    const schema = JSON.parse(readFileSync(SCHEMA, 'utf8')) as { required: string[]; properties: Record<string, { type: string; properties?: Record<string, { type: string }> }> };
    expect(schema.required).toEqual(expect.arrayContaining(['event_type', 'timestamp']));
    const p = schema.properties;
    expect([p.src_ip?.type, p.dest_ip?.type, p.src_port?.type, p.dest_port?.type, p.flow_id?.type, p.proto?.type, p.app_proto?.type]).toEqual(['string', 'string', 'integer', 'integer', 'integer', 'string', 'string']);
    const alert = p.alert?.properties ?? {};
    expect([alert.signature_id?.type, alert.severity?.type, alert.category?.type, alert.action?.type]).toEqual(['integer', 'integer', 'string', 'string']);
  });
});
