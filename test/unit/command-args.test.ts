/**
 * The node side's own checks (activities/system/command-args.ts): every value that goes
 * into an `ip` or `nft` command is re-checked where it enters the command, and a bad one
 * stops the command before anything runs. The tables are driven with recording runners
 * (the kernel is not needed to show that nothing was run).
 */
import { classifyError, ErrorDomains } from '../../activities/failures';
import { address, batchLine, checkArgv, checkBatchScript, integer, interfaceAddress, interfaceName, prefix, UnsafeArgumentError } from '../../activities/system/command-args';
import type { IpRunner } from '../../activities/system/ip-runner';
import { createIpRunner } from '../../activities/system/ip-runner';
import { LinkTable } from '../../activities/system/link-table';
import { NatTable } from '../../activities/system/nat-table';
import { NftCommandError, type NftRunner } from '../../activities/system/nft-runner';
import { RouteTable } from '../../activities/system/route-table';
import { RuleTable } from '../../activities/system/rule-table';
import type { Route } from '../../model/node-state';

const INJECTION = 'lan0\nlink add evil type bridge';

/** An `ip` runner that answers reads with empty listings and records every change it is asked to run. */
function recordingIp(): IpRunner & { changes: string[][] } {
  const changes: string[][] = [];
  return {
    netns: undefined,
    changes,
    run(args, stdin) {
      if (args.includes('show')) return Promise.resolve('[]');
      changes.push(stdin === undefined ? [...args] : [...args, stdin]);
      return Promise.resolve('');
    },
  };
}

describe('value checks', () => {
  test.each(['lan0', 'lan0.100', 'br_wan-1', 'a', 'abcdefghijklmno'])('interface name %j is accepted', (name) => {
    expect(interfaceName(name, 'device')).toBe(name);
  });

  test.each([INJECTION, 'lan 0', 'a/b', 'a:b', 'abcdefghijklmnop', '', '.', '..', '-n', '@set', '$var', 'lan0#', 'la"n', 42, undefined])('interface name %j is refused', (name) => {
    expect(() => interfaceName(name, 'route device')).toThrow(UnsafeArgumentError);
    expect(() => interfaceName(name, 'route device')).toThrow(/^refusing to build the command: route device .* is not an interface name/);
  });

  test('the message shows a newline escaped, never as a line break', () => {
    expect(() => interfaceName(INJECTION, 'route device')).toThrow('route device "lan0\\nlink add evil type bridge" is not an interface name');
  });

  test('prefixes and addresses must be in the canonical form the model gives', () => {
    expect(prefix('192.0.2.0/24', 'p')).toBe('192.0.2.0/24');
    expect(prefix('2001:db8::/32', 'p')).toBe('2001:db8::/32');
    for (const bad of ['192.0.2.1/24', '2001:DB8::/32', '2001:db8:0::/32', '192.0.2.0/24 dev x', '192.0.2.0/24\n', 'default']) {
      expect(() => prefix(bad, 'route destination')).toThrow(/route destination .* is not a canonical IPv4 or IPv6 prefix/);
    }
    expect(address('fd00:77::1', 'a')).toBe('fd00:77::1');
    expect(() => address('FD00:77::1', 'route gateway')).toThrow(/is not a canonical IPv4 or IPv6 address/);
    expect(() => address('10.0.0.1 onlink', 'route gateway')).toThrow(UnsafeArgumentError);
    expect(interfaceAddress('10.77.0.2/24', 'a')).toBe('10.77.0.2/24');
    expect(() => interfaceAddress('10.77.0.2', 'interface address')).toThrow(/is not a canonical interface address/);
  });

  test('integers must be whole and in range', () => {
    expect(integer(254, 't', 1, 4294967295)).toBe('254');
    for (const bad of [0, 4294967296, 1.5, NaN, '254', -1]) expect(() => integer(bad, 'route table', 1, 4294967295)).toThrow(/route table .* is not a whole number 1–4294967295/);
  });

  test('batch lines and scripts hold only plain tokens; argv holds no newline', () => {
    expect(batchLine(['route', 'add', '10.0.0.0/24', 'via', 'fd00::1', 'table', '254'])).toBe('route add 10.0.0.0/24 via fd00::1 table 254');
    for (const bad of ['lan0\nlink', 'a b', '#', '"x"', "'x'", 'a\\b', '']) expect(() => batchLine(['route', 'add', bad])).toThrow(UnsafeArgumentError);
    expect(() => checkBatchScript('route add 10.0.0.0/24 dev lan0\n')).not.toThrow();
    expect(() => checkBatchScript('route add 10.0.0.0/24  dev lan0\n')).toThrow(/batch line 1 token/);
    expect(() => checkBatchScript('route add 10.0.0.0/24 dev lan0 # comment\n')).toThrow(/batch line 1 token/);
    expect(() => checkArgv(['link', 'set', 'dev', INJECTION])).toThrow(/argument 4 .* holds a NUL or newline/);
  });

  test('a refused value is the UnsafeCommandArgument failure, never retried', () => {
    const err = classifyError(new UnsafeArgumentError('route device', 'is not an interface name', INJECTION), ErrorDomains.node);
    expect(err).toMatchObject({ type: 'UnsafeCommandArgument', nonRetryable: true });
  });
});

describe('the tables refuse a bad value before running anything', () => {
  const route = (over: Partial<Route>): Route => ({ destination: '10.88.0.0/24', table: 254, metric: 0, gateway: '10.77.0.1', ...over });

  test('routes: a device with a newline stops the whole batch', async () => {
    const ip = recordingIp();
    const table = new RouteTable(ip, 241);
    await expect(table.apply([{ subsystem: 'routes', action: 'add', route: route({ destination: '10.89.0.0/24' }) }, { subsystem: 'routes', action: 'add', route: route({ device: INJECTION }) }])).rejects.toThrow(/route device .* is not an interface name/);
    await expect(table.apply([{ subsystem: 'routes', action: 'add', route: route({ destination: '10.88.0.1/24' }) }])).rejects.toThrow(/route destination .* is not a canonical/);
    await expect(table.apply([{ subsystem: 'routes', action: 'add', route: route({ nexthops: [{ gateway: '10.77.0.1', weight: 300 }] }) }])).rejects.toThrow(/next hop weight/);
    expect(ip.changes).toEqual([]);
    await table.apply([{ subsystem: 'routes', action: 'add', route: route({ device: 'lan0' }) }]);
    expect(ip.changes).toEqual([['-batch', '-', 'route add 10.88.0.0/24 via 10.77.0.1 dev lan0 table 254 metric 0 proto 241\n']]);
  });

  test('links, VLANs and addresses: nothing runs when one interface is bad', async () => {
    const ip = recordingIp();
    const links = new LinkTable(ip);
    await expect(links.syncVlans([{ name: 'lan0.5', vlan: { parent: 'lan0', id: 5 } }, { name: INJECTION, vlan: { parent: 'lan0', id: 6 } }])).rejects.toThrow(/VLAN name .* is not an interface name/);
    await expect(links.syncVlans([{ name: 'lan0.7', vlan: { parent: 'lan0 type bridge', id: 7 } }])).rejects.toThrow(/VLAN parent/);
    expect(ip.changes).toEqual([]);
  });

  test('addresses: a device with a newline is refused', async () => {
    const ip: IpRunner & { changes: string[][] } = {
      ...recordingIp(),
      run(args, stdin) {
        if (args.includes('link')) return Promise.resolve(JSON.stringify([{ ifname: INJECTION, mtu: 1500, flags: ['UP'] }]));
        if (args.includes('address') && args.includes('show')) return Promise.resolve('[]');
        this.changes.push([...args, stdin ?? '']);
        return Promise.resolve('');
      },
    };
    await expect(new LinkTable(ip).syncAddresses([{ name: INJECTION, addresses: ['10.9.0.1/24'] }])).rejects.toThrow(/address device .* is not an interface name/);
    expect(ip.changes).toEqual([]);
  });

  test('rules: a bad IPv6 rule stops the IPv4 batch too', async () => {
    const ip = recordingIp();
    const rules = new RuleTable(ip, 241);
    await expect(
      rules.sync([
        { family: 4, priority: 100, from: '10.1.0.0/16', table: 100 },
        { family: 6, priority: 101, from: 'fd00::/8', iif: INJECTION, table: 100 },
      ]),
    ).rejects.toThrow(/rule iif .* is not an interface name/);
    expect(ip.changes).toEqual([]);
  });

  test('NAT and zones: the nft document is never written with a bad name', async () => {
    const documents: unknown[] = [];
    const nft: NftRunner = {
      netns: undefined,
      run: () => Promise.reject(new NftCommandError(['list'], 1, 'Error: No such file or directory')),
      runJson: (doc) => {
        documents.push(doc);
        return Promise.resolve('');
      },
    };
    const table = new NatTable(nft, 'fos1');
    await expect(table.sync({ sourceNat: [{ source: '10.0.0.0/8', outInterface: '@zone1_lan_if' }], portForwards: [] })).rejects.toThrow(/source NAT outInterface/);
    await expect(table.sync({ sourceNat: [], portForwards: [{ protocol: 'tcp', port: 0, to: '10.0.0.5', toPort: 80 }] })).rejects.toThrow(/port forward port/);
    await expect(table.syncZones([{ name: 'lan', id: 1, interfaces: [INJECTION], prefixes: [] }])).rejects.toThrow(/zone lan interface/);
    await expect(table.syncZones([{ name: 'lan', id: 300, interfaces: [], prefixes: [] }])).rejects.toThrow(/zone id/);
    expect(documents).toEqual([]);
  });

  test('the ip runner itself refuses a newline in argv and a batch with unsafe tokens, before spawning', async () => {
    // `false` would fail if it ran; the refusal comes first, with the check's own message.
    const ip = createIpRunner({ ipBinary: '/bin/false' });
    await expect(ip.run(['link', 'set', 'dev', INJECTION, 'up'])).rejects.toThrow(UnsafeArgumentError);
    await expect(ip.run(['-batch', '-'], 'route add 10.0.0.0/24 dev "lan0"\n')).rejects.toThrow(UnsafeArgumentError);
  });
});
