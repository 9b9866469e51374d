/**
 * Activities that touch one router node: read its state, converge routes, converge the
 * eBPF blocklist. They run on the node's own task queue, so the worker on that node is
 * the only one that ever executes them.
 *
 * Each activity is idempotent and retry-safe: it re-reads live state and plans against
 * it, so a retry after a crash (or a rollback after a partial apply) converges instead of
 * tripping over what the previous attempt already did.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Logger } from 'pino';
import type { ObservedBlocklistEntry, ObservedNodeState, Route } from '../model/node-state';
import { planBlocklist, renderOperation } from '../model/plan';
import type { BlocklistMaps, KernelBlocklistEntry } from '../bpf/blocklist-maps';
import { BpfError, BpfMapFullError, BpfPermissionError } from '../bpf/libbpf';
import { BpfMapMismatchError } from '../bpf/map';
import { RouteApplyError, type RouteTable } from './system/route-table';

/** Failure types the workflows branch on (`failure.type`, never `instanceof`). */
export const NodeFailureType = {
  RouteApplyFailed: 'RouteApplyFailed',
  BlocklistMapFull: 'BlocklistMapFull',
  PermissionDenied: 'PermissionDenied',
  BlocklistMapMismatch: 'BlocklistMapMismatch',
} as const;

/** What the node activities need from the world; injected so tests use real namespaces and pins. */
export interface NodeActivityDeps {
  routes: RouteTable;
  /** Opens (creating and pinning if needed) the node's blocklist maps. */
  openBlocklist: () => BlocklistMaps;
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

  return {
    /** Observed state of the node: fos1's routes and the blocklist maps' contents. */
    async readNodeState(): Promise<ObservedNodeState> {
      return translateErrors(async () => ({
        routes: await routes.read(),
        blocklist: blocklist().readAll().map(fromKernelEntry),
      }));
    },

    /** Converges fos1's routes to `desired` (used for apply and, with the snapshot, for restore). */
    async syncRoutes(input: { desired: Route[] }): Promise<SyncResult> {
      return translateErrors(async () => {
        const ops = await routes.sync(input.desired);
        const operations = ops.map(renderOperation);
        logger.info({ operations }, 'routes converged');
        return { operations };
      });
    },

    /**
     * Converges the blocklist maps to `desired`: upserts first, deletes last, so a block
     * being replaced by a wider or narrower one never lapses.
     */
    async syncBlocklist(input: { desired: ObservedBlocklistEntry[] }): Promise<SyncResult> {
      return translateErrors(async () => {
        const store = blocklist();
        const ops = planBlocklist(store.readAll().map(fromKernelEntry), input.desired);
        const upserts = ops.filter((op) => op.action !== 'delete').map((op) => toKernelEntry(op.entry));
        const deletes = ops.filter((op) => op.action === 'delete').map((op) => op.entry.cidr);
        store.upsert(upserts);
        store.remove(deletes);
        const operations = ops.map(renderOperation);
        logger.info({ operations: operations.length }, 'blocklist converged');
        return { operations };
      });
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type NodeActivities = ReturnType<typeof createNodeActivities>;

function fromKernelEntry(e: KernelBlocklistEntry): ObservedBlocklistEntry {
  return e.expiresAt ? { cidr: e.cidr, expiresAt: new Date(e.expiresAt * 1000).toISOString() } : { cidr: e.cidr };
}

function toKernelEntry(e: ObservedBlocklistEntry): KernelBlocklistEntry {
  return e.expiresAt ? { cidr: e.cidr, expiresAt: Math.floor(Date.parse(e.expiresAt) / 1000) } : { cidr: e.cidr };
}

/**
 * Maps system errors to ApplicationFailures with a stable `type`. Configuration errors
 * the kernel refuses (bad gateway, full map, missing privilege) will not heal by retrying,
 * so they are non-retryable; anything unexpected stays retryable.
 */
async function translateErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof RouteApplyError) {
      throw ApplicationFailure.create({ type: NodeFailureType.RouteApplyFailed, message: err.message, nonRetryable: true });
    }
    if (err instanceof BpfMapFullError) {
      throw ApplicationFailure.create({ type: NodeFailureType.BlocklistMapFull, message: err.message, nonRetryable: true });
    }
    if (err instanceof BpfPermissionError) {
      throw ApplicationFailure.create({ type: NodeFailureType.PermissionDenied, message: err.message, nonRetryable: true });
    }
    if (err instanceof BpfMapMismatchError) {
      throw ApplicationFailure.create({ type: NodeFailureType.BlocklistMapMismatch, message: err.message, nonRetryable: true });
    }
    if (err instanceof BpfError) {
      throw ApplicationFailure.create({ type: 'BpfError', message: err.message, nonRetryable: false });
    }
    throw err;
  }
}
