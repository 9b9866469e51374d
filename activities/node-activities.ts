/**
 * Activities that touch one router node: the subsystem contract's verbs (model/subsystem.ts)
 * for every subsystem registered in activities/subsystems/. They run on the node's own
 * task queue, so the worker on that node is the only one that ever executes them.
 *
 *   prepareSubsystems  intents → per subsystem: plan, expected check, snapshot (read once)
 *   applySubsystem     one subsystem's intent → converged
 *   checkSubsystems    checks → what differs (empty: verified)
 *   restoreSubsystem   one subsystem's snapshot → as before
 *   restoreAndCheck    every registered snapshot, newest first, then read back (one
 *                      restore round of a retrying rollback; fails while anything differs)
 *
 * Each step's duration is a histogram (metrics/registry.ts: `fos1_node_step_duration_seconds`,
 * restores `fos1_node_rollback_duration_seconds`).
 *
 * Each is idempotent and retry-safe: apply and restore re-read live state and plan
 * against it, so a retry after a crash (or a rollback after a partial apply) converges
 * instead of tripping over what the previous attempt already did. A repeated prepare of
 * the same run (`key`) returns the first snapshot (activities/prepared-store.ts).
 *
 * Each heartbeats (activities/heartbeat.ts) with the subsystem and phase it is at, so the
 * short heartbeat time-out of the node workflow notices a killed worker within seconds.
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
import { join } from 'node:path';
import { failure, FailureType, summariseFailure } from '../model/failures';
import { progress, withHeartbeats } from './heartbeat';
import { PreparedStore } from './prepared-store';
import { onceScope } from './subsystems/table';
import type { ZoneMapStore } from './subsystems/zonemaps';

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
  /** Opens (creating and pinning if needed) the node's eBPF zone maps. */
  openZoneMaps: () => ZoneMapStore;
  /** The node's content-addressed store: referenced blocklists and rollback snapshots. */
  blocklistStore: BlocklistStore;
  /** Where prepared snapshots are kept by run (default: `prepared/` in the blocklist store's folder). */
  preparedStore?: PreparedStore;
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
  let zoneMaps: ZoneMapStore | undefined;
  const subsystems = createSubsystems({
    routes: deps.routes,
    links: deps.links,
    rules: deps.rules,
    nat: deps.nat,
    blocklist: () => (maps ??= deps.openBlocklist()),
    rateLimits: () => (rateLimitMaps ??= deps.openRateLimits()),
    zoneMaps: () => (zoneMaps ??= deps.openZoneMaps()),
    blocklistStore: deps.blocklistStore,
    logger,
  });
  // One subsystem, typed by its name (the registry's type keeps the pairing).
  const subsystem = <S extends Subsystem>(name: S): SubsystemContract<S> => subsystems[name] as SubsystemContract<S>;
  const prepared = deps.preparedStore ?? new PreparedStore(join(deps.blocklistStore.dir, 'prepared'));

  /** Reads every subsystem named in `checks` back; what differs. */
  const check = async (checks: SubsystemChecks, phase: string): Promise<string[]> => {
    const reads = onceScope();
    const differences: string[] = [];
    for (const name of SUBSYSTEM_ORDER) {
      const c = checks[name];
      if (c === undefined) continue;
      await progress({ phase, subsystem: name });
      differences.push(...(await (subsystem(name) as SubsystemContract<Subsystem>).check(c, reads)));
    }
    return differences;
  };

  return {
    /**
     * Reads and plans each intent against its subsystem and, unless `dryRun` (for state
     * that would be written to the node's store), takes the snapshot a rollback restores.
     * Subsystems sharing a kernel listing read it once.
     */
    async prepareSubsystems(input: { intents: SubsystemIntents; dryRun?: boolean; key?: string }): Promise<PreparedSubsystems> {
      return timed(nodeStepSeconds, { step: 'prepare', subsystem: 'all' }, () =>
        translateErrors(ErrorDomains.node, () =>
        withHeartbeats({ phase: 'prepare' }, async () => {
          // A repeat of this run's prepare (a replay after a crash, a retried attempt): the
          // first snapshot, never one of state the apply may already have changed.
          const keep = input.key !== undefined && input.dryRun !== true ? input.key : undefined;
          const first = keep === undefined ? undefined : prepared.get<PreparedSubsystems>(keep);
          if (first !== undefined) {
            logger.warn({ key: keep }, 'prepare repeated for this run: returning the snapshot taken first');
            return first;
          }
          const reads = onceScope();
          const result: PreparedSubsystems = {};
          for (const name of SUBSYSTEM_ORDER) {
            const intent = input.intents[name];
            if (intent === undefined) continue;
            await progress({ phase: 'prepare', subsystem: name });
            (result as Record<string, unknown>)[name] = await prepareSubsystem(subsystem(name) as SubsystemContract<Subsystem>, intent, { dryRun: input.dryRun === true, reads });
          }
          if (keep !== undefined) prepared.put(keep, result);
          return result;
        }),
        ),
      );
    },

    /** Converges one subsystem to its intent, then runs the test fault hook (after the kernel changed). */
    async applySubsystem<S extends Subsystem>(input: { subsystem: S; intent: IntentOf<S> }): Promise<SyncResult> {
      return timed(nodeStepSeconds, { step: 'apply', subsystem: input.subsystem }, () =>
        translateErrors(ErrorDomains.node, () =>
        withHeartbeats({ phase: 'apply', subsystem: input.subsystem }, async () => {
          const { operations } = await subsystem(input.subsystem).apply(input.intent);
          await deps.faults?.(input.subsystem);
          logger.info({ subsystem: input.subsystem, operations: operations.slice(0, 100), count: operations.length }, `${input.subsystem} converged`);
          return { operations };
        }),
        ),
      );
    },

    /** Reads every subsystem named in `checks` back; returns what differs (empty: verified). */
    async checkSubsystems(input: { checks: SubsystemChecks }): Promise<string[]> {
      return timed(nodeStepSeconds, { step: 'check', subsystem: 'all' }, () => translateErrors(ErrorDomains.node, () => withHeartbeats({ phase: 'check' }, () => check(input.checks, 'check'))));
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
      return timed(rollbackSeconds, { subsystem: input.subsystem }, () => translateErrors(ErrorDomains.node, () => withHeartbeats({ phase: 'restore', subsystem: input.subsystem }, () => subsystem(input.subsystem).restore(input.snapshot))));
    },

    /**
     * One round of a retrying rollback: restores every snapshot in the order given (newest
     * first), twice when the first pass leaves differences (a restore can depend on a later
     * one), then reads back. Fails with `RestoreIncomplete` (retryable) naming what went
     * wrong while anything differs, so the workflow's retry policy and back-off take over.
     */
    async restoreAndCheck(input: { restores: { subsystem: Subsystem; snapshot: SubsystemSnapshot<CheckOf<Subsystem>> }[]; checks: SubsystemChecks }): Promise<SyncResult> {
      return timed(rollbackSeconds, { subsystem: 'all' }, () => withHeartbeats({ phase: 'restore round' }, async () => {
        const operations: string[] = [];
        let differences: string[] = [];
        const errors: string[] = [];
        for (let pass = 1; pass <= 2; pass++) {
          errors.length = 0;
          for (const r of input.restores) {
            await progress({ phase: 'restore round', subsystem: r.subsystem, pass });
            try {
              operations.push(...(await translateErrors(ErrorDomains.node, () => (subsystem(r.subsystem) as SubsystemContract<Subsystem>).restore(r.snapshot))).operations);
            } catch (err) {
              errors.push(`restore ${r.subsystem}: ${summariseFailure(err).message}`);
            }
          }
          try {
            differences = await check(input.checks, 'restore round check');
          } catch (err) {
            differences = [`could not read back: ${summariseFailure(err).message}`];
          }
          if (differences.length === 0) return { operations };
        }
        throw failure(FailureType.RestoreIncomplete, [...errors, ...differences].join('; '));
      }));
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type NodeActivities = ReturnType<typeof createNodeActivities>;
