/**
 * Activities that touch one router node: the subsystem contract's verbs (model/subsystem.ts)
 * for every subsystem registered in activities/subsystems/. They run on the node's own
 * task queue, so the worker on that node is the only one that ever executes them.
 *
 *   prepareSubsystems  intents → per subsystem: plan, expected check, snapshot (read once)
 *   applySubsystem     one subsystem's intent → converged
 *   checkSubsystems    checks → what differs (empty: verified)
 *   restoreSubsystem   one subsystem's snapshot → as before
 *
 * Each step's duration is a histogram (metrics/registry.ts: `fos1_node_step_duration_seconds`,
 * restores `fos1_node_rollback_duration_seconds`).
 *
 * Each is idempotent and retry-safe: apply and restore re-read live state and plan
 * against it, so a retry after a crash (or a rollback after a partial apply) converges
 * instead of tripping over what the previous attempt already did.
 */
import type { NodeProtectedAddresses } from '../model/enforcement-guard';
import { readProtectedAddresses, type ProtectedAddressSources } from './system/protected-addresses';
import type { Logger } from 'pino';
import {
  type CheckOf,
  type IntentOf,
  type PreparedSubsystems,
  type Subsystem,
  type SubsystemChecks,
  type SubsystemContract,
  type SubsystemIntents,
  type SubsystemSnapshot,
  SUBSYSTEM_ORDER,
} from '../model/subsystem';
import type { BlocklistMaps } from '../bpf/blocklist-maps';
import type { RateLimitMaps } from '../bpf/ratelimit-maps';
import type { BlocklistStore } from './blocklist-sync';
import { nodeStepSeconds, rollbackSeconds, timed } from '../metrics/registry';
import { ErrorDomains, translateErrors } from './failures';
import type { RouteTable } from './system/route-table';
import type { LinkTable } from './system/link-table';
import type { NatTable } from './system/nat-table';
import type { RuleTable } from './system/rule-table';
import { createSubsystems, prepareSubsystem } from './subsystems';
import { onceScope } from './subsystems/table';

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
  /** Where the node's own addresses, gateways and DNS servers are read (the guard's default allow-list). */
  protectedAddresses: ProtectedAddressSources;
  logger: Logger;
}

/** Result of an apply or restore: the operations that were needed, as diff lines. */
export interface SyncResult {
  operations: string[];
}

/** Builds the node activities around injected clients. */
export function createNodeActivities(deps: NodeActivityDeps) {
  const { logger } = deps;
  let maps: BlocklistMaps | undefined;
  let rateLimitMaps: RateLimitMaps | undefined;
  const subsystems = createSubsystems({
    routes: deps.routes,
    links: deps.links,
    rules: deps.rules,
    nat: deps.nat,
    blocklist: () => (maps ??= deps.openBlocklist()),
    rateLimits: () => (rateLimitMaps ??= deps.openRateLimits()),
    blocklistStore: deps.blocklistStore,
    logger,
  });
  // One subsystem, typed by its name (the registry's type keeps the pairing).
  const subsystem = <S extends Subsystem>(name: S): SubsystemContract<S> => subsystems[name] as SubsystemContract<S>;

  return {
    /**
     * Reads and plans each intent against its subsystem and, unless `dryRun` (for state
     * that would be written to the node's store), takes the snapshot a rollback restores.
     * Subsystems sharing a kernel listing read it once.
     */
    async prepareSubsystems(input: { intents: SubsystemIntents; dryRun?: boolean }): Promise<PreparedSubsystems> {
      return timed(nodeStepSeconds, { step: 'prepare', subsystem: 'all' }, () => translateErrors(ErrorDomains.node, async () => {
        const reads = onceScope();
        const prepared: PreparedSubsystems = {};
        for (const name of SUBSYSTEM_ORDER) {
          const intent = input.intents[name];
          if (intent === undefined) continue;
          (prepared as Record<string, unknown>)[name] = await prepareSubsystem(subsystem(name) as SubsystemContract<Subsystem>, intent, { dryRun: input.dryRun === true, reads });
        }
        return prepared;
      }));
    },

    /** Converges one subsystem to its intent, then runs the test fault hook (after the kernel changed). */
    async applySubsystem<S extends Subsystem>(input: { subsystem: S; intent: IntentOf<S> }): Promise<SyncResult> {
      return timed(nodeStepSeconds, { step: 'apply', subsystem: input.subsystem }, () => translateErrors(ErrorDomains.node, async () => {
        const { operations } = await subsystem(input.subsystem).apply(input.intent);
        await deps.faults?.(input.subsystem);
        logger.info({ subsystem: input.subsystem, operations: operations.slice(0, 100), count: operations.length }, `${input.subsystem} converged`);
        return { operations };
      }));
    },

    /** Reads every subsystem named in `checks` back; returns what differs (empty: verified). */
    async checkSubsystems(input: { checks: SubsystemChecks }): Promise<string[]> {
      return timed(nodeStepSeconds, { step: 'check', subsystem: 'all' }, () => translateErrors(ErrorDomains.node, async () => {
        const reads = onceScope();
        const differences: string[] = [];
        for (const name of SUBSYSTEM_ORDER) {
          const check = input.checks[name];
          if (check !== undefined) differences.push(...(await (subsystem(name) as SubsystemContract<Subsystem>).check(check, reads)));
        }
        return differences;
      }));
    },

    /**
     * The node's own addresses, gateways and DNS servers, read now: the enforcement
     * workflow never blocks them (model/enforcement-guard.ts effectiveGuardConfig).
     */
    async reportProtectedAddresses(input: { node: string }): Promise<NodeProtectedAddresses> {
      return translateErrors(ErrorDomains.node, () => readProtectedAddresses(input.node, deps.protectedAddresses));
    },

    /** Puts one subsystem's snapshot back (the caller then checks `snapshot.check`). */
    async restoreSubsystem<S extends Subsystem>(input: { subsystem: S; snapshot: SubsystemSnapshot<CheckOf<S>> }): Promise<SyncResult> {
      return timed(rollbackSeconds, { subsystem: input.subsystem }, () => translateErrors(ErrorDomains.node, () => subsystem(input.subsystem).restore(input.snapshot)));
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type NodeActivities = ReturnType<typeof createNodeActivities>;
