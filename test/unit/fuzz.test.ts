/**
 * Property-based fuzzing (fast-check) of every door input comes through, and of the planner.
 *
 * Inputs: change requests and patches (model/change-request.ts), EVE lines (rules/eve.ts),
 * nDPI flow lines (rules/ndpi.ts), rule sets (rules/rule-set.ts) and API bodies (the real
 * HTTP server of api/server.ts, with a Temporal client that must never be reached by a bad
 * body). Property: whatever arrives — random values, or a valid input with one field
 * replaced by a wrong one — the answer is a result or a refusal that names the field and
 * the rule; nothing throws (rule sets: nothing but a RuleSetError listing its issues).
 *
 * Planner: for generated observed/desired pairs of every table (routes, policy rules,
 * zones, NAT chains, rate limits, addresses), the plan applied to a pure in-memory model
 * of the table gives the desired table, and the inverses applied in reverse order give
 * back the observed one exactly — the rollback contract of model/subsystem.ts.
 *
 * Counts of cases per target are in test/chaos/RESULTS.md ("Fuzzing"); FOS1_FUZZ_RUNS
 * multiplies them for a longer run.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import fc from 'fast-check';
import pino from 'pino';
import { startApiServer } from '../../api/server';
import { changeRequestSchema, validateChangeRequest, zoneMembersPatchSchema } from '../../model/change-request';
import { applyZoneMapOperations, invertZoneMapOperation, planZoneMaps, withZoneMembers, zoneMapsOf } from '../../model/zone-maps';
import { natSchema, nodeStateSchema, routeKey, routeSchema, ruleKey, ruleSchema, zoneSchema, type NatConfig, type PolicyRule, type Route, type Zone } from '../../model/node-state';
import {
  describePortForward,
  describeSourceNat,
  inverseOf,
  planAddresses,
  planLinks,
  planNat,
  planRateLimits,
  planRoutes,
  planRules,
  planZones,
  patchZoneMembers,
  describeZone,
  zonesTouchedByMembers,
  ZoneMembershipError,
  routeMatches,
  resolveDesired,
  type AddressOperation,
  type LinkOperation,
  type NatOperation,
  type RateLimitOperation,
  type RouteOperation,
  type RuleOperation,
  type ZoneOperation,
} from '../../model/plan';
import type { MapRateLimit } from '../../model/subsystem';
import { parseEveLine } from '../../rules/eve';
import { canonicalCidr, canonicalIp, IpParseError } from '../../model/ip';
import { parseNdpiFlowLine } from '../../rules/ndpi';
import { RuleSetError, validateRuleSet } from '../../rules/rule-set';
import { readFileSync } from 'node:fs';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { sharedData, sharedLines } from '../helpers/shared-data';

const SCALE = Number(process.env.FOS1_FUZZ_RUNS ?? '1');
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });

/** Sets `value` at `path` in a deep copy of `base`. */
function replaceAt(base: unknown, path: (string | number)[], value: unknown): unknown {
  const copy = structuredClone(base) as Record<string | number, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const key of path.slice(0, -1)) at = at[key] as Record<string | number, unknown>;
  at[path[path.length - 1]!] = value;
  return copy;
}

/** Every path to a leaf or a node of `value` (objects and arrays), for mutation. */
function pathsOf(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== 'object') return prefix.length ? [prefix] : [];
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
  return [...(prefix.length ? [prefix] : []), ...entries.flatMap(([k, v]) => pathsOf(v, [...prefix, k]))];
}

/** Values of the wrong kind for almost any field. */
const wrongValue = fc.oneof(
  fc.constant(null),
  fc.constant(-1),
  fc.constant(1.5),
  fc.constant(''),
  fc.constant('not/valid'),
  fc.constant('999.1.1.1/33'),
  fc.constant({}),
  fc.constant([]),
  fc.constant(true),
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.object(),
);

const VALID_REQUEST = {
  id: 'fuzz-1',
  author: 'alice',
  reason: 'fuzz',
  targets: ['node-a'],
  desired: {
    interfaces: [{ name: 'lan0', addresses: ['10.1.0.1/24'], mtu: 1500, up: true }],
    routes: [{ destination: '10.2.0.0/16', gateway: '10.1.0.254', table: 'main' }],
    rules: [{ priority: 100, from: '10.3.0.0/16', table: 100 }],
    zones: [{ name: 'lan', id: 1, interfaces: ['lan0'], prefixes: ['10.1.0.0/24'] }],
    nat: { sourceNat: [{ source: '10.1.0.0/24', outInterface: 'wan0' }], portForwards: [{ protocol: 'tcp', port: 8080, to: '10.1.0.2', toPort: 80 }] },
    rateLimits: [{ cidr: '198.51.100.7/32', pps: 10, reason: 'noisy', expiresAt: '2099-01-01T00:00:00Z' }],
    blocklist: [{ cidr: '203.0.113.0/24', reason: 'bad', expiresAt: '2099-01-01T00:00:00Z' }],
  },
  options: { confirmTimeout: '5m', lockTimeout: '1m' },
};
const VALID_PATCH_REQUEST = {
  id: 'fuzz-2',
  author: 'alice',
  reason: 'fuzz',
  targets: ['node-a'],
  patch: {
    routes: { upsert: [{ destination: '10.4.0.0/16', device: 'lan0' }], remove: [{ destination: '10.2.0.0/16' }] },
    rules: { upsert: [{ priority: 200, to: '10.5.0.0/16', table: 'main' }], remove: [] },
    zones: { upsert: [{ name: 'dmz', id: 2, prefixes: ['10.9.0.0/16'] }], remove: ['lan'] },
    rateLimits: { upsert: [{ cidr: '2001:db8::7/128', pps: 5, reason: 'x' }], remove: ['198.51.100.7/32'] },
    blocklist: { upsert: [{ cidr: '192.0.2.0/24', reason: 'x' }], remove: ['203.0.113.0/24'] },
  },
};

/** A refusal as callers see it: at least one issue, each naming a field (or the request) and a rule. */
function expectIssues(result: ReturnType<typeof validateChangeRequest>): asserts result is { ok: false; issues: { field: string; message: string }[] } {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.issues.length).toBeGreaterThan(0);
  for (const issue of result.issues) {
    expect(typeof issue.field).toBe('string');
    expect(issue.message).toMatch(/\S/);
  }
}

/** The path as validateChangeRequest names it: `desired.routes[0].gateway`. */
const fieldOf = (path: (string | number)[]) => path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');

describe('fuzzing: change requests and patches', () => {
  test('the two base requests are valid (else the mutations below prove nothing)', () => {
    expect(validateChangeRequest(VALID_REQUEST, 0)).toMatchObject({ ok: true });
    expect(validateChangeRequest(VALID_PATCH_REQUEST, 0)).toMatchObject({ ok: true });
  });

  test('any value (JSON, and what JSON cannot carry: undefined, NaN, -0, __proto__ keys, sparse arrays): a result or issues, never a throw', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.anything({ withBigInt: true, withBoxedValues: true, withDate: true, withMap: true, withNullPrototype: true, withObjectString: true, withSparseArray: true, withTypedArray: true })), (value) => {
        const result = validateChangeRequest(value, 0);
        if (!result.ok) expectIssues(result);
      }),
      runs(3000),
    );
  });

  test.each([
    ['full state', VALID_REQUEST],
    ['patch', VALID_PATCH_REQUEST],
  ])('a valid %s request with one field made wrong: refused, an issue names that field or one inside it', (_name, base) => {
    const paths = pathsOf(base).filter((p) => p[0] !== 'options' || p.length > 1);
    fc.assert(
      fc.property(fc.constantFrom(...paths), wrongValue, (path, value) => {
        const input = replaceAt(base, path, value);
        const result = validateChangeRequest(input, 0);
        if (result.ok) {
          // Some replacements are valid (a string where any string goes, an empty list):
          // then the request must still parse as the schema says.
          expect(changeRequestSchema.safeParse(input).success).toBe(true);
          return;
        }
        expectIssues(result);
        // The refusal points at the replaced field, something inside it, or its parent
        // object (a rule over several fields, e.g. "give either nexthops or gateway").
        const field = fieldOf(path);
        const parent = fieldOf(path.slice(0, -1));
        const named = result.issues.some((i) => i.field.startsWith(field) || field.startsWith(i.field) || i.field.startsWith(parent) || i.message.includes(String(path[path.length - 1])));
        if (!named) throw new Error(`replacing ${field} with ${JSON.stringify(value)} gave issues that do not name it: ${JSON.stringify(result.issues)}`);
      }),
      runs(3000),
    );
  });

  test('patches resolve against any observed state without throwing', () => {
    const patch = validateChangeRequest(VALID_PATCH_REQUEST, 0);
    if (!patch.ok) throw new Error('base patch invalid');
    fc.assert(
      fc.property(routesArb, rulesArb, zonesArb, (routes, rules, zones) => {
        const resolved = resolveDesired({ interfaces: [], routes, rules, zones, nat: { sourceNat: [], portForwards: [] } }, { patch: patch.request.patch! });
        expect(resolved.routes.some((r) => r.destination === '10.4.0.0/16')).toBe(true);
        expect(resolved.routes.some((r) => r.destination === '10.2.0.0/16' && r.table === 254 && r.metric === undefined)).toBe(false);
        expect(resolved.zones.some((z) => z.name === 'lan')).toBe(false);
      }),
      runs(1000),
    );
  });
});

describe('fuzzing: addresses and prefixes (model/ip.ts, under every schema)', () => {
  test('any string, and near-addresses: canonical form or IpParseError, and the canonical form is a fixed point', () => {
    const near = fc.oneof(
      fc.ipV4(),
      fc.ipV6(),
      fc.ipV4Extended(),
      fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string()), fc.oneof(fc.integer({ min: -2, max: 200 }), fc.string())).map(([a, l]) => `${a}/${l}`),
      fc.string({ unit: fc.constantFrom('0', '1', '9', 'f', ':', '.', '/', ' ', '%', 'x') }),
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), near), (text) => {
        for (const parse of [canonicalIp, canonicalCidr]) {
          let out: string;
          try {
            out = parse(text);
          } catch (err) {
            if (!(err instanceof IpParseError)) throw new Error(`${parse.name}(${JSON.stringify(text)}) threw ${String(err)}`);
            expect(err.message).toMatch(/\S/);
            continue;
          }
          expect(parse(out)).toBe(out);
        }
      }),
      runs(5000),
    );
  });
});

const EVE_SAMPLE = sharedLines('suricata', 'eve', 'eve-alerts.log').slice(0, 20);

describePrivileged('fuzzing: EVE and nDPI lines', ['shared-data'], () => {
  const reasonOk = (reason: string) => expect(reason).toMatch(/\S/);

  test('any string as an EVE line: facts or a reason, never a throw', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.json()), (line) => {
        const r = parseEveLine(line);
        if (!r.ok) reasonOk(r.reason);
      }),
      runs(5000),
    );
  });

  test('a real EVE record with one field made wrong: facts or a reason naming the field', () => {
    const records = EVE_SAMPLE.map((l) => JSON.parse(l) as Record<string, unknown>);
    fc.assert(
      fc.property(fc.nat({ max: records.length - 1 }), fc.nat(), wrongValue, (i, pick, value) => {
        const paths = pathsOf(records[i]);
        const path = paths[pick % paths.length]!;
        const r = parseEveLine(JSON.stringify(replaceAt(records[i], path, value)));
        if (r.ok) return;
        reasonOk(r.reason);
        const name = String(path.find((p) => typeof p === 'string' && p !== 'alert') ?? path[0]);
        if (!r.reason.includes(name) && !r.reason.includes(String(path[0]))) throw new Error(`replacing ${path.join('.')} with ${JSON.stringify(value)}: reason "${r.reason}" names neither`);
      }),
      runs(3000),
    );
  });

  test('EVE-shaped records with any values in the known fields: facts or a reason, never a throw', () => {
    const value = fc.oneof(wrongValue, fc.ipV4(), fc.ipV6(), fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('2100-01-01') }).map((d) => d.toISOString()), fc.integer({ min: 0, max: 70000 }));
    const record = fc.record(
      {
        timestamp: value,
        event_type: fc.oneof(fc.constantFrom('alert', 'dns', 'flow', 'http', 'tls', 'anomaly'), value),
        src_ip: value,
        dest_ip: value,
        src_port: value,
        dest_port: value,
        proto: value,
        flow_id: value,
        app_proto: value,
        alert: fc.oneof(value, fc.record({ severity: value, signature_id: value, signature: value, category: value, action: value, gid: value, rev: value }, { requiredKeys: [] })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(record, (r) => {
        const out = parseEveLine(JSON.stringify(r));
        if (!out.ok) reasonOk(out.reason);
      }),
      runs(5000),
    );
  });

  test('any string, and real nDPI flow lines cut and changed, as an nDPI line: facts, a skip or a reason, never a throw', () => {
    const dir = sharedData('ndpi', 'result-4.2');
    const flows = ['bittorrent.pcap.out', 'dns_doh.pcap.out', 'google_ssl.pcap.out'].flatMap((f) =>
      readFileSync(`${dir}/${f}`, 'utf8')
        .split('\n')
        .filter((l) => /^\t\d+\t/.test(l))
        .slice(0, 10),
    );
    expect(flows.length).toBeGreaterThan(5);
    const mutated = fc.tuple(fc.constantFrom(...flows), fc.nat(), fc.nat(), fc.string()).map(([line, a, b, insert]) => {
      const from = a % line.length;
      const to = from + (b % Math.max(1, line.length - from));
      return line.slice(0, from) + insert + line.slice(to);
    });
    fc.assert(
      fc.property(fc.oneof(fc.string(), mutated), fc.integer({ min: 0, max: 2 ** 42 }), (line, at) => {
        const r = parseNdpiFlowLine(line, at);
        if ('skip' in r) return;
        if (!r.ok) reasonOk(r.reason);
      }),
      runs(5000),
    );
  });
});

describe('fuzzing: rule sets', () => {
  const DEFAULT = JSON.parse(readFileSync(DEFAULT_RULES_FILE, 'utf8')) as unknown;
  const check = (input: unknown) => {
    try {
      validateRuleSet(input);
    } catch (err) {
      if (!(err instanceof RuleSetError)) throw new Error(`rule set validation threw ${String(err)} for ${JSON.stringify(input)?.slice(0, 300)}`);
      expect(err.message).toMatch(/\S/);
      return err;
    }
    return undefined;
  };

  test('any JSON value: a rule set or a RuleSetError, nothing else', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => void check(v)), runs(3000));
  });

  test('the default rule set with one field made wrong: valid, or a RuleSetError naming the field', () => {
    const paths = pathsOf(DEFAULT);
    fc.assert(
      fc.property(fc.constantFrom(...paths), wrongValue, (path, value) => {
        const err = check(replaceAt(DEFAULT, path, value));
        if (!err) return;
        const field = fieldOf(path);
        const parent = fieldOf(path.slice(0, -1));
        if (!(err.issues ?? []).some((i) => i.field.startsWith(field) || field.startsWith(i.field) || i.field.startsWith(parent)) && !err.message.includes(String(path[path.length - 1]))) {
          throw new Error(`replacing ${field} with ${JSON.stringify(value)}: ${err.message}`);
        }
      }),
      runs(3000),
    );
  });
});

describe('fuzzing: API bodies through the real HTTP server', () => {
  let server: Server;
  let base: string;
  let started = 0;
  const { authenticator, tokens } = testTokens({ alice: ['admin'] });
  beforeAll(async () => {
    // A body that validates reaches the client; one that does not must never.
    const notFound = async () => Promise.reject(new WorkflowNotFoundError('no such workflow', 'change-fuzz-1', undefined));
    const client = {
      workflow: {
        start: async () => {
          started++;
          return { firstExecutionRunId: 'run', result: async () => ({ dryRun: true }) };
        },
        // No change exists: confirm and abort of one answer 404 (or 400 for a bad body).
        getHandle: () => ({ signal: notFound, executeUpdate: notFound, query: notFound }),
      },
    } as unknown as Client;
    server = await startApiServer({ client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  const post = (path: string, body: string | Uint8Array) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${tokens.alice}`, 'content-type': 'application/json' }, body });

  test('random bodies (JSON values, broken JSON, bytes) to every POST route: 4xx with an error naming the field, or accepted when valid; never 5xx', async () => {
    const body = fc.oneof(
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.constantFrom(VALID_REQUEST, VALID_PATCH_REQUEST).chain((b) => fc.tuple(fc.constantFrom(...pathsOf(b)), wrongValue).map(([p, v]) => JSON.stringify(replaceAt(b, p, v)))),
      fc.string().map((s) => `{${s}`),
      fc.uint8Array({ maxLength: 200 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/v1/changes', '/v1/changes/dry-run', '/v1/changes/fuzz-1/confirm', '/v1/changes/fuzz-1/abort'), body, async (path, payload) => {
        const before = started;
        const res = await post(path, payload);
        const answer = (await res.json()) as { error?: string; issues?: { field: string; message: string }[] };
        if (res.status >= 500) throw new Error(`${path} answered ${res.status} to ${String(payload).slice(0, 200)}: ${JSON.stringify(answer)}`);
        if (path.endsWith('/confirm') || path.endsWith('/abort')) {
          expect([400, 403, 404]).toContain(res.status);
          expect(answer.error).toMatch(/\S/);
          return;
        }
        if (res.status === 400) {
          expect(answer.error).toMatch(/\S/);
          if (answer.error === 'invalid change request') for (const i of answer.issues ?? []) expect(i.message).toMatch(/\S/);
          expect(started).toBe(before); // refused before anything started
        } else if (res.status === 403) {
          expect(answer.error).toMatch(/author/);
        } else {
          expect([200, 202]).toContain(res.status);
          expect(started).toBe(before + 1);
        }
      }),
      runs(600),
    );
  });
});

// ---- the planner: ops, then inverses in reverse order, give the original table back ----

const DESTS = ['10.0.0.0/8', '10.1.0.0/16', '10.2.0.0/16', '192.0.2.0/24', '2001:db8::/32', '2001:db8:1::/48'];
const GW4 = ['10.9.0.1', '10.9.0.2'];
const GW6 = ['2001:db8:ff::1', '2001:db8:ff::2'];
const DEVICES = ['lan0', 'wan0'];

const routeArb: fc.Arbitrary<Route | null> = fc
  .record({
    destination: fc.constantFrom(...DESTS),
    gw: fc.nat({ max: 2 }),
    device: fc.option(fc.constantFrom(...DEVICES), { nil: undefined }),
    table: fc.constantFrom(254, 100),
    metric: fc.option(fc.constantFrom(10, 20), { nil: undefined }),
    // ECMP: next hops (with weights and devices) instead of a gateway, a quarter of the time.
    ecmp: fc.option(fc.array(fc.record({ gw: fc.nat({ max: 1 }), weight: fc.constantFrom(1, 2), device: fc.option(fc.constantFrom(...DEVICES), { nil: undefined }) }), { minLength: 2, maxLength: 2 }), { nil: undefined, freq: 3 }),
  })
  .map(({ destination, gw, device, table, metric, ecmp }) => {
    const v6 = destination.includes(':');
    const gateways = v6 ? GW6 : GW4;
    const gateway = gw === 2 ? undefined : gateways[gw];
    const base = { destination, table, ...(metric !== undefined ? { metric } : {}) };
    const input = ecmp
      ? { ...base, nexthops: ecmp.map((h, i) => ({ gateway: gateways[(h.gw + i) % 2], weight: h.weight, ...(h.device ? { device: h.device } : {}) })) }
      : { ...base, ...(gateway ? { gateway } : {}), ...(device ? { device } : {}) };
    const parsed = routeSchema.safeParse(input);
    return parsed.success ? parsed.data : null;
  });
/** A routing table: at most one route per key (destination, table, metric), as the kernel keeps it. */
const routesArb = fc.array(routeArb, { maxLength: 8 }).map((rs) => uniqueBy(rs.filter((r): r is Route => r !== null), routeKey));

const ruleArb = fc
  .record({ priority: fc.integer({ min: 1, max: 4 }), from: fc.option(fc.constantFrom('10.1.0.0/16', '10.2.0.0/16', '2001:db8::/32'), { nil: undefined }), table: fc.constantFrom(100, 200, 'main'), iif: fc.option(fc.constantFrom(...DEVICES), { nil: undefined }) })
  .map((r) => ruleSchema.safeParse({ ...r, ...(r.from ? {} : { family: 4 }) }))
  .map((p) => (p.success ? p.data : null));
const rulesArb = fc.array(ruleArb, { maxLength: 8 }).map((rs) => uniqueBy(rs.filter((r): r is PolicyRule => r !== null), ruleKey));

const zoneArb = fc
  .record({ name: fc.constantFrom('lan', 'wan', 'dmz'), id: fc.integer({ min: 1, max: 3 }), interfaces: fc.subarray(['lan0', 'lan1', 'wan0']), prefixes: fc.subarray(['10.1.0.0/16', '10.2.0.0/16', '192.0.2.0/24']) })
  .map((z) => zoneSchema.safeParse(z))
  .map((p) => (p.success ? p.data : null));
const zonesArb = fc.array(zoneArb, { maxLength: 4 }).map((zs) => uniqueBy(zs.filter((z): z is Zone => z !== null), (z) => z.name));

const natArb: fc.Arbitrary<NatConfig> = fc
  .record({
    sourceNat: fc.array(fc.record({ source: fc.constantFrom('10.1.0.0/16', '10.2.0.0/16'), outInterface: fc.constantFrom('wan0', 'wan1') }), { maxLength: 5 }),
    portForwards: fc.array(fc.record({ protocol: fc.constantFrom('tcp' as const, 'udp' as const), port: fc.constantFrom(80, 443, 8080), to: fc.constantFrom('10.1.0.2', '10.1.0.3') }), { maxLength: 5 }),
  })
  .map((n) => natSchema.parse(n));

const rateLimitArb: fc.Arbitrary<MapRateLimit> = fc.record({
  cidr: fc.constantFrom('198.51.100.1/32', '198.51.100.2/32', '198.51.100.3/32', '2001:db8::1/128'),
  pps: fc.integer({ min: 1, max: 3 }),
  burst: fc.integer({ min: 1, max: 3 }),
  expiresAt: fc.option(fc.constantFrom('2099-01-01T00:00:00.000Z', '2099-06-01T00:00:00.000Z'), { nil: undefined }),
}).map((r) => (r.expiresAt === undefined ? { cidr: r.cidr, pps: r.pps, burst: r.burst } : r) as MapRateLimit);
const rateLimitsArb = fc.array(rateLimitArb, { maxLength: 6 }).map((rs) => uniqueBy(rs, (r) => r.cidr));

function uniqueBy<T>(items: T[], key: (t: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.values()];
}

/** A keyed table (routes, rules, zones, rate limits) as the kernel/map holds it; every op checks what it expects to find. */
class KeyedTable<T> {
  readonly rows: Map<string, T>;
  constructor(
    rows: T[],
    private readonly key: (t: T) => string,
  ) {
    this.rows = new Map(rows.map((r) => [key(r), structuredClone(r)]));
  }
  add(row: T): void {
    if (this.rows.has(this.key(row))) throw new Error(`add of ${this.key(row)}: already there (the kernel would refuse: EEXIST)`);
    this.rows.set(this.key(row), row);
  }
  delete(row: T): void {
    if (!this.rows.has(this.key(row))) throw new Error(`delete of ${this.key(row)}: not there (ENOENT)`);
    this.rows.delete(this.key(row));
  }
  replace(row: T, previous: T): void {
    const have = this.rows.get(this.key(previous));
    if (have === undefined) throw new Error(`replace of ${this.key(previous)}: not there`);
    expect(have).toEqual(previous);
    this.rows.delete(this.key(previous));
    this.rows.set(this.key(row), row);
  }
  sorted(): T[] {
    return [...this.rows.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v);
  }
}

type KeyedOp<T> = { action: 'add' | 'delete'; row: T } | { action: 'replace'; row: T; previous: T };

/** Applies ops, then their inverses in reverse; returns [after plan, after rollback]. */
function roundTrip<T, O>(rows: T[], key: (t: T) => string, ops: O[], view: (op: O) => KeyedOp<T>): [T[], T[]] {
  const table = new KeyedTable(rows, key);
  const apply = (op: O) => {
    const v = view(op);
    if (v.action === 'replace') table.replace(v.row, v.previous);
    else if (v.action === 'add') table.add(v.row);
    else table.delete(v.row);
  };
  ops.forEach(apply);
  const after = table.sorted();
  [...ops].reverse().forEach((op) => apply(inverseOf(op as never) as O));
  return [after, table.sorted()];
}

const sortedBy = <T,>(rows: T[], key: (t: T) => string) => [...rows].sort((a, b) => (key(a) < key(b) ? -1 : 1));

describe('fuzzing: planner ops and their inverses', () => {
  test('routes: the plan reaches the desired table (as routeMatches judges), the inverses the observed one exactly', () => {
    fc.assert(
      fc.property(routesArb, routesArb, (observed, desired) => {
        const ops = planRoutes(observed, desired);
        const [after, back] = roundTrip(observed, routeKey, ops, (op: RouteOperation) => (op.action === 'replace' ? { action: 'replace', row: op.route, previous: op.previous } : { action: op.action, row: op.route }));
        expect(after.map(routeKey)).toEqual(sortedBy(desired, routeKey).map(routeKey));
        after.forEach((have, i) => expect(routeMatches(have, sortedBy(desired, routeKey)[i]!)).toBe(true));
        expect(back).toEqual(sortedBy(observed, routeKey));
        // Planning again from the reached state has nothing left to do.
        expect(planRoutes(after, desired)).toEqual([]);
      }),
      runs(2000),
    );
  });

  test('policy rules', () => {
    fc.assert(
      fc.property(rulesArb, rulesArb, (observed, desired) => {
        const ops = planRules(observed, desired);
        const [after, back] = roundTrip(observed, ruleKey, ops, (op: RuleOperation) => ({ action: op.action, row: op.rule }));
        expect(after).toEqual(sortedBy(desired, ruleKey));
        expect(back).toEqual(sortedBy(observed, ruleKey));
      }),
      runs(2000),
    );
  });

  test('zones', () => {
    fc.assert(
      fc.property(zonesArb, zonesArb, (observed, desired) => {
        const ops = planZones(observed, desired);
        const [after, back] = roundTrip(observed, (z: Zone) => z.name, ops, (op: ZoneOperation) => (op.action === 'replace' ? { action: 'replace', row: op.zone, previous: op.previous } : { action: op.action, row: op.zone }));
        expect(after).toEqual(sortedBy(desired, (z) => z.name));
        expect(back).toEqual(sortedBy(observed, (z) => z.name));
      }),
      runs(2000),
    );
  });

  test('zone membership (patch.zoneMembers): resolved or refused naming the field; the plan reaches it in nft and the eBPF maps, the inverses bring back the original', () => {
    // The node's zones as the state validation admits them: an interface in at most one zone, ids unique.
    const nodeZonesArb = zonesArb.map((zs) => {
      const taken = new Set<string>();
      return uniqueBy(zs, (z) => String(z.id)).map((z) => {
        const interfaces = z.interfaces.filter((name) => !taken.has(name));
        interfaces.forEach((name) => taken.add(name));
        return { ...z, interfaces };
      });
    });
    const entryArb = fc.record({ zone: fc.constantFrom('lan', 'wan', 'dmz', 'guest'), interfaces: fc.subarray(['lan0', 'lan1', 'wan0', 'dmz0'], { minLength: 1 }) });
    const membersArb = fc.record({ join: fc.array(entryArb, { maxLength: 2 }), leave: fc.array(entryArb, { maxLength: 2 }) }).map((m) => zoneMembersPatchSchema.safeParse(m)).filter((p) => p.success).map((p) => p.data!);
    const outcomes = { resolved: 0, refused: 0 };
    fc.assert(
      fc.property(nodeZonesArb, membersArb, (observed, members) => {
        let resolved: Zone[];
        try {
          resolved = patchZoneMembers(observed, members);
          outcomes.resolved++;
        } catch (err) {
          outcomes.refused++;
          expect(err).toBeInstanceOf(ZoneMembershipError);
          expect((err as ZoneMembershipError).message).toMatch(/^patch\.zoneMembers\.join\[\d+\]\.(zone: zone "\w+" is not a zone|interfaces\[\d+\]: interface \w+ is already in zone \w+)/);
          return;
        }
        // Still a valid node state (one zone per interface); only members changed; a second run changes nothing.
        expect(nodeStateSchema.safeParse({ zones: resolved }).success).toBe(true);
        expect(resolved.map(({ name, id, prefixes }) => ({ name, id, prefixes }))).toEqual(observed.map(({ name, id, prefixes }) => ({ name, id, prefixes })));
        for (const j of members.join) for (const name of j.interfaces) expect(resolved.find((z) => z.name === j.zone)?.interfaces).toContain(name);
        expect(patchZoneMembers(resolved, members)).toEqual(resolved);
        // nft: the plan's ops reach the resolved zones, their inverses the observed ones.
        const ops = planZones(observed, resolved);
        const [after, back] = roundTrip(observed, (z: Zone) => z.name, ops, (op: ZoneOperation) => (op.action === 'replace' ? { action: 'replace', row: op.zone, previous: op.previous } : { action: op.action, row: op.zone }));
        expect(after.map(describeZone)).toEqual(sortedBy(resolved, (z) => z.name).map(describeZone));
        expect(back).toEqual(sortedBy(observed, (z) => z.name));
        // eBPF: the same membership in the zone maps.
        const maps = zoneMapsOf(observed);
        const next = withZoneMembers(maps, resolved, zonesTouchedByMembers(members));
        expect(next).toEqual(zoneMapsOf(resolved));
        const mapOps = planZoneMaps(maps, next);
        expect(applyZoneMapOperations(maps, mapOps)).toEqual(next);
        expect(applyZoneMapOperations(next, [...mapOps].reverse().map(invertZoneMapOperation))).toEqual(maps);
      }),
      runs(500),
    );
    // Both paths were exercised (else the property proves little).
    expect(outcomes.resolved).toBeGreaterThan(50);
    expect(outcomes.refused).toBeGreaterThan(50);
  });

  test('rate limits', () => {
    fc.assert(
      fc.property(rateLimitsArb, rateLimitsArb, (observed, desired) => {
        const ops = planRateLimits(observed, desired);
        const [after, back] = roundTrip(observed, (r: MapRateLimit) => r.cidr, ops, (op: RateLimitOperation) => (op.action === 'replace' ? { action: 'replace', row: op.entry, previous: op.previous } : { action: op.action, row: op.entry }));
        expect(after).toEqual(sortedBy(desired, (r) => r.cidr));
        expect(back).toEqual(sortedBy(observed, (r) => r.cidr));
      }),
      runs(2000),
    );
  });

  test('NAT chains (ordered: add and delete at an index)', () => {
    fc.assert(
      fc.property(natArb, natArb, (observed, desired) => {
        const chains = { postrouting: structuredClone(observed.sourceNat) as unknown[], prerouting: structuredClone(observed.portForwards) as unknown[] };
        const describe = (chain: string, rule: unknown) => (chain === 'postrouting' ? describeSourceNat(rule as never) : describePortForward(rule as never));
        const apply = (op: NatOperation) => {
          const list = chains[op.chain];
          if (op.action === 'add') {
            if (op.index > list.length) throw new Error(`add at ${op.index} past the end (${list.length})`);
            list.splice(op.index, 0, op.rule);
          } else {
            const have = list[op.index];
            if (have === undefined || describe(op.chain, have) !== describe(op.chain, op.rule)) throw new Error(`delete at ${op.index}: found ${have === undefined ? 'nothing' : describe(op.chain, have)}, expected ${describe(op.chain, op.rule)}`);
            list.splice(op.index, 1);
          }
        };
        const ops = planNat(observed, desired);
        ops.forEach(apply);
        expect(chains).toEqual({ postrouting: desired.sourceNat, prerouting: desired.portForwards });
        [...ops].reverse().forEach((op) => apply(inverseOf(op)));
        expect(chains).toEqual({ postrouting: observed.sourceNat, prerouting: observed.portForwards });
      }),
      runs(2000),
    );
  });

  test('links (MTU, up/down) of existing interfaces', () => {
    const names = ['lan0', 'lan1', 'wan0'];
    const linkArb = fc.record({ mtu: fc.constantFrom(1400, 1500, 9000), up: fc.boolean() });
    const observedArb = fc.tuple(linkArb, linkArb, linkArb).map((ls) => ls.map((l, i) => ({ name: names[i]!, addresses: [], ...l })));
    const desiredArb = fc.array(fc.record({ name: fc.constantFrom(...names), mtu: fc.option(fc.constantFrom(1400, 1500, 9000), { nil: undefined }), up: fc.option(fc.boolean(), { nil: undefined }) }), { maxLength: 3 }).map((ds) =>
      uniqueBy(ds, (d) => d.name).map((d) => ({ name: d.name, ...(d.mtu !== undefined ? { mtu: d.mtu } : {}), ...(d.up !== undefined ? { up: d.up } : {}) })),
    );
    fc.assert(
      fc.property(observedArb, desiredArb, (observed, desired) => {
        const table = new Map<string, { mtu: number; up: boolean }>(observed.map((i) => [i.name, { mtu: i.mtu, up: i.up }]));
        const apply = (op: LinkOperation) => {
          const link = table.get(op.name);
          if (!link) throw new Error(`set on missing ${op.name}`);
          // What the op says it replaces must be what is there.
          if (op.previous.mtu !== undefined) expect(link.mtu).toBe(op.previous.mtu);
          if (op.previous.up !== undefined) expect(link.up).toBe(op.previous.up);
          if (op.settings.mtu !== undefined) link.mtu = op.settings.mtu;
          if (op.settings.up !== undefined) link.up = op.settings.up;
        };
        const ops = planLinks(observed, desired);
        ops.forEach(apply);
        for (const d of desired) expect(table.get(d.name)).toMatchObject({ ...(d.mtu !== undefined ? { mtu: d.mtu } : {}), ...(d.up !== undefined ? { up: d.up } : {}) });
        [...ops].reverse().forEach((op) => apply(inverseOf(op)));
        expect(Object.fromEntries(table)).toEqual(Object.fromEntries(observed.map((i) => [i.name, { mtu: i.mtu, up: i.up }])));
      }),
      runs(2000),
    );
  });

  test('addresses', () => {
    const ifaceArb = fc.record({ name: fc.constantFrom('lan0', 'lan1', 'wan0'), addresses: fc.subarray(['10.1.0.1/24', '10.1.0.2/24', '2001:db8::1/64']) });
    const observedArb = fc.array(ifaceArb, { maxLength: 3 }).map((is) => uniqueBy(is, (i) => i.name).map((i) => ({ ...i, mtu: 1500, up: true })));
    const desiredArb = fc.array(fc.record({ name: fc.constantFrom('lan0', 'lan1', 'wan0'), addresses: fc.option(fc.subarray(['10.1.0.1/24', '10.1.0.2/24', '2001:db8::1/64']), { nil: undefined }) }), { maxLength: 3 }).map((is) =>
      uniqueBy(is, (i) => i.name).map((i) => (i.addresses === undefined ? { name: i.name } : { name: i.name, addresses: i.addresses })),
    );
    fc.assert(
      fc.property(observedArb, desiredArb, (observed, desired) => {
        const key = (d: string, a: string) => `${d} ${a}`;
        const present = observed.flatMap((i) => i.addresses.map((a) => key(i.name, a)));
        const ops = planAddresses(observed, desired);
        const [after, back] = roundTrip(present, (k: string) => k, ops, (op: AddressOperation) => ({ action: op.action, row: key(op.device, op.address) }));
        // Interfaces whose addresses desired lists have exactly those; the others keep theirs.
        const listed = new Map(desired.filter((d) => d.addresses !== undefined).map((d) => [d.name, d.addresses!]));
        const expected = [
          ...observed.filter((i) => !listed.has(i.name)).flatMap((i) => i.addresses.map((a) => key(i.name, a))),
          ...[...listed].flatMap(([name, addresses]) => addresses.map((a) => key(name, a))),
        ].sort();
        expect(after).toEqual(expected);
        expect(back).toEqual([...present].sort());
      }),
      runs(2000),
    );
  });
});
