/**
 * The one address, prefix and port check (model/ip.ts) and the inputs that use it: node
 * state, gates and firewall rules refuse a bad value with the same rule, naming the field.
 */
import { cidrSchema, ipSchema, portSchema } from '../../model/ip';
import { parseGateSpec } from '../../model/gates';
import { validateFirewallRule } from '../../model/firewall';
import { nodeStateSchema } from '../../model/node-state';
import { formatPath } from '../../model/issue-path';

function messages(result: { success: boolean; error?: { issues: { message: string }[] } }): string[] {
  return result.success ? [] : (result.error?.issues.map((i) => i.message) ?? []);
}

describe('ipSchema, cidrSchema, portSchema', () => {
  it('return addresses and prefixes in canonical form', () => {
    expect(ipSchema.parse('2001:DB8:0::1')).toBe('2001:db8::1');
    expect(ipSchema.parse('192.0.2.1')).toBe('192.0.2.1');
    expect(cidrSchema.parse('2001:DB8::/32')).toBe('2001:db8::/32');
    expect(cidrSchema.parse('10.0.0.1')).toBe('10.0.0.1/32');
  });

  it.each([
    ['a name', 'gateway.example', '"gateway.example" is not an IPv4 or IPv6 address'],
    ['an octet above 255', '10.0.0.256', 'is not an IPv4 or IPv6 address'],
    ['an IPv6 zone id', 'fe80::1%eth0', 'is not an IPv4 or IPv6 address'],
  ])('ipSchema refuses %s, saying why', (_what, text, message) => {
    expect(messages(ipSchema.safeParse(text)).join()).toContain(message);
  });

  it.each([
    ['host bits', '10.0.0.1/8', 'has host bits set; did you mean 10.0.0.0/8?'],
    ['a prefix length too long', '10.0.0.0/33', 'has an invalid prefix length (0–32 for IPv4)'],
    ['no address', 'x/8', 'is not an IPv4 or IPv6 prefix'],
  ])('cidrSchema refuses %s, saying why', (_what, text, message) => {
    expect(messages(cidrSchema.safeParse(text)).join()).toContain(message);
  });

  it.each([
    [0, 'must be a port 1–65535'],
    [65536, 'must be a port 1–65535'],
    [80.5, 'must be a whole number'],
  ])('portSchema refuses %p: %s', (port, message) => {
    expect(messages(portSchema.safeParse(port))).toEqual([message]);
  });

  it('portSchema takes 1 and 65535', () => {
    expect(portSchema.parse(1)).toBe(1);
    expect(portSchema.parse(65535)).toBe(65535);
  });
});

describe('the inputs that use them name the field with the same rule', () => {
  const gateIssue = (input: unknown, field: string) => {
    const parsed = parseGateSpec(input);
    return parsed.ok ? undefined : parsed.issues.find((i) => i.field === field)?.message;
  };

  it('a reachability gate: port and address', () => {
    expect(gateIssue({ kind: 'reachability', targets: [{ protocol: 'tcp', address: '10.0.0.1', port: 0 }] }, 'targets[0].port')).toBe('must be a port 1–65535');
    expect(gateIssue({ kind: 'reachability', targets: [{ protocol: 'tcp', address: '10.0.0.1', port: 22.5 }] }, 'targets[0].port')).toBe('must be a whole number');
    expect(gateIssue({ kind: 'reachability', targets: [{ protocol: 'icmp', address: '10.0.0.300' }] }, 'targets[0].address')).toBe('"10.0.0.300" is not an IPv4 or IPv6 address');
  });

  it('a routes gate: gateway and neighbour addresses', () => {
    expect(gateIssue({ kind: 'routes', routes: [{ destination: 'default', gateway: 'router' }] }, 'routes[0].gateway')).toBe('"router" is not an IPv4 or IPv6 address');
    expect(gateIssue({ kind: 'routes', neighbours: ['fe80::1%lan0'] }, 'neighbours[0]')).toBe('"fe80::1%lan0" is not an IPv4 or IPv6 address');
  });

  it('a zone rule of the node state: port', () => {
    const parsed = nodeStateSchema.safeParse({ zones: [{ name: 'lan', id: 1, policy: { rules: [{ to: 'host', protocol: 'tcp', port: 70000, action: 'allow' }] } }] });
    expect(parsed.success).toBe(false);
    const issue = parsed.error?.issues.find((i) => i.message === 'must be a port 1–65535');
    expect(issue && formatPath(issue.path)).toBe('zones[0].policy.rules[0].port');
  });

  it('a firewall rule: the end of a port range', () => {
    const r = validateFirewallRule({ name: 'x', zone: 'web', direction: 'egress', ports: [{ port: 10, endPort: 70000 }] });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues).toContainEqual(expect.objectContaining({ field: 'ports[0].endPort', message: expect.stringContaining('must be a port 1–65535') }));
  });
});
