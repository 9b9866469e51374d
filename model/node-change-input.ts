/**
 * What one node's workflow takes (workflows/node-change.ts): a node patch or a full state,
 * and the names it is given. Apart from model/change-request.ts, which re-exports all of it,
 * so the node workflow's module graph stays small: a worker evaluates a workflow's modules for
 * every workflow it starts, and the change request's schemas (strategy, gates, cluster policy,
 * firewall) are most of that cost (bench/rollout/README.md). Imports only node-state, ip,
 * blocklist-ref and issue-path.
 */
import { z } from 'zod';
import { blocklistRefSchema } from './blocklist-ref';
import { issuesOf, type ValidationIssue } from './issue-path';
import { cidrSchema } from './ip';
import {
  blocklistEntrySchema,
  MAX_INLINE_BLOCKLIST,
  interfaceNameSchema,
  interfaceSchema,
  natSchema,
  rateLimitSchema,
  nodeStateSchema,
  routeSchema,
  ruleSchema,
  tableSchema,
  zoneSchema,
  normaliseMetric,
  ZONE_NAME,
} from './node-state';

/** DNS-1123 label: the form of Kubernetes node names, and so of fos1 target names. */
export const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Identifies a route to remove in a patch: destination, and table/metric when not the defaults. */
export const routeRefSchema = z
  .object({
    destination: cidrSchema,
    table: tableSchema.default(254),
    metric: z.number().int().min(0).max(4294967295).optional(),
  })
  .strict()
  .transform((ref) => ({ ...ref, metric: normaliseMetric(ref.destination, ref.metric) }));

/** Interfaces joining or leaving one zone the node has (by name). */
export const zoneMembershipSchema = z
  .object({
    zone: z.string().regex(ZONE_NAME, 'must be a zone name: a lowercase letter, then up to 23 lowercase letters, digits or "_"'),
    interfaces: z.array(interfaceNameSchema).min(1, 'must name at least one interface').max(1024),
  })
  .strict();

/**
 * Zone membership relative to the node's zones: `leave` takes interfaces out of a zone, then
 * `join` puts interfaces into a zone the node (or this patch's `zones`) has, keeping its id,
 * other members, prefixes and policy. An interface may be named once per list; naming it in
 * both moves it.
 */
export const zoneMembersPatchSchema = z
  .object({
    join: z.array(zoneMembershipSchema).max(254).default([]),
    leave: z.array(zoneMembershipSchema).max(254).default([]),
  })
  .strict()
  .superRefine((part, ctx) => {
    for (const list of ['join', 'leave'] as const) {
      const seen = new Map<string, number>();
      part[list].forEach((entry, i) =>
        entry.interfaces.forEach((name, j) => {
          const first = seen.get(name);
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: [list, i, 'interfaces', j], message: `interface ${name} is named twice (also in ${list}[${first}]); an interface belongs to at most one zone` });
          else seen.set(name, i);
        }),
      );
    }
  });

/** Changes relative to what the node has now, resolved against the snapshot at plan time. */
export const nodePatchSchema = z
  .object({
    /** Upsert replaces what fos1 manages of the named interface; remove stops managing it (and deletes a fos1 VLAN). */
    interfaces: z
      .object({
        upsert: z.array(interfaceSchema).default([]),
        remove: z.array(interfaceNameSchema).default([]),
      })
      .strict()
      .default({ upsert: [], remove: [] }),
    routes: z
      .object({
        upsert: z.array(routeSchema).default([]),
        remove: z.array(routeRefSchema).default([]),
      })
      .strict()
      .default({ upsert: [], remove: [] }),
    rules: z
      .object({
        upsert: z.array(ruleSchema).default([]),
        remove: z.array(ruleSchema).default([]),
      })
      .strict()
      .default({ upsert: [], remove: [] }),
    /** Upsert replaces a zone by name; remove deletes it. */
    zones: z
      .object({
        upsert: z.array(zoneSchema).default([]),
        remove: z.array(z.string()).default([]),
      })
      .strict()
      .default({ upsert: [], remove: [] }),
    /** Interfaces into or out of zones the node has, without resending the zone (applied after `zones`). */
    zoneMembers: zoneMembersPatchSchema.default({ join: [], leave: [] }),
    /** NAT rules are ordered (first match wins): a patch replaces the whole NAT config, or leaves it alone. */
    nat: natSchema.optional(),
    /** Upsert replaces a source's rate limit; remove lifts it. */
    rateLimits: z
      .object({
        upsert: z.array(rateLimitSchema).max(MAX_INLINE_BLOCKLIST).default([]),
        remove: z.array(cidrSchema).max(MAX_INLINE_BLOCKLIST).default([]),
      })
      .strict()
      .default({ upsert: [], remove: [] }),
    blocklist: z
      .object({
        upsert: z
          .array(blocklistEntrySchema)
          .max(MAX_INLINE_BLOCKLIST, `must have at most ${MAX_INLINE_BLOCKLIST} entries; replace large blocklists by reference (patch.blocklist.replaceRef)`)
          .default([]),
        remove: z
          .array(cidrSchema)
          .max(MAX_INLINE_BLOCKLIST, `must have at most ${MAX_INLINE_BLOCKLIST} entries; replace large blocklists by reference (patch.blocklist.replaceRef)`)
          .default([]),
        /** Replace the whole blocklist with the list a reference points at, leaving everything else alone. */
        replaceRef: blocklistRefSchema.optional(),
      })
      .strict()
      .superRefine((part, ctx) => {
        if (part.replaceRef && part.upsert.length + part.remove.length > 0) {
          ctx.addIssue({ code: 'custom', path: ['replaceRef'], message: 'replaces the whole blocklist: give it alone, without upsert or remove' });
        }
      })
      .default({ upsert: [], remove: [] }),
  })
  .strict();

export const changeIdSchema = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be 1–63 lowercase letters, digits or "-" (it becomes part of workflow ids)');
export const authorSchema = z.string().min(1, 'must name who asks for the change').max(100);
export const nodeNameSchema = z.string().regex(NODE_NAME, 'must be a node name (DNS-1123 label: lowercase letters, digits, "-")');

/**
 * The input of one node's workflow (workflows/node-change.ts): the parent builds it from a
 * validated change request, but anyone who can start a workflow on the node's task queue
 * can hand the node workflow anything, so the node workflow parses it again with the same
 * schemas. Parsing is idempotent (a parsed state parses to itself), so what the parent
 * sends passes unchanged. Expiry times are not re-checked against the clock: an entry may
 * expire while the change waits for the node's lock, and an expired entry only lifts.
 */
export const nodeChangeInputSchema = z
  .object({
    changeId: changeIdSchema,
    author: authorSchema,
    node: nodeNameSchema,
    desired: nodeStateSchema.optional(),
    patch: nodePatchSchema.optional(),
    dryRun: z.boolean(),
    hold: z.boolean().optional(),
  })
  .strict()
  .superRefine((input, ctx) => {
    if ((input.desired === undefined) === (input.patch === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['desired'], message: 'give exactly one of "desired" (full state) or "patch"' });
    }
  });

export type NodeChangeInputParsed = z.output<typeof nodeChangeInputSchema>;

/** Parses a node workflow's input; the issues name each field and the rule it breaks. */
export function validateNodeChangeInput(input: unknown): { ok: true; input: NodeChangeInputParsed } | { ok: false; issues: ValidationIssue[] } {
  const parsed = nodeChangeInputSchema.safeParse(input);
  if (parsed.success) return { ok: true, input: parsed.data };
  return { ok: false, issues: issuesOf(parsed.error) };
}

export type NodePatch = z.output<typeof nodePatchSchema>;
