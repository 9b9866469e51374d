/**
 * How a change request's blocklist becomes an intent for the node (model/blocklist-change.ts),
 * and the request rules that keep large lists out of workflow payloads.
 */
import { blocklistIntent, observedEntry } from '../../model/blocklist-change';
import { validateChangeRequest, type ChangeRequestInput } from '../../model/change-request';
import { MAX_INLINE_BLOCKLIST, nodeStateSchema } from '../../model/node-state';

const NOW = Date.parse('2026-11-22T00:00:00Z');
const base = { id: 'c1', author: 'alice', reason: 'test', targets: ['node-a'] };
const SHA = 'ab'.repeat(32);

function validate(overrides: Partial<ChangeRequestInput>) {
  return validateChangeRequest({ ...base, ...overrides }, NOW);
}

describe('blocklist intent of a change', () => {
  test('a desired state with a reference replaces the whole list by reference', () => {
    const desired = nodeStateSchema.parse({ blocklistRef: { file: '/var/lib/feeds/drop.txt', sha256: SHA } });
    expect(blocklistIntent({ desired })).toEqual({ mode: 'replace-ref', ref: { file: '/var/lib/feeds/drop.txt', sha256: SHA } });
  });

  test('a desired state without one replaces the whole list inline, expiries in unix seconds (none = empty list: clear)', () => {
    const desired = nodeStateSchema.parse({ blocklist: [{ cidr: '192.0.2.1', reason: 'x', expiresAt: '2030-01-01T00:00:00Z' }, { cidr: '10.0.0.0/8', reason: 'y' }] });
    expect(blocklistIntent({ desired })).toEqual({ mode: 'replace', entries: [{ cidr: '192.0.2.1/32', expiresAt: 1893456000 }, { cidr: '10.0.0.0/8' }] });
    expect(blocklistIntent({ desired: nodeStateSchema.parse({}) })).toEqual({ mode: 'replace', entries: [] });
  });

  test('a patch with replaceRef replaces the whole list by reference and nothing else', () => {
    const result = validate({ patch: { blocklist: { replaceRef: { file: '/var/lib/feeds/drop.txt' } } } });
    expect(result.ok).toBe(true);
    if (result.ok) expect(blocklistIntent(result.request)).toEqual({ mode: 'replace-ref', ref: { file: '/var/lib/feeds/drop.txt' } });
    const mixed = validate({ patch: { blocklist: { replaceRef: { sha256: SHA }, upsert: [{ cidr: '192.0.2.1', reason: 'x' }] } } });
    expect(mixed.ok).toBe(false);
    if (!mixed.ok) expect(mixed.issues).toContainEqual({ field: 'patch.blocklist.replaceRef', message: 'replaces the whole blocklist: give it alone, without upsert or remove' });
  });

  test('a patch upserts and removes only what it names; a patch without blocklist keeps it', () => {
    const patch = { blocklist: { upsert: [{ cidr: '192.0.2.9/32', reason: 'scan' }], remove: ['198.51.100.0/24'] } };
    expect(blocklistIntent({ patch: patch as never })).toEqual({ mode: 'patch', upsert: [{ cidr: '192.0.2.9/32' }], remove: ['198.51.100.0/24'] });
    expect(blocklistIntent({ patch: { blocklist: { upsert: [], remove: [] } } as never })).toEqual({ mode: 'keep' });
    expect(blocklistIntent({ patch: {} as never })).toEqual({ mode: 'keep' });
  });

  test('map entries render back in the plan\'s words (ISO expiry)', () => {
    expect(observedEntry({ cidr: '192.0.2.1/32', expiresAt: 1893456000 })).toEqual({ cidr: '192.0.2.1/32', expiresAt: '2030-01-01T00:00:00.000Z' });
    expect(observedEntry({ cidr: '192.0.2.1/32' })).toEqual({ cidr: '192.0.2.1/32' });
  });
});

describe('change request rules for blocklists', () => {
  test('a list both inline and by reference is refused, naming blocklistRef', () => {
    const result = validate({ desired: { blocklist: [{ cidr: '192.0.2.1', reason: 'x' }], blocklistRef: { sha256: SHA } } });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues).toContainEqual({ field: 'desired.blocklistRef', message: 'give the blocklist inline (blocklist) or by reference (blocklistRef), not both' });
  });

  test('more entries inline than a payload should carry are refused, pointing at the reference', () => {
    const many = Array.from({ length: MAX_INLINE_BLOCKLIST + 1 }, (_, i) => ({ cidr: `10.${i >>> 16}.${(i >>> 8) & 255}.${i & 255}`, reason: 'feed' }));
    for (const request of [{ desired: { blocklist: many } }, { patch: { blocklist: { upsert: many } } }]) {
      const result = validate(request as Partial<ChangeRequestInput>);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.issues[0]?.message).toMatch(/at most 10000 entries.*by reference/);
    }
  });

  test('a reference must be an absolute path without ".." or a SHA-256 digest', () => {
    for (const [ref, message] of [
      [{ file: 'feeds/drop.txt' }, 'must be an absolute path'],
      [{ file: '/var/lib/../../etc/shadow' }, 'must not contain ".." segments'],
      [{ sha256: 'nothex' }, 'must be a SHA-256 digest'],
    ] as const) {
      const result = validate({ desired: { blocklistRef: ref as never } });
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.issues.map((i) => `${i.field}: ${i.message}`).join('\n')).toMatch(new RegExp(`desired\\.blocklistRef.*${message.replace(/[.*+?^${}()|[\]\\"]/g, '\\$&')}`));
    }
  });
});
