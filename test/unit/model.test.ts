/**
 * The config model and the planner: pure logic, no privileges.
 */
import { formatIssues, validateChangeRequest, type ChangeRequestInput } from '../../model/change-request';
import { canonicalCidr, canonicalIp, cidrContains, parseCidr } from '../../model/ip';
import { nodeStateSchema, type NodeState, type Route } from '../../model/node-state';
import { inverseOf, planNodeChange, planRoutes, renderPlan, resolveDesired, stateDifferences } from '../../model/plan';
import { changeScope, subsystemIntents } from '../../model/subsystem';

const NOW = Date.parse('2026-11-22T00:00:00Z');

describe('IP parsing', () => {
  test.each([
    ['2001:DB8:0:0::/32', '2001:db8::/32'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128'], // RFC 5952: the first longest zero run… of length 2
    ['::ffff:192.0.2.1', '::ffff:c000:201/128'],
    ['::', '::/128'],
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['192.0.2.7', '192.0.2.7/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
  ])('%s is canonically %s', (input, canonical) => {
    expect(canonicalCidr(input)).toBe(canonical);
  });

  test.each([
    ['10.0.0.1/24', 'host bits set; did you mean 10.0.0.0/24?'],
    ['10.0.0.0/33', 'invalid prefix length (0–32 for IPv4)'],
    ['010.0.0.0/8', 'is not an IPv4 or IPv6 prefix'],
    ['2001:db8::1::/64', 'is not an IPv4 or IPv6 prefix'],
    ['fe80::1%eth0', 'is not an IPv4 or IPv6 prefix'],
    ['10.0.0.0/+8', 'invalid prefix length'],
  ])('%s is refused: %s', (input, message) => {
    expect(() => canonicalCidr(input)).toThrow(message);
  });

  test('addresses compress the longest zero run, the first on a tie', () => {
    expect(canonicalIp('2001:0:0:1:0:0:0:1')).toBe('2001:0:0:1::1');
    expect(canonicalIp('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
  });

  test('containment', () => {
    expect(cidrContains(parseCidr('10.0.0.0/8'), parseCidr('10.1.2.0/24'))).toBe(true);
    expect(cidrContains(parseCidr('10.1.2.0/24'), parseCidr('10.0.0.0/8'))).toBe(false);
    expect(cidrContains(parseCidr('::/0'), parseCidr('10.0.0.0/8'))).toBe(false);
  });
});

describe('change request validation', () => {
  const valid: ChangeRequestInput = {
    id: 'add-office-routes',
    author: 'alice',
    reason: 'new office',
    targets: ['router-1'],
    desired: { routes: [{ destination: '10.1.0.0/16', gateway: '10.0.0.1' }], blocklist: [] },
  };

  test('a valid request parses with defaults filled and addresses canonical', () => {
    const result = validateChangeRequest({ ...valid, desired: { routes: [{ destination: '2001:DB8::/32', gateway: '2001:db8:0::1', table: 'main' }] } }, NOW);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.request.desired?.routes[0]).toEqual({ destination: '2001:db8::/32', gateway: '2001:db8::1', table: 254, metric: 1024 });
    expect(result.request.desired?.blocklist).toEqual([]);
    expect(result.request.options).toEqual({ dryRun: false, lockTimeout: 900_000, defaultBakeSeconds: 30 });
  });

  test.each<[string, unknown, string]>([
    ['gateway of the other family', { routes: [{ destination: '10.1.0.0/16', gateway: '2001:db8::1' }] }, 'desired.routes[0].gateway: gateway 2001:db8::1 is IPv6 but destination 10.1.0.0/16 is IPv4'],
    ['neither gateway nor device', { routes: [{ destination: '10.1.0.0/16' }] }, 'desired.routes[0].gateway: a route needs a gateway, a device, or both'],
    ['a bad interface name', { routes: [{ destination: '10.1.0.0/16', device: 'eth0; reboot' }] }, 'desired.routes[0].device: must be an interface name'],
    ['the local table', { routes: [{ destination: '10.1.0.0/16', device: 'eth0', table: 255 }] }, 'desired.routes[0].table: table 255 is the kernel\'s "local" table'],
    ['duplicate routes', { routes: [{ destination: '10.1.0.0/16', device: 'eth0' }, { destination: '10.1.0.0/16', gateway: '10.0.0.9' }] }, 'desired.routes[1]: duplicate route (family, table, destination, metric) "ipv4 table 254 10.1.0.0/16 metric 0" (first at index 0)'],
    ['duplicate blocks in two spellings', { blocklist: [{ cidr: '2001:db8::/32', reason: 'a' }, { cidr: '2001:DB8:0::/32', reason: 'b' }] }, 'desired.blocklist[1]: duplicate blocklist prefix "2001:db8::/32"'],
    ['an unknown field', { routes: [], firewall: [] }, 'desired: Unrecognized key: "firewall"'],
    ['an expiry without timezone', { blocklist: [{ cidr: '192.0.2.1', reason: 'x', expiresAt: '2030-01-01T00:00:00' }] }, 'desired.blocklist[0].expiresAt: must be an ISO 8601 date-time with a timezone'],
    ['an expiry in the past', { blocklist: [{ cidr: '192.0.2.1', reason: 'x', expiresAt: '2020-01-01T00:00:00Z' }] }, 'desired.blocklist[0].expiresAt: is in the past'],
  ])('refuses %s, naming the field and the rule', (_what, desired, message) => {
    const result = validateChangeRequest({ ...valid, desired }, NOW);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(formatIssues(result.issues)).toContain(message);
  });

  test('refuses both or neither of desired and patch', () => {
    const neither = validateChangeRequest({ ...valid, desired: undefined }, NOW);
    const both = validateChangeRequest({ ...valid, patch: {} }, NOW);
    for (const r of [neither, both]) {
      expect(r.ok).toBe(false);
      if (!r.ok) expect(formatIssues(r.issues)).toContain('desired: give exactly one of "desired" (full state) or "patch"');
    }
  });

  test.each([
    [{ id: 'Has_Caps' }, 'id: must be 1–63 lowercase letters'],
    [{ targets: [] }, 'targets: must name at least one node'],
    [{ targets: ['a', 'a'] }, 'targets: must not name a node twice'],
    [{ options: { confirmTimeout: '5 minutes' } }, 'options.confirmTimeout: must be a duration like "90s"'],
    [{ options: { confirmTimeout: '500ms' } }, 'options.confirmTimeout: must be at least 1s'],
    [{ author: '' }, 'author: must name who asks for the change'],
  ])('refuses request field %j', (override, message) => {
    const result = validateChangeRequest({ ...valid, ...override }, NOW);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(formatIssues(result.issues)).toContain(message);
  });

  test('confirmTimeout accepts Temporal-style durations', () => {
    const result = validateChangeRequest({ ...valid, options: { confirmTimeout: '5m' } }, NOW);
    expect(result.ok && result.request.options.confirmTimeout).toBe(300_000);
  });
});

describe('planner', () => {
  const route = (destination: string, extra: Partial<Route> = {}): Route => nodeStateSchema.parse({ routes: [{ destination, gateway: '10.0.0.1', ...extra }] }).routes[0] as Route;

  test('adds and replaces come before deletes (make before break), each op has an exact inverse', () => {
    const observed = [route('10.1.0.0/16'), route('10.2.0.0/16'), route('10.3.0.0/16')];
    const desired = [route('10.1.0.0/16'), route('10.2.0.0/16', { gateway: '10.0.0.2' }), route('10.4.0.0/16')];
    const ops = planRoutes(observed, desired);
    expect(ops.map((o) => `${o.action} ${o.route.destination}`)).toEqual(['replace 10.2.0.0/16', 'add 10.4.0.0/16', 'delete 10.3.0.0/16']);
    expect(inverseOf(ops[0]!)).toEqual({ subsystem: 'routes', action: 'replace', route: observed[1], previous: desired[1] });
    expect(inverseOf(inverseOf(ops[1]!))).toEqual(ops[1]);
    // Applying the inverses to the desired state plans back to the observed one.
    expect(planRoutes(desired, observed).map((o) => o.action).sort()).toEqual(ops.map((o) => inverseOf(o).action).sort());
  });

  test('a desired route without a device matches whatever device the kernel chose', () => {
    const have = { ...route('10.1.0.0/16'), device: 'lan0' };
    expect(planRoutes([have], [route('10.1.0.0/16')])).toEqual([]);
    expect(planRoutes([have], [route('10.1.0.0/16', { device: 'lan1' })]).map((o) => o.action)).toEqual(['replace']);
  });

  test('routes differing only in table or metric are distinct', () => {
    const ops = planRoutes([route('10.1.0.0/16')], [route('10.1.0.0/16', { table: 100 }), route('10.1.0.0/16', { metric: 5 })]);
    expect(ops.map((o) => o.action)).toEqual(['add', 'add', 'delete']);
  });

  test('blocklist: the reason is not kernel state, the expiry is (the intent the node plans against carries only the expiry)', () => {
    const desired = nodeStateSchema.parse({ blocklist: [{ cidr: '192.0.2.0/24', reason: 'new reason' }, { cidr: '198.51.100.0/24', reason: 'x', expiresAt: '2031-01-01T00:00:00.000Z' }] });
    expect(subsystemIntents({ desired }).blocklist).toEqual({ mode: 'replace', entries: [{ cidr: '192.0.2.0/24' }, { cidr: '198.51.100.0/24', expiresAt: Date.parse('2031-01-01T00:00:00Z') / 1000 }] });
  });

  test('a patch resolves against the snapshot', () => {
    const observed = { routes: [route('10.1.0.0/16'), route('10.2.0.0/16')] };
    const patch = {
      routes: { upsert: [route('10.3.0.0/16')], remove: [{ destination: '10.1.0.0/16', table: 254, metric: 0 }] },
      blocklist: { upsert: [{ cidr: '198.51.100.1/32', reason: 'scanner' }], remove: ['192.0.2.0/24'] },
    };
    const desired = resolveDesired(observed, { patch });
    expect(desired.routes.map((r) => r.destination)).toEqual(['10.2.0.0/16', '10.3.0.0/16']);
    // The blocklist is patched on the node, by intent: only the touched prefixes travel.
    expect(subsystemIntents({ patch }).blocklist).toEqual({ mode: 'patch', upsert: [{ cidr: '198.51.100.1/32' }], remove: ['192.0.2.0/24'] });
  });

  test('the diff reads like ip route, and differences are empty only when states match', () => {
    const desired: NodeState = { interfaces: [], rules: [], zones: [], nat: { sourceNat: [], portForwards: [] }, rateLimits: [], routes: [route('10.9.0.0/24', { table: 100 }), route('10.8.0.0/24')], blocklist: [] };
    const plan = planNodeChange({ routes: [] }, desired);
    expect(renderPlan(plan)).toEqual(['+ route 10.9.0.0/24 via 10.0.0.1 table 100 metric 0', '+ route 10.8.0.0/24 via 10.0.0.1 table 254 metric 0']); // by table, then prefix
    expect(stateDifferences({ routes: [] }, desired)).toHaveLength(2);
    expect(stateDifferences({ routes: desired.routes }, desired)).toEqual([]);
  });

  test('a blocklist-only patch is scoped to the blocklist; a network change takes every network table; a desired state the whole node', () => {
    const all = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zonemaps', 'zones', 'nat', 'ratelimits', 'blocklist'];
    const network = ['links', 'vlans', 'addresses', 'routes', 'rules', 'zones', 'nat'];
    const scope = (change: Parameters<typeof subsystemIntents>[0]) => changeScope(subsystemIntents(change));
    expect(scope({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.1/32', reason: 'x' }], remove: [] } } })).toEqual(['blocklist']);
    expect(scope({ patch: { blocklist: { upsert: [], remove: ['192.0.2.1/32'] }, routes: { upsert: [], remove: [] } } })).toEqual(['blocklist']);
    expect(scope({ patch: { routes: { upsert: [route('10.1.0.0/16')], remove: [] } } })).toEqual(network);
    expect(scope({ patch: { nat: { sourceNat: [], portForwards: [] } } })).toEqual(network);
    expect(scope({ patch: { routes: { upsert: [route('10.1.0.0/16')], remove: [] }, blocklist: { upsert: [{ cidr: '192.0.2.1/32', reason: 'x' }], remove: [] } } })).toEqual([...network, 'blocklist']);
    expect(scope({ desired: { ...nodeStateSchema.parse({}) } })).toEqual(all);
  });
});
