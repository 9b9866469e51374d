/**
 * The remote-endpoint rule (model/local-networks.ts): which networks are local, and which
 * side of a flow an application verdict is aimed at.
 */
import fc from 'fast-check';
import { cidrContains, parseCidr, parseIp } from '../../model/ip';
import { compileLocalNetworks, localNetworksOf, localityOf, remoteEndpoint, type LocalNetworks } from '../../model/local-networks';

const ROUTER = {
  interfaces: [
    { name: 'lan0', addresses: ['10.91.1.1/24', 'fd00:91:1::1/64'] },
    { name: 'dmz0', addresses: ['10.91.3.1/24'] },
    { name: 'wan0', addresses: ['203.0.113.2/24'] },
    { name: 'mgmt0', addresses: ['192.0.2.10/28'] },
  ],
  zones: [
    { name: 'lan', interfaces: ['lan0'], prefixes: ['10.200.0.0/16'] },
    { name: 'dmz', interfaces: ['dmz0'], prefixes: [] },
    { name: 'wan', interfaces: ['wan0'], prefixes: ['198.18.0.0/15'] },
  ],
  defaultRouteInterfaces: ['wan0'],
};

describe('localNetworksOf', () => {
  test('inside zones give their connected and routed prefixes; the external zone only the node address', () => {
    expect(localNetworksOf(ROUTER).prefixes).toEqual(
      ['10.200.0.0/16', '10.91.1.0/24', '10.91.1.1/32', '10.91.3.0/24', '10.91.3.1/32', '192.0.2.0/28', '192.0.2.10/32', '203.0.113.2/32', 'fd00:91:1::/64', 'fd00:91:1::1/128'].sort(),
    );
  });

  test('unzoned interfaces: the one a default route leaves through is outside', () => {
    const local = localNetworksOf({ interfaces: ROUTER.interfaces, zones: [], defaultRouteInterfaces: ['wan0'] });
    expect(local.prefixes).toContain('10.91.1.0/24');
    expect(local.prefixes).toContain('203.0.113.2/32');
    expect(local.prefixes).not.toContain('203.0.113.0/24');
  });

  test('external zones are configurable; extra prefixes are added', () => {
    const local = localNetworksOf(ROUTER, { externalZones: new Set(['wan', 'dmz']), extra: ['172.16.0.0/12'] });
    expect(local.prefixes).not.toContain('10.91.3.0/24');
    expect(local.prefixes).toContain('10.91.3.1/32');
    expect(local.prefixes).toContain('172.16.0.0/12');
  });
});

describe('remoteEndpoint', () => {
  const local = localNetworksOf(ROUTER);

  test.each([
    ['local → remote: the destination', '10.91.1.20', '198.51.100.7', { side: 'dest_ip', address: '198.51.100.7' }],
    ['remote → local: the source', '198.51.100.7', '10.91.1.20', { side: 'src_ip', address: '198.51.100.7' }],
    ['a host on the WAN subnet is remote', '203.0.113.9', '10.91.1.20', { side: 'src_ip', address: '203.0.113.9' }],
    ['the router itself is local (its WAN address)', '203.0.113.2', '198.51.100.7', { side: 'dest_ip', address: '198.51.100.7' }],
    ['IPv6', 'fd00:91:1::20', '2001:db8::7', { side: 'dest_ip', address: '2001:db8::7' }],
    ['IPv4-mapped IPv6 is judged as IPv4', '::ffff:10.91.1.20', '198.51.100.7', { side: 'dest_ip', address: '198.51.100.7' }],
  ])('%s', (_name, src, dest, expected) => {
    expect(remoteEndpoint(src, dest, local)).toEqual(expected);
  });

  test.each([
    ['two local hosts', '10.91.1.20', '10.91.3.5', 'local-to-local'],
    ['a local host and a routed inside prefix', '10.200.4.4', '10.91.1.20', 'local-to-local'],
    ['two remote hosts (transit)', '198.51.100.7', '198.51.100.8', 'no-local-side'],
    ['multicast (BitTorrent local peer discovery)', '10.91.1.20', '239.192.152.143', 'not-unicast'],
    ['limited broadcast', '10.91.1.20', '255.255.255.255', 'not-unicast'],
    ['link-local', 'fe80::1', '2001:db8::7', 'not-unicast'],
  ])('%s: no address', (_name, src, dest, reason) => {
    expect(remoteEndpoint(src, dest, local)).toMatchObject({ withheld: reason });
  });

  test('unknown local networks or a missing address block nothing', () => {
    expect(remoteEndpoint('10.91.1.20', '198.51.100.7', undefined)).toMatchObject({ withheld: 'local-networks-unknown' });
    expect(remoteEndpoint(undefined, '198.51.100.7', local)).toMatchObject({ withheld: 'no-address' });
  });
});

describe('remoteEndpoint properties', () => {
  const v4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 })).map((b) => b.join('.'));
  const v4Prefix = fc.tuple(v4, fc.integer({ min: 8, max: 32 })).map(([a, len]) => {
    const bytes = parseIp(a)!.bytes;
    const out = bytes.map((x, i) => x & ((0xff << (8 - Math.max(0, Math.min(8, len - i * 8)))) & 0xff));
    return `${out.join('.')}/${len}`;
  });
  const networks = fc.array(v4Prefix, { maxLength: 6 }).map((prefixes): LocalNetworks => ({ prefixes }));
  const inside = (address: string, local: LocalNetworks) => local.prefixes.some((p) => cidrContains(parseCidr(p), { ...parseIp(address)!, prefixLength: 32 }));

  test('never a local host, whatever the flow', () => {
    fc.assert(
      fc.property(networks, v4, v4, (local, a, b) => {
        const r = remoteEndpoint(a, b, local);
        if ('side' in r) expect(inside(r.address, local)).toBe(false);
      }),
    );
  });

  test('the position in the flow does not matter: swapping src and dest aims at the same address', () => {
    fc.assert(
      fc.property(networks, v4, v4, (local, a, b) => {
        const there = remoteEndpoint(a, b, local);
        const back = remoteEndpoint(b, a, local);
        if ('side' in there) expect('side' in back && back.address).toBe(there.address);
        else expect(back).toMatchObject({ withheld: there.withheld });
      }),
    );
  });

  test('a flow with one local and one remote side always aims at the remote one', () => {
    // The local side is drawn from inside one of the prefixes (its host bits random).
    const flow = fc
      .tuple(fc.array(v4Prefix, { minLength: 1, maxLength: 6 }), fc.nat(5), fc.nat(0xffffffff), v4)
      .map(([prefixes, i, bits, b]) => {
        const p = parseCidr(prefixes[i % prefixes.length]!);
        const host = p.bytes.map((x, k) => x | ((bits >>> (24 - 8 * k)) & 0xff & ~((0xff << (8 - Math.max(0, Math.min(8, p.prefixLength - k * 8)))) & 0xff)));
        return { local: { prefixes }, a: host.join('.'), b };
      });
    fc.assert(
      fc.property(flow, ({ local, a, b }) => {
        fc.pre(localityOf(a, local) === 'local' && localityOf(b, local) === 'remote');
        expect(remoteEndpoint(a, b, local)).toEqual({ side: 'dest_ip', address: b });
        expect(remoteEndpoint(b, a, local)).toEqual({ side: 'src_ip', address: b });
      }),
    );
  });

  test('compiled and plain local networks agree', () => {
    fc.assert(
      fc.property(networks, v4, (local, a) => {
        expect(localityOf(a, compileLocalNetworks(local))).toBe(localityOf(a, local));
      }),
    );
  });
});
