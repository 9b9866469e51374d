/**
 * Config model v1: the desired network state of one router node.
 *
 * These are the user-facing types and their zod schemas. Parsing canonicalises every
 * address and prefix (see model/ip.ts) and fills kernel defaults, so that a parsed
 * desired state compares equal to the same state read back from the kernel.
 * Pure code: bundled into workflows, no Node built-ins.
 */
import { z } from 'zod';
import { canonicalCidr, canonicalIp, IpParseError, parseCidr, parseIp } from './ip';

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no slash, colon or whitespace. */
export const INTERFACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

/** The kernel's id of the main routing table. */
export const MAIN_TABLE = 254;

/** IPv6 routes added with metric 0 are stored with this one (IP6_RT_PRIO_USER). */
export const IPV6_DEFAULT_METRIC = 1024;

export const interfaceNameSchema = z
  .string()
  .regex(INTERFACE_NAME, 'must be an interface name: 1–15 letters, digits, "_", "-" or "." (starting with a letter or digit)');

/** A prefix, returned in canonical form; host bits set or a bad length is an error that says so. */
export const cidrSchema = z.string().transform((text, ctx) => {
  try {
    return canonicalCidr(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof IpParseError ? err.message : String(err) });
    return z.NEVER;
  }
});

/** An address of either family, returned in canonical form. */
export const ipSchema = z.string().transform((text, ctx) => {
  try {
    return canonicalIp(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof IpParseError ? err.message : String(err) });
    return z.NEVER;
  }
});

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

/** A static route. Identity in the kernel: (family, table, destination, metric). */
export const routeSchema = z
  .object({
    destination: cidrSchema,
    gateway: ipSchema.optional(),
    device: interfaceNameSchema.optional(),
    table: tableSchema.default(MAIN_TABLE),
    metric: u32.optional(),
  })
  .strict()
  .superRefine((route, ctx) => {
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
  .transform((route) => ({ ...route, metric: normaliseMetric(route.destination, route.metric) }));

/** One entry of the IP blocklist (enforced by fos1's eBPF LPM tries). */
export const blocklistEntrySchema = z
  .object({
    cidr: cidrSchema,
    reason: z.string().min(1, 'must say why the range is blocked').max(200),
    /** When the block lifts by itself; ISO 8601 with a timezone. Stored to the second. */
    expiresAt: z.iso
      .datetime({ offset: true, message: 'must be an ISO 8601 date-time with a timezone, e.g. 2026-12-01T00:00:00Z' })
      .transform((t) => new Date(Math.floor(Date.parse(t) / 1000) * 1000).toISOString())
      .optional(),
  })
  .strict();

/** The desired (or observed) network state of one node. */
export const nodeStateSchema = z
  .object({
    routes: z.array(routeSchema).max(10_000).default([]),
    blocklist: z.array(blocklistEntrySchema).max(100_000).default([]),
  })
  .strict()
  .superRefine((state, ctx) => {
    reportDuplicates(state.routes.map(routeKey), ['routes'], 'route (family, table, destination, metric)', ctx);
    reportDuplicates(state.blocklist.map((e) => e.cidr), ['blocklist'], 'blocklist prefix', ctx);
  });

export type Route = z.output<typeof routeSchema>;
export type RouteInput = z.input<typeof routeSchema>;
export type BlocklistEntry = z.output<typeof blocklistEntrySchema>;
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
export interface ObservedNodeState {
  routes: Route[];
  blocklist: ObservedBlocklistEntry[];
}

/** The kernel's identity of a route; two routes with one key cannot coexist. */
export function routeKey(route: Pick<Route, 'destination' | 'table' | 'metric'>): string {
  const family = parseCidr(route.destination).family;
  return `ipv${family} table ${route.table} ${route.destination} metric ${route.metric}`;
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
