/**
 * Activities that touch one router node: read its state, converge routes, converge the
 * eBPF blocklist. They run on the node's own task queue, so the worker on that node is
 * the only one that ever executes them.
 *
 * Each activity is idempotent and retry-safe: it re-reads live state and plans against
 * it, so a retry after a crash (or a rollback after a partial apply) converges instead of
 * tripping over what the previous attempt already did.
 */
import type { Logger } from 'pino';
import type { InterfaceConfig, NatConfig, ObservedNetworkState, ObservedRateLimit, PolicyRule, Route, Zone } from '../model/node-state';
import { renderOperation, type Subsystem } from '../model/plan';
import type { BlocklistMaps } from '../bpf/blocklist-maps';
import type { KernelRateLimit, RateLimitMaps } from '../bpf/ratelimit-maps';
import { createBlocklistActivities } from './blocklist-activities';
import type { BlocklistStore } from './blocklist-sync';
import { ErrorDomains, translateErrors } from './failures';
import type { RouteTable } from './system/route-table';
import type { LinkTable } from './system/link-table';
import type { NatTable } from './system/nat-table';
import type { RuleTable } from './system/rule-table';

/**
 * Test hook: called by a converge activity right after it changed the kernel, before it
 * reports success. Throwing there makes the step fail in the real apply path, with its
 * changes already made — exactly what a rollback must undo (throw an InjectedFaultError,
 * activities/failures.ts, to fail it as `InjectedFault`). Production workers pass none.
 */
export type FaultInjector = (subsystem: Subsystem) => void | Promise<void>;

/** What the node activities need from the world; injected so tests use real namespaces and pins. */
export interface NodeActivityDeps {
  routes: RouteTable;
  /** Links, fos1's VLANs and interface addresses. */
  links: LinkTable;
  /** fos1's policy routing rules. */
  rules: RuleTable;
  /** fos1's nftables table: NAT rules and zones. */
  nat: NatTable;
  /** Test-only fault injection (see {@link FaultInjector}). */
  faults?: FaultInjector;
  /** Opens (creating and pinning if needed) the node's blocklist maps. */
  openBlocklist: () => BlocklistMaps;
  /** Opens (creating and pinning if needed) the node's rate-limit maps. */
  openRateLimits: () => RateLimitMaps;
  /** The node's content-addressed store: referenced blocklists and rollback snapshots. */
  blocklistStore: BlocklistStore;
  logger: Logger;
}

/** Result of a converge step: the operations that were needed, as diff lines. */
export interface SyncResult {
  operations: string[];
}

/** Builds the node activities around injected clients. */
export function createNodeActivities(deps: NodeActivityDeps) {
  const { routes, logger } = deps;
  let maps: BlocklistMaps | undefined;
  const blocklist = (): BlocklistMaps => (maps ??= deps.openBlocklist());
  let rateLimitMaps: RateLimitMaps | undefined;
  const rateLimits = (): RateLimitMaps => (rateLimitMaps ??= deps.openRateLimits());

  /** Runs one converge step: apply, then the test fault hook (after the kernel changed). */
  const converge = (subsystem: Subsystem, apply: () => Promise<Parameters<typeof renderOperation>[0][]>): Promise<SyncResult> =>
    translateErrors(ErrorDomains.node, async () => {
      const operations = (await apply()).map(renderOperation);
      await deps.faults?.(subsystem);
      logger.info({ subsystem, operations }, `${subsystem} converged`);
      return { operations };
    });

  return {
    /**
     * Observed network state of the node: interfaces, fos1's routes, rules, zones and NAT.
     * Not the blocklist: it can hold a million entries, more than a workflow payload may;
     * the blocklist activities below plan, snapshot and verify it on the node.
     */
    async readNetworkState(): Promise<ObservedNetworkState> {
      return translateErrors(ErrorDomains.node, async () => {
        const table = await deps.nat.readState(); // zones and NAT share fos1's nft table: one listing
        return {
          interfaces: await deps.links.read(),
          routes: await routes.read(),
          rules: await deps.rules.read(),
          zones: table.zones,
          nat: table.config,
          rateLimits: rateLimits().readAll().map(fromKernelRateLimit),
        };
      });
    },

    /** Converges MTU and admin state of the interfaces `desired` names (`restore`: skip foreign interfaces that vanished). */
    async syncLinks(input: { desired: InterfaceConfig[]; restore?: boolean }): Promise<SyncResult> {
      return converge('links', () => deps.links.syncLinks(input.desired, { restore: input.restore === true }));
    },

    /** Converges fos1's 802.1Q VLANs; fails up front with KernelFeatureMissing on a kernel without them. */
    async syncVlans(input: { desired: InterfaceConfig[] }): Promise<SyncResult> {
      return converge('vlans', () => deps.links.syncVlans(input.desired));
    },

    /** Converges the addresses of the interfaces whose address list `desired` gives (`restore`: as syncLinks). */
    async syncAddresses(input: { desired: InterfaceConfig[]; restore?: boolean }): Promise<SyncResult> {
      return converge('addresses', () => deps.links.syncAddresses(input.desired, { restore: input.restore === true }));
    },

    /** Converges fos1's routes to `desired` (used for apply and, with the snapshot, for restore). */
    async syncRoutes(input: { desired: Route[] }): Promise<SyncResult> {
      return converge('routes', () => routes.sync(input.desired));
    },

    /** Converges fos1's policy routing rules. */
    async syncRules(input: { desired: PolicyRule[] }): Promise<SyncResult> {
      return converge('rules', () => deps.rules.sync(input.desired));
    },

    /** Converges fos1's zones (named nft sets in its table; one transaction). */
    async syncZones(input: { desired: Zone[] }): Promise<SyncResult> {
      return converge('zones', () => deps.nat.syncZones(input.desired));
    },

    /** Converges fos1's NAT rules (one nft transaction). */
    async syncNat(input: { desired: NatConfig }): Promise<SyncResult> {
      return converge('nat', () => deps.nat.sync(input.desired));
    },

    /** Converges the per-source rate limits the eBPF firewall enforces (all or nothing). */
    async syncRateLimits(input: { desired: ObservedRateLimit[] }): Promise<SyncResult> {
      return converge('ratelimits', async () => {
        const { added, changed, removed } = rateLimits().sync(input.desired.map(toKernelRateLimit));
        return [
          ...added.map((r) => ({ subsystem: 'ratelimits' as const, action: 'add' as const, entry: fromKernelRateLimit(r) })),
          ...changed.map((c) => ({ subsystem: 'ratelimits' as const, action: 'replace' as const, entry: fromKernelRateLimit(c.entry), previous: fromKernelRateLimit(c.previous) })),
          ...removed.map((r) => ({ subsystem: 'ratelimits' as const, action: 'delete' as const, entry: fromKernelRateLimit(r) })),
        ];
      });
    },

    ...createBlocklistActivities({ maps: blocklist, store: deps.blocklistStore, logger }),
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type NodeActivities = ReturnType<typeof createNodeActivities>;

function fromKernelRateLimit(r: KernelRateLimit): ObservedRateLimit {
  return { cidr: r.cidr, pps: r.pps, burst: r.burst, ...(r.expiresAt ? { expiresAt: new Date(r.expiresAt * 1000).toISOString() } : {}) };
}

function toKernelRateLimit(r: ObservedRateLimit): KernelRateLimit {
  return { cidr: r.cidr, pps: r.pps, burst: r.burst, ...(r.expiresAt ? { expiresAt: Math.floor(Date.parse(r.expiresAt) / 1000) } : {}) };
}
