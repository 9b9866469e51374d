/**
 * The lock-out guard's defaults and spellings: loopback, link-local and each node's own
 * addresses, gateways and DNS servers are always protected, in IPv4-mapped IPv6 form too;
 * fields that carry guard authority are recognised wherever they appear; the caps per kind.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readProtectedAddresses } from '../../activities/system/protected-addresses';
import type { IpRunner } from '../../activities/system/ip-runner';
import { AUTHORITY_FIELDS, authorityFieldsIn, DEFAULT_ALLOW_LISTS, effectiveGuardConfig, EnforcementGuard, guardConfigSchema, mappedCounterpart, parseGuardConfig } from '../../model/enforcement-guard';
import { formatCidr, parseCidr } from '../../model/ip';
import { namespaceQuarantinable, parseQuarantineConfig } from '../../model/quarantine';

const node = { node: 'n1', addresses: ['10.0.0.2/32', '2001:db8::2/128'], gateways: ['10.0.0.1/32', 'fe80::1/128'], dnsServers: ['192.0.2.53/32'] };
const defaults = new EnforcementGuard(effectiveGuardConfig(guardConfigSchema.parse({}), [node]));

describe('default allow-list', () => {
  test.each([
    ['127.0.0.1/32', 'loopback'],
    ['127.255.0.0/16', 'loopback'],
    ['::1/128', 'loopback'],
    ['169.254.10.1/32', 'link-local'],
    ['fe80::abcd/128', 'link-local'],
    ['10.0.0.2/32', 'node-addresses'],
    ['10.0.0.0/24', 'node-addresses'],
    ['2001:db8::2/128', 'node-addresses'],
    ['10.0.0.1/32', 'gateways'],
    ['192.0.2.53/32', 'dns-servers'],
  ])('%s is refused (list %s) with no configuration at all', (target, list) => {
    expect(defaults.checkTarget(target)).toMatchObject({ code: 'allow-listed', reason: expect.stringContaining(`on allow-list "${list}"`) });
  });

  test.each([
    ['::ffff:127.0.0.1/128', 'loopback'],
    ['::ffff:7f00:1/128', 'loopback'],
    ['::ffff:10.0.0.2/128', 'node-addresses'],
    ['::ffff:10.0.0.1/128', 'gateways'],
    ['::ffff:192.0.2.53/128', 'dns-servers'],
    ['::ffff:169.254.1.1/128', 'link-local'],
    // A prefix wide enough to swallow the mapped range swallows the protected ones.
    ['::ffff:0:0/96', 'loopback'],
  ])('the IPv4-mapped form %s is refused as its IPv4 address would be (list %s)', (target, list) => {
    expect(defaults.checkTarget(target)).toMatchObject({ code: 'allow-listed', reason: expect.stringContaining(`on allow-list "${list}"`) });
  });

  test('a configured IPv4 list protects the mapped form too, and a mapped entry protects the IPv4 address', () => {
    const g = new EnforcementGuard(effectiveGuardConfig(guardConfigSchema.parse({ allowLists: { management: ['198.51.100.0/24', '::ffff:203.0.113.9/128'] } })));
    expect(g.checkTarget('::ffff:198.51.100.7/128')?.code).toBe('allow-listed');
    expect(g.checkTarget('203.0.113.9/32')?.code).toBe('allow-listed');
    expect(g.checkTarget('203.0.113.10/32')).toBeNull();
  });

  test('a mapped prefix is held to the IPv4 bound; ordinary addresses pass', () => {
    expect(defaults.checkTarget('::ffff:198.51.0.0/112')).toMatchObject({ code: 'prefix-too-short', reason: expect.stringContaining('shortest IPv4 prefix') });
    expect(defaults.checkTarget('::ffff:198.51.100.7/128')).toBeNull();
    expect(defaults.checkTarget('198.51.100.7/32')).toBeNull();
    expect(defaults.checkTarget('2001:db8:1::7/128')).toBeNull();
  });

  test('the defaults cannot be configured away: a configured list of the same name adds to them', () => {
    const g = new EnforcementGuard(effectiveGuardConfig(guardConfigSchema.parse({ allowLists: { loopback: [] } })));
    expect(g.checkTarget('127.0.0.1/32')?.code).toBe('allow-listed');
    expect(Object.keys(effectiveGuardConfig(guardConfigSchema.parse({}))).length).toBeGreaterThan(0);
    expect(effectiveGuardConfig(guardConfigSchema.parse({})).allowLists).toEqual({ loopback: [...DEFAULT_ALLOW_LISTS.loopback!], 'link-local': [...DEFAULT_ALLOW_LISTS['link-local']!] });
  });

  test('mappedCounterpart maps both ways and only inside ::ffff:0:0/96', () => {
    expect(formatCidr(mappedCounterpart(parseCidr('10.0.0.0/8'))!)).toBe('::ffff:a00:0/104');
    expect(formatCidr(mappedCounterpart(parseCidr('::ffff:10.0.0.1/128'))!)).toBe('10.0.0.1/32');
    expect(mappedCounterpart(parseCidr('2001:db8::/32'))).toBeNull();
    expect(mappedCounterpart(parseCidr('::/0'))).toBeNull();
  });
});

describe('authority fields', () => {
  test('the guard, every list, bound and cap is one', () => {
    expect(AUTHORITY_FIELDS).toEqual(expect.arrayContaining(['guard', 'allowLists', 'minPrefixLengthV4', 'maxActiveBlocks', 'maxNewBlocksPerMinute', 'maxActiveRateLimits', 'maxNewQuarantinesPerMinute']));
    expect(authorityFieldsIn({ target: 'x', nodes: [], guard: {}, maxActiveBlocks: 1 })).toEqual(['guard', 'maxActiveBlocks']);
    expect(authorityFieldsIn({ target: 'x', nodes: [] })).toEqual([]);
    expect(authorityFieldsIn(null)).toEqual([]);
  });
});

describe('caps per kind', () => {
  const g = new EnforcementGuard(guardConfigSchema.parse({ maxActiveRateLimits: 2, maxNewRateLimitsPerMinute: 3, maxActiveQuarantines: 1, maxNewQuarantinesPerMinute: 2 }));
  test('rate limits and quarantines have their own limits and codes', () => {
    expect(g.checkCaps(2, [], 0, 'rate-limit')).toEqual({ code: 'too-many-active-rate-limits', reason: '2 automated rate limits are active; the cap is 2' });
    expect(g.checkCaps(1, [1, 2, 3], 10, 'rate-limit')).toEqual({ code: 'too-many-new-rate-limits', reason: '3 new automated rate limits in the last minute; the cap is 3/min' });
    expect(g.checkCaps(1, [], 0, 'quarantine')?.code).toBe('too-many-active-quarantines');
    expect(g.checkCaps(0, [1, 2], 10, 'quarantine')?.code).toBe('too-many-new-quarantines');
    expect(g.checkCaps(0, [1, 2], 70_000, 'quarantine')).toBeNull();
    expect(g.checkCaps(5, [], 0)).toBeNull();
  });
  test('a bad configuration names the field and the rule', () => {
    expect(() => parseGuardConfig({ maxActiveQuarantines: 0, allowLists: { m: ['10.0.0.1/8'] } }, 'FOS1_GUARD_FILE (g.json)')).toThrow(
      /invalid FOS1_GUARD_FILE \(g\.json\):\n {2}allowLists\.m\.0: "10\.0\.0\.1\/8" has host bits set.*\n {2}maxActiveQuarantines: /s,
    );
    expect(() => parseGuardConfig({ guardian: true })).toThrow(/Unrecognized key/);
  });
});

describe('protected addresses of a node', () => {
  test('its addresses, route gateways (ECMP too) and resolv.conf nameservers, as host prefixes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fos1-resolv-'));
    try {
      writeFileSync(join(dir, 'resolv.conf'), '# generated\nsearch example\nnameserver 192.0.2.53\nnameserver fe80::53%eth0\n  nameserver   2001:db8::53\noptions ndots:5\n');
      const outputs: Record<string, string> = {
        'addr show': JSON.stringify([{ addr_info: [{ local: '127.0.0.1' }, { local: '::1' }] }, { addr_info: [{ local: '10.0.0.2' }, { local: '2001:db8::2' }] }]),
        '-4 -json route': JSON.stringify([{ dst: 'default', gateway: '10.0.0.1' }, { dst: '198.18.0.0/24', nexthops: [{ gateway: '10.0.0.3' }, { gateway: '10.0.0.4' }] }, { dst: '10.0.0.0/24' }]),
        '-6 -json route': JSON.stringify([{ dst: 'default', gateway: 'fe80::1' }, { dst: '2001:db8:9::/48', via: { family: 'inet', host: '10.0.0.5' } }]),
      };
      const seen: string[][] = [];
      const ip: IpRunner = {
        netns: undefined,
        run: async (args) => {
          seen.push([...args]);
          const key = Object.keys(outputs).find((k) => args.join(' ').includes(k));
          return key ? outputs[key]! : '';
        },
      };
      const report = await readProtectedAddresses('n1', { ip, resolvConf: join(dir, 'resolv.conf') });
      expect(report).toEqual({
        node: 'n1',
        addresses: ['127.0.0.1/32', '::1/128', '10.0.0.2/32', '2001:db8::2/128'],
        gateways: ['10.0.0.1/32', '10.0.0.3/32', '10.0.0.4/32', 'fe80::1/128', '10.0.0.5/32'],
        dnsServers: ['192.0.2.53/32', 'fe80::53/128', '2001:db8::53/128'],
      });
      // argv only, never a shell string.
      expect(seen).toContainEqual(['-json', 'addr', 'show']);
      // No resolv.conf: no DNS servers, not an error.
      expect((await readProtectedAddresses('n1', { ip, resolvConf: join(dir, 'missing') })).dnsServers).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('quarantine and system namespaces', () => {
  test('kube-system, kube-public, kube-node-lease and fos1-system are refused unless configured', () => {
    const none = parseQuarantineConfig({});
    for (const ns of ['kube-system', 'kube-public', 'kube-node-lease', 'fos1-system']) expect(namespaceQuarantinable(ns, none)).toBe(false);
    expect(namespaceQuarantinable('tenant-a', none)).toBe(true);
    const opened = parseQuarantineConfig({ allowSystemNamespaces: ['kube-public'] });
    expect(namespaceQuarantinable('kube-public', opened)).toBe(true);
    expect(namespaceQuarantinable('kube-system', opened)).toBe(false);
    expect(() => parseQuarantineConfig({ allowSystemNamespaces: ['default'] })).toThrow(/allowSystemNamespaces/);
  });
});
