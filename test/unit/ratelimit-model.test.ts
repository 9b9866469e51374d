/**
 * Per-source rate limits in the model: validation with named fields, planning and
 * diff lines, and the eBPF value codec (its layout is checked against the BTF in
 * bpf-btf-layout.test.ts).
 */
import { decodeRateLimitValue, encodeRateLimitValue } from '../../bpf/ratelimit-maps';
import { validateChangeRequest } from '../../model/change-request';
import { nodeStateSchema } from '../../model/node-state';
import { planRateLimits, renderOperation } from '../../model/plan';
import { changeScope, subsystemIntents } from '../../model/subsystem';

const NOW = Date.parse('2026-11-22T00:00:00Z');
const base = { id: 'r1', author: 'fos1-enforcer', reason: 'ids', targets: ['node-a'] };

describe('rate limits in change requests', () => {
  test('a host limit validates; burst defaults to one second of the rate', () => {
    const state = nodeStateSchema.parse({ rateLimits: [{ cidr: '192.0.2.7', pps: 50, reason: 'scan' }] });
    expect(state.rateLimits).toEqual([{ cidr: '192.0.2.7/32', pps: 50, burst: 50, reason: 'scan' }]);
  });

  test.each([
    [{ cidr: '192.0.2.0/24', pps: 10, reason: 'x' }, 'patch.rateLimits.upsert[0].cidr', 'must be a single host (/32 or /128): a rate limit applies to one source'],
    [{ cidr: '192.0.2.1', pps: 0, reason: 'x' }, 'patch.rateLimits.upsert[0].pps', 'must be at least 1 packet per second'],
    [{ cidr: '192.0.2.1', pps: 2.5, reason: 'x' }, 'patch.rateLimits.upsert[0].pps', 'must be a whole number of packets per second'],
    [{ cidr: '192.0.2.1', pps: 5, reason: '' }, 'patch.rateLimits.upsert[0].reason', 'must say why the source is limited'],
  ])('%o is refused at %s', (limit, field, message) => {
    const result = validateChangeRequest({ ...base, patch: { rateLimits: { upsert: [limit] } } }, NOW);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues).toContainEqual({ field, message });
  });

  test('a limit that has already expired is refused', () => {
    const result = validateChangeRequest({ ...base, patch: { rateLimits: { upsert: [{ cidr: '192.0.2.1', pps: 5, reason: 'x', expiresAt: '2020-01-01T00:00:00Z' }] } } }, NOW);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues[0]?.field).toBe('patch.rateLimits.upsert[0].expiresAt');
  });
});

describe('rate-limit planning', () => {
  const limit = (cidr: string, pps: number, burst = pps, expiresAt?: number) => ({ cidr, pps, burst, ...(expiresAt ? { expiresAt } : {}) });

  test('adds, replaces when rate, burst or expiry differ, deletes what is no longer wanted', () => {
    const ops = planRateLimits([limit('192.0.2.1/32', 10), limit('192.0.2.2/32', 10), limit('192.0.2.3/32', 10)], [limit('192.0.2.1/32', 10), limit('192.0.2.2/32', 10, 40), limit('192.0.2.4/32', 5)]);
    expect(ops.map(renderOperation)).toEqual([
      '~ rate-limit 192.0.2.2/32 10 pps burst 10 => 192.0.2.2/32 10 pps burst 40',
      '+ rate-limit 192.0.2.4/32 5 pps burst 5',
      '- rate-limit 192.0.2.3/32 10 pps burst 10',
    ]);
  });

  test('a patch becomes an intent of the touched sources (expiry in unix seconds) and is scoped to the rate limits alone', () => {
    const patch = { rateLimits: { upsert: [{ cidr: '192.0.2.3/32', pps: 7, burst: 7, reason: 'flood', expiresAt: '2030-01-01T00:00:00.000Z' }], remove: ['192.0.2.1/32'] } };
    const intents = subsystemIntents({ patch: patch as never });
    expect(intents.ratelimits).toEqual({ mode: 'patch', upsert: [limit('192.0.2.3/32', 7, 7, Date.parse('2030-01-01T00:00:00Z') / 1000)], remove: ['192.0.2.1/32'] });
    expect(changeScope(intents)).toEqual(['ratelimits']);
    const upsert = intents.ratelimits.mode === 'patch' ? intents.ratelimits.upsert : [];
    expect(planRateLimits([limit('192.0.2.1/32', 10)], upsert).map(renderOperation)).toEqual(['+ rate-limit 192.0.2.3/32 7 pps burst 7 until 2030-01-01T00:00:00.000Z', '- rate-limit 192.0.2.1/32 10 pps burst 10']);
  });
});

describe('struct fos1_ratelimit_value codec', () => {
  test('round-trips and refuses out-of-range fields by name', () => {
    const value = { pps: 1000, burst: 2000, expiresAt: 1893456000, ruleId: 7 };
    expect(encodeRateLimitValue(value)).toHaveLength(24);
    expect(decodeRateLimitValue(encodeRateLimitValue(value))).toEqual(value);
    expect(decodeRateLimitValue(encodeRateLimitValue({ pps: 1, burst: 1 }))).toEqual({ pps: 1, burst: 1 });
    expect(() => encodeRateLimitValue({ pps: 0, burst: 1 })).toThrow('rate limit pps must be an integer 1–4294967295, got 0');
    expect(() => encodeRateLimitValue({ pps: 1, burst: 1, expiresAt: -1 })).toThrow('rate limit expiresAt must be unix seconds ≥ 0');
  });
});
