/**
 * Planning: observed state + desired state → ordered operations, each with its inverse.
 *
 * The same functions serve the workflow (dry-run diffs, audit, verification) and the
 * activities (which re-plan against live kernel state right before applying, so a
 * retried or partially applied step converges instead of failing on "File exists").
 * Pure code: bundled into workflows.
 */
import type { NodePatch } from './change-request';
import type { BlocklistEntry, NodeState, ObservedBlocklistEntry, ObservedNodeState, Route } from './node-state';
import { routeKey } from './node-state';

/** A route operation. `inverse` undoes it exactly. */
export type RouteOperation =
  | { subsystem: 'routes'; action: 'add'; route: Route }
  | { subsystem: 'routes'; action: 'delete'; route: Route }
  | { subsystem: 'routes'; action: 'replace'; route: Route; previous: Route };

/** A blocklist operation. */
export type BlocklistOperation =
  | { subsystem: 'blocklist'; action: 'add'; entry: ObservedBlocklistEntry }
  | { subsystem: 'blocklist'; action: 'delete'; entry: ObservedBlocklistEntry }
  | { subsystem: 'blocklist'; action: 'replace'; entry: ObservedBlocklistEntry; previous: ObservedBlocklistEntry };

export type Operation = RouteOperation | BlocklistOperation;

/** The plan for one node: operations in apply order. */
export interface NodePlan {
  routes: RouteOperation[];
  blocklist: BlocklistOperation[];
}

/** Returns the operation that undoes `op`. */
export function inverseOf<T extends Operation>(op: T): T {
  switch (op.action) {
    case 'add':
      return { ...op, action: 'delete' };
    case 'delete':
      return { ...op, action: 'add' };
    case 'replace':
      return op.subsystem === 'routes'
        ? ({ ...op, route: op.previous, previous: op.route } as T)
        : ({ ...op, entry: op.previous, previous: op.entry } as T);
  }
}

/**
 * Resolves what a node should look like: a full desired state as given, or a patch
 * applied on top of the observed state (the snapshot). Observed blocklist entries keep
 * no reason text; they are carried over as "(kept)".
 */
export function resolveDesired(observed: ObservedNodeState, change: { desired?: NodeState; patch?: NodePatch }): NodeState {
  if (change.desired) return change.desired;
  const patch = change.patch ?? { routes: { upsert: [], remove: [] }, blocklist: { upsert: [], remove: [] } };

  const routes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  for (const ref of patch.routes.remove) routes.delete(routeKey(ref));
  for (const route of patch.routes.upsert) routes.set(routeKey(route), route);

  const blocklist = new Map<string, BlocklistEntry>(
    observed.blocklist.map((e) => [e.cidr, { cidr: e.cidr, reason: e.reason ?? '(kept)', ...(e.expiresAt ? { expiresAt: e.expiresAt } : {}) }]),
  );
  for (const cidr of patch.blocklist.remove) blocklist.delete(cidr);
  for (const entry of patch.blocklist.upsert) blocklist.set(entry.cidr, entry);

  return { routes: [...routes.values()], blocklist: [...blocklist.values()] };
}

/**
 * Route operations turning `observed` into `desired`. Order is make-before-break:
 * adds and replaces first, deletes last, so traffic to a prefix that moves between
 * tables or gateways always has a route.
 */
export function planRoutes(observed: Route[], desired: Route[]): RouteOperation[] {
  const current = new Map(observed.map((r) => [routeKey(r), r]));
  const wanted = new Map(desired.map((r) => [routeKey(r), r]));
  const ops: RouteOperation[] = [];
  for (const [key, route] of sorted(wanted)) {
    const have = current.get(key);
    if (!have) ops.push({ subsystem: 'routes', action: 'add', route });
    else if (!routeMatches(have, route)) ops.push({ subsystem: 'routes', action: 'replace', route, previous: have });
  }
  for (const [key, route] of sorted(current)) {
    if (!wanted.has(key)) ops.push({ subsystem: 'routes', action: 'delete', route });
  }
  return ops;
}

/**
 * Blocklist operations turning `observed` into `desired`. Adds first, deletes last:
 * when a block is narrowed or widened there is never a moment with neither in place.
 */
export function planBlocklist(observed: ObservedBlocklistEntry[], desired: ObservedBlocklistEntry[]): BlocklistOperation[] {
  const current = new Map(observed.map((e) => [e.cidr, e]));
  const wanted = new Map(desired.map((e) => [e.cidr, e]));
  const ops: BlocklistOperation[] = [];
  for (const [cidr, entry] of sorted(wanted)) {
    const have = current.get(cidr);
    if (!have) ops.push({ subsystem: 'blocklist', action: 'add', entry });
    else if (have.expiresAt !== entry.expiresAt) ops.push({ subsystem: 'blocklist', action: 'replace', entry, previous: have });
  }
  for (const [cidr, entry] of sorted(current)) {
    if (!wanted.has(cidr)) ops.push({ subsystem: 'blocklist', action: 'delete', entry });
  }
  return ops;
}

/** The full plan for one node. */
export function planNodeChange(observed: ObservedNodeState, desired: ObservedNodeState): NodePlan {
  return { routes: planRoutes(observed.routes, desired.routes), blocklist: planBlocklist(observed.blocklist, desired.blocklist) };
}

/** Number of operations in a plan. */
export function planSize(plan: NodePlan): number {
  return plan.routes.length + plan.blocklist.length;
}

/**
 * Differences between what was read back and what was expected, as readable lines;
 * empty when they match. Used to verify an apply and, against the snapshot, a rollback.
 */
export function stateDifferences(actual: ObservedNodeState, expected: ObservedNodeState): string[] {
  const plan = planNodeChange(actual, expected);
  return renderPlan(plan).map((line) => `missing change: ${line}`);
}

/** Renders a plan as a diff, one line an operation: `+ add`, `- delete`, `~ replace`. */
export function renderPlan(plan: NodePlan): string[] {
  return [...plan.routes, ...plan.blocklist].map(renderOperation);
}

/** One operation as a diff line. */
export function renderOperation(op: Operation): string {
  if (op.subsystem === 'routes') {
    switch (op.action) {
      case 'add':
        return `+ route ${describeRoute(op.route)}`;
      case 'delete':
        return `- route ${describeRoute(op.route)}`;
      case 'replace':
        return `~ route ${describeRoute(op.previous)} => ${describeRoute(op.route)}`;
    }
  }
  switch (op.action) {
    case 'add':
      return `+ block ${describeEntry(op.entry)}`;
    case 'delete':
      return `- block ${describeEntry(op.entry)}`;
    case 'replace':
      return `~ block ${describeEntry(op.previous)} => ${describeEntry(op.entry)}`;
  }
}

/** A route in `ip route` words. */
export function describeRoute(route: Route): string {
  const parts = [route.destination];
  if (route.gateway) parts.push(`via ${route.gateway}`);
  if (route.device) parts.push(`dev ${route.device}`);
  parts.push(`table ${route.table}`, `metric ${route.metric}`);
  return parts.join(' ');
}

function describeEntry(entry: ObservedBlocklistEntry): string {
  return entry.expiresAt ? `${entry.cidr} until ${entry.expiresAt}` : `${entry.cidr} (no expiry)`;
}

/**
 * True when the observed route `have` satisfies the desired `want`. A desired route
 * without a device (or gateway) leaves the choice to the kernel, so only what the
 * operator named is compared.
 */
export function routeMatches(have: Route, want: Route): boolean {
  if (want.gateway !== undefined && have.gateway !== want.gateway) return false;
  if (want.gateway === undefined && have.gateway !== undefined) return false;
  if (want.device !== undefined && have.device !== want.device) return false;
  return true;
}

function sorted<V>(map: Map<string, V>): [string, V][] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
