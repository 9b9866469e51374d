/**
 * Config model v1: the desired network state of one router node.
 *
 * These are the user-facing types and their zod schemas. Parsing canonicalises every
 * address and prefix (see model/ip.ts) and fills kernel defaults, so that a parsed
 * desired state compares equal to the same state read back from the kernel.
 * Pure code: bundled into workflows, no Node built-ins.
 */
import { z } from 'zod';
import { blocklistRefSchema } from './blocklist-ref';
import { canonicalIp, cidrContains, cidrSchema, ipSchema, parseCidr, parseIp, portSchema } from './ip';

/**
 * Most blocklist entries a change may carry inline (about 0.7 MB of payload, well under
 * Temporal's 2 MB limit); larger lists go by reference.
 */
export const MAX_INLINE_BLOCKLIST = 10_000;

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no slash, colon or whitespace. */
export const INTERFACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

/** The kernel's id of the main routing table. */
export const MAIN_TABLE = 254;

/** IPv6 routes added with metric 0 are stored with this one (IP6_RT_PRIO_USER). */
export const IPV6_DEFAULT_METRIC = 1024;

export const interfaceNameSchema = z
  .string()
  .regex(INTERFACE_NAME, 'must be an interface name: 1–15 letters, digits, "_", "-" or "." (starting with a letter or digit)');

const u32 = z.number().int().min(0).max(4294967295);

/**
 * Routing table: a number 1–4294967295 (0 and 255 "local" are the kernel's), or the
 * names "main" (254) and "default" (253).
 */
export const tableSchema = z
  .union([z.number(), z.enum(['main', 'default'])])
  .transform((t) => (t === 'main' ? MAIN_TABLE : t === 'default' ? 253 : t))
  .pipe(
    u32.min(1, 'must be 1 or more (table 0 is unspecified)').refine((t) => t !== 255, 'table 255 is the kernel\'s "local" table and is not managed by fos1'),
  );

/** An ECMP next hop of a multipath route. */
export const nextHopSchema = z
  .object({
    gateway: ipSchema,
    device: interfaceNameSchema.optional(),
    /** Relative share of flows, 1–256 (the kernel's range); 1 when not given. */
    weight: z.number().int().min(1, 'must be 1–256').max(256, 'must be 1–256').default(1),
  })
  .strict();

/** A static route. Identity in the kernel: (family, table, destination, metric). */
export const routeSchema = z
  .object({
    destination: cidrSchema,
    gateway: ipSchema.optional(),
    device: interfaceNameSchema.optional(),
    /** ECMP: several next hops instead of one gateway/device; flows are spread by weight. */
    nexthops: z.array(nextHopSchema).min(2, 'an ECMP route needs at least 2 next hops').max(32).optional(),
    table: tableSchema.default(MAIN_TABLE),
    metric: u32.optional(),
  })
  .strict()
  .superRefine((route, ctx) => {
    if (route.nexthops !== undefined) {
      if (route.gateway !== undefined || route.device !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['nexthops'], message: 'give either "nexthops" (ECMP) or "gateway"/"device", not both' });
      }
      const destinationFamily = parseCidr(route.destination).family;
      route.nexthops.forEach((hop, i) => {
        const family = parseIp(hop.gateway)?.family;
        if (family !== destinationFamily) {
          ctx.addIssue({ code: 'custom', path: ['nexthops', i, 'gateway'], message: `gateway ${hop.gateway} is IPv${family} but destination ${route.destination} is IPv${destinationFamily}` });
        }
      });
      reportDuplicates(route.nexthops.map((h) => h.gateway), ['nexthops'], 'next hop gateway', ctx);
      return;
    }
    if (route.gateway === undefined && route.device === undefined) {
      ctx.addIssue({ code: 'custom', path: ['gateway'], message: 'a route needs a gateway, a device, or both' });
    }
    if (route.gateway !== undefined) {
      const destinationFamily = parseCidr(route.destination).family;
      const gatewayFamily = parseIp(route.gateway)?.family;
      if (destinationFamily !== gatewayFamily) {
        ctx.addIssue({
          code: 'custom',
          path: ['gateway'],
          message: `gateway ${route.gateway} is IPv${gatewayFamily} but destination ${route.destination} is IPv${destinationFamily}`,
        });
      }
    }
  })
  .transform((route) => ({
    ...route,
    // The kernel lists next hops in the order they were added; fos1 adds them sorted so
    // that desired and read-back routes compare equal whatever order the operator used.
    ...(route.nexthops ? { nexthops: [...route.nexthops].sort((a, b) => compareText(a.gateway, b.gateway)) } : {}),
    metric: normaliseMetric(route.destination, route.metric),
  }));

/** When an entry lifts by itself: ISO 8601 with a timezone, stored to the second (the maps keep unix seconds). */
const expiresAtSchema = z.iso
  .datetime({ offset: true, message: 'must be an ISO 8601 date-time with a timezone, e.g. 2026-12-01T00:00:00Z' })
  .transform((t) => new Date(Math.floor(Date.parse(t) / 1000) * 1000).toISOString());

/** One entry of the IP blocklist (enforced by fos1's eBPF LPM tries). */
export const blocklistEntrySchema = z
  .object({
    cidr: cidrSchema,
    reason: z.string().min(1, 'must say why the range is blocked').max(200),
    /** When the block lifts by itself; ISO 8601 with a timezone. Stored to the second. */
    expiresAt: expiresAtSchema.optional(),
  })
  .strict();

/**
 * An address on an interface: `10.0.0.1/24`, `2001:db8::1/64` (host bits are the point
 * here, unlike a route prefix). Returned canonical; a bare address means /32 or /128.
 */
export const interfaceAddressSchema = z.string().transform((text, ctx) => {
  const canonical = canonicalInterfaceAddress(text);
  if (canonical === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not an interface address (expected e.g. 192.0.2.1/24 or 2001:db8::1/64)` });
    return z.NEVER;
  }
  return canonical;
});

/** Canonical `address/length` of an interface address, or undefined when it is not one. */
export function canonicalInterfaceAddress(text: string): string | undefined {
  const slash = text.indexOf('/');
  const ip = parseIp(slash === -1 ? text : text.slice(0, slash));
  if (!ip) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  const lengthText = slash === -1 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > max) return undefined;
  return `${canonicalIp(text.slice(0, slash === -1 ? undefined : slash))}/${Number(lengthText)}`;
}

/** The kernel's 802.1Q VLAN id range (0 and 4095 are reserved). */
export const vlanSchema = z
  .object({
    parent: interfaceNameSchema,
    id: z.number().int().min(1, 'must be a VLAN id 1–4094').max(4094, 'must be a VLAN id 1–4094'),
  })
  .strict();

/**
 * One interface as fos1 wants it. Fields that are left out are left alone. An interface
 * with `vlan` is an 802.1Q sub-interface fos1 creates (and owns: fos1 removes owned VLANs
 * that are no longer desired); any other interface must exist already (a NIC, a veth, a
 * bridge) and fos1 only sets its MTU, admin state and addresses.
 */
export const interfaceSchema = z
  .object({
    name: interfaceNameSchema,
    vlan: vlanSchema.optional(),
    mtu: z.number().int().min(68, 'must be an MTU of 68 or more (the IPv4 minimum)').max(65535, 'must be an MTU of at most 65535').optional(),
    /** Admin state: true = `ip link set up`. */
    up: z.boolean().optional(),
    /** When given, the complete list of global-scope addresses (both families); link-local IPv6 is the kernel's. */
    addresses: z.array(interfaceAddressSchema).max(1000).optional(),
  })
  .strict()
  .superRefine((iface, ctx) => {
    if (iface.vlan && iface.vlan.parent === iface.name) ctx.addIssue({ code: 'custom', path: ['vlan', 'parent'], message: 'a VLAN cannot be its own parent' });
    if (iface.addresses) reportDuplicates(iface.addresses, ['addresses'], 'address', ctx);
    if (iface.mtu !== undefined && iface.mtu < 1280 && iface.addresses?.some((a) => a.includes(':'))) {
      ctx.addIssue({ code: 'custom', path: ['mtu'], message: 'IPv6 needs an MTU of at least 1280' });
    }
  })
  .transform((iface) => (iface.addresses ? { ...iface, addresses: [...iface.addresses].sort(compareText) } : iface));

/**
 * A policy routing rule (`ip rule`): packets matching every given selector are looked up
 * in `table`. Identity is the whole rule; fos1 marks its rules with its protocol number.
 */
export const ruleSchema = z
  .object({
    /** 1–32765: 0, 32766 and 32767 hold the kernel's own local/main/default rules. */
    priority: z.number().int().min(1, 'must be 1–32765 (0, 32766 and 32767 are the kernel\'s rules)').max(32765, 'must be 1–32765 (0, 32766 and 32767 are the kernel\'s rules)'),
    from: cidrSchema.optional(),
    to: cidrSchema.optional(),
    iif: interfaceNameSchema.optional(),
    oif: interfaceNameSchema.optional(),
    fwmark: u32.optional(),
    /** Mask for fwmark; all ones when not given. */
    fwmask: u32.optional(),
    table: tableSchema,
    /** Needed only when neither `from` nor `to` says which family the rule is for. */
    family: z.union([z.literal(4), z.literal(6)]).optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    const families = [rule.from, rule.to].filter((c): c is string => c !== undefined).map((c) => parseCidr(c).family);
    if (rule.family !== undefined) families.push(rule.family);
    if (families.length === 0) ctx.addIssue({ code: 'custom', path: ['family'], message: 'give "family" (4 or 6) when neither "from" nor "to" is given' });
    if (new Set(families).size > 1) ctx.addIssue({ code: 'custom', path: ['to'], message: '"from", "to" and "family" must all be of one IP family' });
    if (rule.fwmask !== undefined && rule.fwmark === undefined) ctx.addIssue({ code: 'custom', path: ['fwmask'], message: '"fwmask" needs "fwmark"' });
  })
  .transform((rule) => {
    const family = rule.family ?? parseCidr((rule.from ?? rule.to) as string).family;
    const out: PolicyRule = { family, priority: rule.priority, table: rule.table };
    if (rule.from !== undefined) out.from = rule.from;
    if (rule.to !== undefined) out.to = rule.to;
    if (rule.iif !== undefined) out.iif = rule.iif;
    if (rule.oif !== undefined) out.oif = rule.oif;
    if (rule.fwmark !== undefined) {
      out.fwmark = rule.fwmark;
      out.fwmask = rule.fwmask ?? 0xffffffff;
    }
    return out;
  });

/**
 * Source NAT for traffic from `source` leaving through `outInterface`: to the address `to`,
 * or masquerade (the interface's own address) when `to` is not given. IPv4 or IPv6 (NAT66).
 */
export const sourceNatSchema = z
  .object({
    source: cidrSchema,
    outInterface: interfaceNameSchema,
    to: ipSchema.optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.to !== undefined && parseIp(rule.to)?.family !== parseCidr(rule.source).family) {
      ctx.addIssue({ code: 'custom', path: ['to'], message: `"to" ${rule.to} and "source" ${rule.source} are of different IP families` });
    }
  });

/** Destination NAT (a port forward): `protocol`/`port` arriving (on `inInterface`, for `destination`) go to `to`:`toPort`. */
export const portForwardSchema = z
  .object({
    protocol: z.enum(['tcp', 'udp']),
    port: portSchema,
    inInterface: interfaceNameSchema.optional(),
    /** The address the client connects to; any address of the router when not given. */
    destination: ipSchema.optional(),
    to: ipSchema,
    /** The server's port; the same as `port` when not given. */
    toPort: portSchema.optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.destination !== undefined && parseIp(rule.destination)?.family !== parseIp(rule.to)?.family) {
      ctx.addIssue({ code: 'custom', path: ['to'], message: `"to" ${rule.to} and "destination" ${rule.destination} are of different IP families` });
    }
  })
  .transform((rule) => ({ ...rule, toPort: rule.toPort ?? rule.port }));

/** NAT and NAT66, kept in an nftables table fos1 owns. Rules apply in list order (first match wins). */
export const natSchema = z
  .object({
    sourceNat: z.array(sourceNatSchema).max(10_000).default([]),
    portForwards: z.array(portForwardSchema).max(10_000).default([]),
  })
  .strict();

/** Zone names: they become parts of nftables set names, so letters, digits and "_" only. */
export const ZONE_NAME = /^[a-z][a-z0-9_]{0,23}$/;

/** The destination of a zone rule that means the router itself (zone 255 in the eBPF maps). */
export const HOST_ZONE = 'host';

/** Zone policy verdicts: `log` allows and reports the packet on the drop-event ring. */
export const zoneActionSchema = z.enum(['allow', 'deny', 'log']);

const ZONE_RULE_PROTOCOLS = ['any', 'tcp', 'udp', 'icmp', 'icmpv6'] as const;

/**
 * One zone-to-zone rule: traffic from the zone it belongs to, towards zone `to` (or the
 * router itself, `host`), optionally narrowed to a protocol and a destination port.
 * Enforced by fos1's eBPF programs (most specific first: port, protocol, then the
 * zone's default); replies of a connection a rule allowed pass by connection tracking.
 */
export const zoneRuleSchema = z
  .object({
    to: z.string().regex(ZONE_NAME, `must be a zone name or "${HOST_ZONE}" (the router itself)`),
    protocol: z.enum(ZONE_RULE_PROTOCOLS).default('any'),
    /** Destination port (TCP/UDP only); any port when not given. */
    port: portSchema.optional(),
    action: zoneActionSchema,
    /** Counted under this id in the datapath's rule counters (1–4095); uncounted when not given. */
    ruleId: z.number().int().min(1, 'must be a rule id 1–4095').max(4095, 'must be a rule id 1–4095').optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.port !== undefined && rule.protocol !== 'tcp' && rule.protocol !== 'udp') {
      ctx.addIssue({ code: 'custom', path: ['port'], message: `a port needs protocol "tcp" or "udp" (got "${rule.protocol}")` });
    }
  });

/** What a zone may send: rules towards other zones, then the default for the rest. */
export const zonePolicySchema = z
  .object({
    /** The verdict for traffic from this zone that no rule matches (`allow` when not given). */
    default: zoneActionSchema.default('allow'),
    /** Counted under this id when the default decides (1–4095); uncounted when not given. */
    defaultRuleId: z.number().int().min(1, 'must be a rule id 1–4095').max(4095, 'must be a rule id 1–4095').optional(),
    rules: z.array(zoneRuleSchema).max(4096).default([]),
  })
  .strict()
  .superRefine((policy, ctx) => {
    reportDuplicates(policy.rules.map((r) => `${r.to} ${r.protocol} ${r.port ?? 'any port'}`), ['rules'], 'rule (to, protocol, port)', ctx);
  });

/**
 * A zone: a named set of interfaces and prefixes (lan, wan, dmz, …) that firewall rules
 * and the eBPF zone map refer to. `id` is the zone's number in the eBPF zone map
 * (1–254: 0 means "not zoned" and 255 is the router itself). An interface belongs to at
 * most one zone.
 */
export const zoneSchema = z
  .object({
    name: z.string().regex(ZONE_NAME, 'must be a zone name: a lowercase letter, then up to 23 lowercase letters, digits or "_"'),
    id: z.number().int().min(1, 'must be a zone id 1–254 (0 is "not zoned", 255 the router itself)').max(254, 'must be a zone id 1–254 (0 is "not zoned", 255 the router itself)'),
    interfaces: z.array(interfaceNameSchema).max(4096).default([]),
    prefixes: z.array(cidrSchema).max(65_536).default([]),
    /**
     * Zone-to-zone policy for traffic entering through the zone's interfaces, enforced by
     * fos1's eBPF programs (the zone maps); none: everything from the zone is allowed.
     */
    policy: zonePolicySchema.optional(),
  })
  .strict()
  .superRefine((zone, ctx) => {
    if (zone.name === HOST_ZONE) ctx.addIssue({ code: 'custom', path: ['name'], message: `"${HOST_ZONE}" is reserved: it names the router itself in zone rules` });
    reportDuplicates(zone.interfaces, ['interfaces'], 'interface', ctx);
    // The kernel's interval sets refuse overlapping elements, and an overlap is a mistake anyway.
    const parsed = zone.prefixes.map((p) => parseCidr(p));
    parsed.forEach((inner, i) =>
      parsed.forEach((outer, j) => {
        if (i !== j && cidrContains(outer, inner) && (i > j || !cidrContains(inner, outer))) {
          ctx.addIssue({ code: 'custom', path: ['prefixes', i], message: `${zone.prefixes[i]} overlaps ${zone.prefixes[j]} (index ${j}) of the same zone` });
        }
      }),
    );
  })
  .transform((zone) => ({ ...zone, interfaces: [...zone.interfaces].sort(compareText), prefixes: [...zone.prefixes].sort(compareText) }));

/**
 * A per-source packet rate limit, enforced by fos1's eBPF firewall at TC ingress (GCRA:
 * `pps` sustained, `burst` back to back). Single hosts only: a limit is about one source.
 */
export const rateLimitSchema = z
  .object({
    cidr: cidrSchema.refine((c) => c.endsWith('/32') || c.endsWith('/128'), 'must be a single host (/32 or /128): a rate limit applies to one source'),
    pps: z.number().int('must be a whole number of packets per second').min(1, 'must be at least 1 packet per second').max(100_000_000),
    /** Packets that may arrive back to back; one second's worth (`pps`) when not given. */
    burst: z.number().int().min(1, 'must be at least 1').max(100_000_000).optional(),
    reason: z.string().min(1, 'must say why the source is limited').max(200),
    expiresAt: expiresAtSchema.optional(),
  })
  .strict()
  .transform((r) => ({ ...r, burst: r.burst ?? r.pps }));

/** The desired (or observed) network state of one node. */
export const nodeStateSchema = z
  .object({
    interfaces: z.array(interfaceSchema).max(4096).default([]),
    routes: z.array(routeSchema).max(10_000).default([]),
    rules: z.array(ruleSchema).max(10_000).default([]),
    zones: z.array(zoneSchema).max(254).default([]),
    nat: natSchema.default({ sourceNat: [], portForwards: [] }),
    blocklist: z
      .array(blocklistEntrySchema)
      .max(MAX_INLINE_BLOCKLIST, `must have at most ${MAX_INLINE_BLOCKLIST} entries inline; give larger blocklists by reference (blocklistRef)`)
      .default([]),
    /**
     * The whole blocklist by reference (a file on the node, or a content hash in the
     * node's blocklist store) instead of inline: for lists too large for a workflow payload.
     */
    blocklistRef: blocklistRefSchema.optional(),
    rateLimits: z.array(rateLimitSchema).max(MAX_INLINE_BLOCKLIST).default([]),
  })
  .strict()
  .superRefine((state, ctx) => {
    reportDuplicates(state.interfaces.map((i) => i.name), ['interfaces'], 'interface name', ctx);
    reportDuplicates(
      state.interfaces.flatMap((i) => (i.vlan ? [`${i.vlan.parent}.${i.vlan.id}`] : [])),
      ['interfaces'],
      'VLAN (parent, id)',
      ctx,
    );
    reportDuplicates(state.routes.map(routeKey), ['routes'], 'route (family, table, destination, metric)', ctx);
    reportDuplicates(state.rules.map(ruleKey), ['rules'], 'rule', ctx);
    reportDuplicates(state.zones.map((z) => z.name), ['zones'], 'zone name', ctx);
    reportDuplicates(state.zones.map((z) => String(z.id)), ['zones'], 'zone id', ctx);
    const zoneOf = new Map<string, string>();
    state.zones.forEach((zone, i) =>
      zone.interfaces.forEach((name) => {
        const other = zoneOf.get(name);
        if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['zones', i, 'interfaces'], message: `interface ${name} is already in zone ${other}; an interface belongs to at most one zone` });
        else zoneOf.set(name, zone.name);
      }),
    );
    const zoneNames = new Set(state.zones.map((z) => z.name));
    state.zones.forEach((zone, i) =>
      zone.policy?.rules.forEach((rule, j) => {
        if (rule.to !== HOST_ZONE && !zoneNames.has(rule.to)) {
          ctx.addIssue({ code: 'custom', path: ['zones', i, 'policy', 'rules', j, 'to'], message: `zone "${rule.to}" is not a zone of this state (known: ${[...zoneNames].join(', ') || 'none'}, or "${HOST_ZONE}")` });
        }
      }),
    );
    reportDuplicates(state.nat.portForwards.map(portForwardKey), ['nat', 'portForwards'], 'port forward', ctx);
    reportDuplicates(state.blocklist.map((e) => e.cidr), ['blocklist'], 'blocklist prefix', ctx);
    reportDuplicates(state.rateLimits.map((r) => r.cidr), ['rateLimits'], 'rate-limited source', ctx);
    if (state.blocklistRef && state.blocklist.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['blocklistRef'], message: 'give the blocklist inline (blocklist) or by reference (blocklistRef), not both' });
    }
  });

export type Route = z.output<typeof routeSchema>;
export type NextHop = z.output<typeof nextHopSchema>;
export type InterfaceConfig = z.output<typeof interfaceSchema>;
export type SourceNat = z.output<typeof sourceNatSchema>;
export type PortForward = z.output<typeof portForwardSchema>;
export type NatConfig = z.output<typeof natSchema>;
export type Zone = z.output<typeof zoneSchema>;
export type ZoneRule = z.output<typeof zoneRuleSchema>;
export type ZonePolicy = z.output<typeof zonePolicySchema>;
export type ZoneInput = z.input<typeof zoneSchema>;

/** A policy routing rule, normalised: the family is always known, fwmask is set with fwmark. */
export interface PolicyRule {
  family: 4 | 6;
  priority: number;
  from?: string;
  to?: string;
  iif?: string;
  oif?: string;
  fwmark?: number;
  fwmask?: number;
  table: number;
}

/**
 * An interface as read from the node: every field known. `vlan` is set only on 802.1Q
 * sub-interfaces fos1 created (marked with {@link FOS1_LINK_ALIAS}).
 */
export interface ObservedInterface {
  name: string;
  vlan?: { parent: string; id: number };
  mtu: number;
  up: boolean;
  /** Global-scope addresses, canonical, sorted. */
  addresses: string[];
}

/** The ifalias fos1 gives the links it creates: how it tells its own VLANs from foreign ones. */
export const FOS1_LINK_ALIAS = 'fos1:owned';
export type RouteInput = z.input<typeof routeSchema>;
export type BlocklistEntry = z.output<typeof blocklistEntrySchema>;
export type RateLimit = z.output<typeof rateLimitSchema>;
export type NodeState = z.output<typeof nodeStateSchema>;
export type NodeStateInput = z.input<typeof nodeStateSchema>;

/**
 * State as read from a node. The kernel keeps no reason text for a blocklist entry
 * (the reason lives in the change request and its audit trail), so it is optional here.
 */
export interface ObservedBlocklistEntry {
  cidr: string;
  reason?: string;
  expiresAt?: string;
}
/** The network part of a node's observed state: everything but the blocklist, which stays on the node. */
export type ObservedNetworkState = Omit<ObservedNodeState, 'blocklist'>;

/** A rate limit as read from a node (the reason lives in the change request). */
export interface ObservedRateLimit {
  cidr: string;
  pps: number;
  burst: number;
  reason?: string;
  expiresAt?: string;
}

export interface ObservedNodeState {
  /** Every interface of the node but loopback (fos1 changes only those a change names, and its own VLANs). */
  interfaces: ObservedInterface[];
  routes: Route[];
  rules: PolicyRule[];
  zones: Zone[];
  nat: NatConfig;
  rateLimits: ObservedRateLimit[];
  blocklist: ObservedBlocklistEntry[];
}

/** The kernel's identity of a route; two routes with one key cannot coexist. */
export function routeKey(route: Pick<Route, 'destination' | 'table' | 'metric'>): string {
  const family = parseCidr(route.destination).family;
  return `ipv${family} table ${route.table} ${route.destination} metric ${route.metric}`;
}

/** Identity of a policy rule: all of it (the kernel refuses an identical second rule). */
export function ruleKey(rule: PolicyRule): string {
  const parts = [`ipv${rule.family}`, `priority ${rule.priority}`];
  if (rule.from) parts.push(`from ${rule.from}`);
  if (rule.to) parts.push(`to ${rule.to}`);
  if (rule.iif) parts.push(`iif ${rule.iif}`);
  if (rule.oif) parts.push(`oif ${rule.oif}`);
  if (rule.fwmark !== undefined) parts.push(`fwmark 0x${rule.fwmark.toString(16)}/0x${(rule.fwmask ?? 0xffffffff).toString(16)}`);
  parts.push(`table ${rule.table}`);
  return parts.join(' ');
}

/** Identity of a port forward: what arrives (two forwards of one key could never both match). */
export function portForwardKey(rule: Pick<PortForward, 'protocol' | 'port' | 'inInterface' | 'destination' | 'to'>): string {
  const family = parseIp(rule.destination ?? rule.to)?.family;
  return `ipv${family} ${rule.protocol}/${rule.port} in ${rule.inInterface ?? 'any'} to ${rule.destination ?? 'any'}`;
}

/** Applies the kernel's metric defaulting so desired and observed routes compare equal. */
export function normaliseMetric(destination: string, metric: number | undefined): number {
  const family = parseCidr(destination).family;
  if (family === 6 && (metric === undefined || metric === 0)) return IPV6_DEFAULT_METRIC;
  return metric ?? 0;
}

function reportDuplicates(keys: string[], path: (string | number)[], what: string, ctx: z.RefinementCtx): void {
  const firstIndex = new Map<string, number>();
  keys.forEach((key, index) => {
    const first = firstIndex.get(key);
    if (first === undefined) {
      firstIndex.set(key, index);
      return;
    }
    ctx.addIssue({ code: 'custom', path: [...path, index], message: `duplicate ${what} "${key}" (first at index ${first})` });
  });
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
