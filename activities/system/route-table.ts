/**
 * The route subsystem: read, plan, apply and restore the routes fos1 owns on a node.
 *
 * Ownership is the route's protocol number (`proto 241` by default): fos1 reads and
 * deletes only routes carrying it, and adds with `route add` (never `replace`) so a
 * foreign route with the same key is reported, not taken over. ECMP routes (several
 * `nexthop`s) are one route to the kernel and to fos1.
 */
import type { NextHop, Route } from '../../model/node-state';
import { MAIN_TABLE, normaliseMetric } from '../../model/node-state';
import { canonicalCidr, canonicalIp } from '../../model/ip';
import type { RouteOperation } from '../../model/plan';
import { planRoutes, renderOperation } from '../../model/plan';
import { address, batchLine, integer, interfaceName, oneOf, prefix } from './command-args';
import { IpCommandError, type IpRunner } from './ip-runner';

/** Default route protocol marking fos1's routes (unassigned in /etc/iproute2/rt_protos). */
export const DEFAULT_ROUTE_PROTOCOL = 241;

/** A route operation the kernel refused; `operation` names it in diff form. */
export class RouteApplyError extends Error {
  override readonly name = 'RouteApplyError';
  constructor(
    readonly operation: string | undefined,
    readonly kernelMessage: string,
  ) {
    super(operation ? `the kernel refused "${operation}": ${kernelMessage}` : `route update failed: ${kernelMessage}`);
  }
}

interface IpJsonRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  table?: string;
  metric?: number;
  nexthops?: { gateway?: string; dev?: string; weight?: number }[];
}

const TABLE_NAMES: Record<string, number> = { main: MAIN_TABLE, default: 253, local: 255 };

/** Reads and changes fos1's routes in one network namespace. */
export class RouteTable {
  constructor(
    private readonly ip: IpRunner,
    private readonly protocol: number = DEFAULT_ROUTE_PROTOCOL,
  ) {}

  /** fos1's routes in every table, both families, in a stable order. */
  async read(): Promise<Route[]> {
    const routes: Route[] = [];
    for (const family of [4, 6] as const) {
      const out = await this.ip.run([`-${family}`, '-json', 'route', 'show', 'table', 'all', 'proto', String(this.protocol)]);
      const parsed = JSON.parse(out || '[]') as IpJsonRoute[];
      for (const r of parsed) routes.push(fromIpJson(r, family));
    }
    return routes;
  }

  /**
   * Applies operations in order through one `ip -batch -` call. The batch stops at the
   * first error; the caller restores from its snapshot, which covers a partial apply.
   */
  async apply(ops: readonly RouteOperation[]): Promise<void> {
    if (ops.length === 0) return;
    const lines = ops.map((op) => this.batchLine(op));
    try {
      await this.ip.run(['-batch', '-'], lines.join('\n') + '\n');
    } catch (err) {
      if (!(err instanceof IpCommandError)) throw err;
      // iproute2 reports "Command failed -:N" with the 1-based batch line that failed.
      const lineNo = /Command failed -:(\d+)/.exec(err.stderr)?.[1];
      const failed = lineNo !== undefined ? ops[Number(lineNo) - 1] : undefined;
      const kernelMessage = err.stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('Command failed'))
        .join('; ')
        .replace(/^Error: /, '');
      const hint = /File exists/.test(kernelMessage) ? ' (a route with the same table, destination and metric exists and is not owned by fos1)' : '';
      throw new RouteApplyError(failed ? renderOperation(failed) : undefined, kernelMessage + hint);
    }
  }

  /** Converges the owned routes to `desired`; returns the operations that were needed. */
  async sync(desired: readonly Route[]): Promise<RouteOperation[]> {
    const ops = planRoutes(await this.read(), [...desired]);
    await this.apply(ops);
    return ops;
  }

  private batchLine(op: RouteOperation): string {
    // The model validated every field; the node checks each again where it enters the
    // line (activities/system/command-args.ts), so the line cannot carry a second command.
    const r = op.route;
    const spec = [prefix(r.destination, 'route destination')];
    if (op.action !== 'delete') {
      if (r.gateway) spec.push('via', address(r.gateway, 'route gateway'));
      if (r.device) spec.push('dev', interfaceName(r.device, 'route device'));
    }
    spec.push('table', integer(r.table, 'route table', 1, 4294967295), 'metric', integer(r.metric, 'route metric', 0, 4294967295), 'proto', integer(this.protocol, 'route protocol', 1, 255));
    if (op.action !== 'delete') {
      // ECMP: `nexthop` clauses come last in `ip route` syntax.
      for (const hop of r.nexthops ?? []) {
        spec.push('nexthop', 'via', address(hop.gateway, 'next hop gateway'));
        if (hop.device) spec.push('dev', interfaceName(hop.device, 'next hop device'));
        spec.push('weight', integer(hop.weight, 'next hop weight', 1, 256));
      }
    }
    const verb = oneOf(op.action, 'route action', ['add', 'delete', 'replace'] as const);
    return batchLine(['route', verb === 'delete' ? 'del' : verb, ...spec]);
  }
}

function fromIpJson(r: IpJsonRoute, family: 4 | 6): Route {
  const destination = canonicalCidr(r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst);
  const table = r.table === undefined ? MAIN_TABLE : (TABLE_NAMES[r.table] ?? Number(r.table));
  const route: Route = { destination, table, metric: normaliseMetric(destination, r.metric) };
  if (r.nexthops) {
    route.nexthops = r.nexthops
      .map((hop) => {
        if (!hop.gateway) throw new Error(`route ${r.dst} has a next hop without a gateway; fos1 creates ECMP routes only via gateways`);
        const out: NextHop = { gateway: canonicalIp(hop.gateway), weight: hop.weight ?? 1 };
        if (hop.dev) out.device = hop.dev;
        return out;
      })
      .sort((a, b) => (a.gateway < b.gateway ? -1 : a.gateway > b.gateway ? 1 : 0));
    return route;
  }
  if (r.gateway) route.gateway = canonicalIp(r.gateway);
  if (r.dev) route.device = r.dev;
  return route;
}
