/**
 * Leader election over a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection
 * package does it: the holder renews `renewTime` every `retryPeriod`; a candidate takes the
 * lease only when it is free or its holder has not renewed for `leaseDurationSeconds`; every
 * write is an optimistic update on the Lease's resourceVersion, so of two candidates that
 * race, exactly one wins (the other gets 409 Conflict and stays a follower). A leader that
 * cannot renew before the lease would expire stops leading *before* anyone else may take
 * over (`renewDeadline` < `leaseDuration`), so two processes never both act.
 */
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type StoredObject } from '../k8s/client';

const LEASE_API_VERSION = 'coordination.k8s.io/v1';

/** Options of {@link LeaderElector}. */
export interface LeaderElectorOptions {
  kube: KubeClient;
  logger: Logger;
  /** Namespace and name of the Lease (e.g. `fos1-system` / `fos1-controller`). */
  namespace: string;
  name: string;
  /** This candidate's identity (pod name + a random suffix: unique per process). */
  identity: string;
  /** How long a lease is valid without renewal (client-go default 15 s). */
  leaseDurationSeconds?: number;
  /** The leader gives up when it could not renew for this long (default 2/3 of the lease). */
  renewDeadlineMs?: number;
  /** How often to try to acquire or renew (default 2 s). */
  retryPeriodMs?: number;
  /** Clock (tests pin it). */
  now?: () => Date;
}

/** Callbacks of {@link LeaderElector.run}. */
export interface LeaderCallbacks {
  /** Became the leader: start acting. */
  onStartedLeading(): Promise<void> | void;
  /** Lost (or gave up) the lease: stop acting at once. */
  onStoppedLeading(): Promise<void> | void;
}

/** A candidate for one Lease; {@link LeaderElector.run} loops until {@link LeaderElector.stop}. */
export class LeaderElector {
  private leading = false;
  private stopped = false;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly options: LeaderElectorOptions) {}

  /** Whether this process holds the lease now. */
  get isLeader(): boolean {
    return this.leading;
  }

  private get leaseSeconds(): number {
    return this.options.leaseDurationSeconds ?? 15;
  }

  /** Tries to acquire or renew until stopped, calling back on every transition. */
  async run(callbacks: LeaderCallbacks): Promise<void> {
    const retry = this.options.retryPeriodMs ?? 2000;
    const renewDeadline = this.options.renewDeadlineMs ?? Math.floor((this.leaseSeconds * 1000 * 2) / 3);
    while (!this.stopped) {
      let round: 'held' | 'other' | 'error' = 'error';
      try {
        round = (await this.tryAcquireOrRenew()) ? 'held' : 'other';
      } catch (err) {
        this.options.logger.warn({ err: String(err), lease: this.leaseName }, 'lease: acquire/renew failed');
      }
      if (round === 'held') {
        this.lastRenew = Date.now();
        if (!this.leading && !this.stopped) {
          this.leading = true;
          this.options.logger.info({ lease: this.leaseName, identity: this.options.identity }, 'lease acquired: leading');
          await callbacks.onStartedLeading();
        }
      } else if (this.leading && (round === 'other' || Date.now() - this.lastRenew > renewDeadline)) {
        // Someone else holds it now, or we could not renew in time: stop before it expires for others.
        this.leading = false;
        this.options.logger.warn({ lease: this.leaseName, identity: this.options.identity }, 'lease lost: stopping');
        await callbacks.onStoppedLeading();
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, retry);
      });
    }
    if (this.leading) {
      this.leading = false;
      await callbacks.onStoppedLeading();
    }
  }

  /**
   * Stops the loop. With `release` (the default), a leader also clears the lease's holder so
   * a follower takes over at once instead of after the lease expires.
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
    if ((options.release ?? true) && this.leading) {
      try {
        const lease = await this.get();
        if (lease && this.holder(lease) === this.options.identity) {
          await this.options.kube.replace({ ...lease, spec: { ...(lease.spec as object), holderIdentity: null, leaseDurationSeconds: 1, renewTime: this.microTime() } } as StoredObject);
        }
      } catch (err) {
        this.options.logger.warn({ err: String(err) }, 'lease: release failed (a follower takes over when it expires)');
      }
    }
  }

  private get leaseName(): string {
    return `${this.options.namespace}/${this.options.name}`;
  }

  private get(): Promise<StoredObject | undefined> {
    return this.options.kube.get({ apiVersion: LEASE_API_VERSION, kind: 'Lease', namespace: this.options.namespace, name: this.options.name });
  }

  private holder(lease: StoredObject): string | undefined {
    return ((lease.spec ?? {}) as { holderIdentity?: string | null }).holderIdentity ?? undefined;
  }

  /** MicroTime as the apiserver wants it: RFC 3339 with exactly six fractional digits. */
  private microTime(): string {
    return (this.options.now ?? (() => new Date()))().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
  }

  /** One round: true when this candidate holds the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.microTime();
    const mine = { holderIdentity: this.options.identity, leaseDurationSeconds: this.leaseSeconds, renewTime: now };
    const lease = await this.get();
    try {
      if (!lease) {
        await this.options.kube.create({
          apiVersion: LEASE_API_VERSION,
          kind: 'Lease',
          metadata: { name: this.options.name, namespace: this.options.namespace },
          spec: { ...mine, acquireTime: now, leaseTransitions: 0 },
        });
        return true;
      }
      const spec = (lease.spec ?? {}) as { holderIdentity?: string | null; leaseDurationSeconds?: number; renewTime?: string; acquireTime?: string; leaseTransitions?: number };
      const holder = spec.holderIdentity ?? undefined;
      if (holder === this.options.identity) {
        await this.options.kube.replace({ ...lease, spec: { ...spec, ...mine } });
        return true;
      }
      const renewedAt = spec.renewTime ? Date.parse(spec.renewTime) : 0;
      const expires = renewedAt + (spec.leaseDurationSeconds ?? this.leaseSeconds) * 1000;
      const nowMs = Date.parse(now);
      if (holder !== undefined && holder !== '' && nowMs < expires) return false; // held by a live leader
      await this.options.kube.replace({ ...lease, spec: { ...spec, ...mine, acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } });
      return true;
    } catch (err) {
      // Another candidate wrote first (409) or created it first (409 AlreadyExists): not ours this round.
      if (err instanceof KubeApiError && err.status === 409) return false;
      throw err;
    }
  }
}
