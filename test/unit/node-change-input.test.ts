/**
 * The node workflow's own input validation (model/change-request.ts nodeChangeInputSchema):
 * what a change workflow sends passes unchanged (parsing is idempotent), anything else is
 * refused with the field and the rule. Pure logic.
 */
import { formatIssues, validateChangeRequest, validateNodeChangeInput } from '../../model/change-request';

const NOW = Date.parse('2026-11-22T00:00:00Z');

/** The node input a change workflow builds from a validated request (workflows/change.ts). */
function fromParent(request: Record<string, unknown>) {
  const result = validateChangeRequest({ id: 'c1', author: 'alice', reason: 'test', targets: ['router-1'], ...request }, NOW);
  if (!result.ok) throw new Error(formatIssues(result.issues));
  const r = result.request;
  // Through JSON, as Temporal's payload converter carries it.
  return JSON.parse(JSON.stringify({ changeId: r.id, author: r.author, node: 'router-1', desired: r.desired, patch: r.patch, dryRun: r.options.dryRun, hold: true })) as unknown;
}

function refusal(input: unknown): string {
  const result = validateNodeChangeInput(input);
  expect(result.ok).toBe(false);
  return result.ok ? '' : formatIssues(result.issues);
}

describe('node change input', () => {
  test('what the parent sends parses to itself, for a full state and for a patch', () => {
    const desired = fromParent({
      desired: {
        interfaces: [{ name: 'lan0', mtu: 1500, up: true, addresses: ['fd00:77::2/64', '10.77.0.2/24'] }, { name: 'lan0.5', vlan: { parent: 'lan0', id: 5 } }],
        routes: [
          { destination: '2001:DB8::/32', gateway: 'fd00:77::1' },
          { destination: '10.9.0.0/16', nexthops: [{ gateway: '10.77.0.9' }, { gateway: '10.77.0.1', weight: 3 }], table: 'main' },
        ],
        rules: [{ priority: 100, from: '10.1.0.0/16', table: 100 }, { priority: 101, fwmark: 7, family: 6, table: 'default' }],
        zones: [{ name: 'lan', id: 1, interfaces: ['lan0'], prefixes: ['10.77.0.0/24'] }],
        nat: { sourceNat: [{ source: '10.0.0.0/8', outInterface: 'lan0' }], portForwards: [{ protocol: 'tcp', port: 8080, to: '10.77.0.5' }] },
        blocklist: [{ cidr: '192.0.2.1', reason: 'r', expiresAt: '2030-01-01T00:00:00.5+01:00' }],
        rateLimits: [{ cidr: '198.51.100.7/32', pps: 10, reason: 'r' }],
      },
    });
    const patch = fromParent({ patch: { routes: { remove: [{ destination: 'fd00:1::/64' }] }, blocklist: { replaceRef: { file: '/var/lib/fos1/feeds/a.txt' } } } });
    for (const input of [desired, patch]) {
      const result = validateNodeChangeInput(input);
      expect(result).toEqual({ ok: true, input });
    }
  });

  test('a newline in a device name is refused, naming the field and the rule', () => {
    const input = fromParent({ desired: { interfaces: [{ name: 'lan0', mtu: 1500 }] } }) as { desired: { interfaces: { name: string }[] } };
    (input.desired.interfaces[0] as { name: string }).name = 'lan0\nlink add evil type bridge';
    expect(refusal(input)).toBe('desired.interfaces[0].name: must be an interface name: 1–15 letters, digits, "_", "-" or "." (starting with a letter or digit)');
  });

  test.each<[string, Record<string, unknown>, string]>([
    ['a route gateway that is not an address', { patch: { routes: { upsert: [{ destination: '10.0.0.0/24', gateway: '10.0.0.1 onlink' }] } } }, 'patch.routes.upsert[0].gateway: "10.0.0.1 onlink" is not an IPv4 or IPv6 address'],
    ['an unknown field', { desired: {}, sneaky: true }, '(request): Unrecognized key: "sneaky"'],
    ['both desired and patch', { desired: {}, patch: {} }, 'desired: give exactly one of "desired" (full state) or "patch"'],
    ['a node name that is not a DNS label', { node: 'Router 1', desired: {} }, 'node: must be a node name'],
    ['a missing dryRun', { dryRun: undefined, desired: {} }, 'dryRun: '],
  ])('%s is refused', (_what, overrides, message) => {
    const input = { changeId: 'c1', author: 'alice', node: 'router-1', dryRun: false, ...overrides };
    expect(refusal(input)).toContain(message);
  });

  test('a payload that is not an object is refused', () => {
    expect(refusal('lan0')).toMatch(/^\(request\): /);
    expect(refusal(null)).toMatch(/^\(request\): /);
  });
});
