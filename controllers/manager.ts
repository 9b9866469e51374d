/**
 * One controller process: a Lease candidate that runs fos1's controllers only while it leads.
 * Every controller starts its changes through the change workflow with one shared
 * runner (controllers/change-runner.ts): NetworkInterface and VLANPolicy with node targets,
 * FirewallRule as cluster-only changes (its Cilium policy); the FirewallZone controller runs
 * inside the FirewallRule controller (a zone acts by re-applying its rules).
 */
import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { KubeClient } from '../k8s/client';
import { ChangeRunner } from './change-runner';
import { FirewallRuleController } from './firewall-rule-controller';
import { LeaderElector } from './leader-election';
import { networkInterfaceReconciler } from './network-interface-controller';
import { ObjectController, type ObjectControllerOptions, type Reconciler } from './object-controller';
import { VlanPolicyDependents, vlanPolicyReconciler } from './vlan-policy-controller';

/** The controllers a manager can run. */
export type ControllerName = 'FirewallRule' | 'FirewallZone' | 'NetworkInterface' | 'VLANPolicy';
export const ALL_CONTROLLERS: readonly ControllerName[] = ['FirewallRule', 'FirewallZone', 'NetworkInterface', 'VLANPolicy'];

/** Options of {@link ControllerManager}. */
export interface ControllerManagerOptions {
  kube: KubeClient;
  temporal: Client;
  logger: Logger;
  /** Lease namespace/name and this process's identity (unique per process). */
  lease: { namespace: string; name: string; identity: string; leaseDurationSeconds?: number; retryPeriodMs?: number };
  controllers?: readonly ControllerName[];
  /** Bake of each wave of the changes the controllers start (seconds; default: the change workflow's). */
  bakeSeconds?: number;
  /** The controllers' identity key (FOS1_CONTROLLER_IDENTITY_KEY_FILE): their change workflows are then recorded verified. */
  identityKey?: Buffer;
  /** Called when the lease is lost (main.ts exits so the Deployment restarts it, as controller-runtime does). */
  onLostLease?: () => void;
}

/** A Lease candidate running fos1's controllers while it leads. */
export class ControllerManager {
  readonly elector: LeaderElector;
  readonly runner: ChangeRunner;
  /** The object controllers of the current term (empty while following). */
  controllers: ObjectController[] = [];
  private firewallRules: FirewallRuleController | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly options: ControllerManagerOptions) {
    const wanted = options.controllers ?? ALL_CONTROLLERS;
    // The FirewallZone controller re-applies FirewallRules: it runs inside their controller.
    if (wanted.includes('FirewallZone') && !wanted.includes('FirewallRule')) throw new Error('controllers: FirewallZone needs FirewallRule (it re-applies the rules that name a zone)');
    this.runner = new ChangeRunner({ temporal: options.temporal, ...(options.identityKey ? { identityKey: options.identityKey } : {}) });
    this.elector = new LeaderElector({ kube: options.kube, logger: options.logger, ...options.lease });
  }

  /** Every change the controllers of this process started or joined, newest last. */
  get started(): { kind: string; key: string; changeId: string; purpose: string }[] {
    return this.history;
  }
  private readonly history: { kind: string; key: string; changeId: string; purpose: string }[] = [];

  /** Starts campaigning; returns at once (the controllers start when the lease is won). */
  start(): void {
    this.running = this.elector.run({
      onStartedLeading: () => this.startControllers(),
      onStoppedLeading: async () => {
        await this.stopControllers();
        this.options.onLostLease?.();
      },
    });
  }

  /** Stops the controllers (without waiting for changes in flight) and the election; `release` frees the lease at once. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    await this.stopControllers();
    await this.elector.stop(options);
    await this.running;
  }

  private async startControllers(): Promise<void> {
    const { kube, logger } = this.options;
    const wanted = this.options.controllers ?? ALL_CONTROLLERS;
    const shared = { runner: this.runner, ...(this.options.bakeSeconds !== undefined ? { bakeSeconds: this.options.bakeSeconds } : {}) };
    const controller = (reconciler: Reconciler, onObject?: ObjectControllerOptions['onObject']) =>
      new ObjectController({ kube, logger: logger.child({ controller: reconciler.kind }), reconciler, ...(onObject ? { onObject } : {}), onChange: (e) => this.history.push({ kind: reconciler.kind, ...e }) });
    this.controllers = [];
    if (wanted.includes('NetworkInterface')) this.controllers.push(controller(networkInterfaceReconciler(shared)));
    if (wanted.includes('VLANPolicy')) {
      // A policy allowing a VLAN waits for that VLAN's zone: its watch re-reconciles it.
      const dependents = new VlanPolicyDependents((obj, tag) => void vlanPolicies.force(obj, tag));
      const vlanPolicies = controller(vlanPolicyReconciler({ ...shared, kube }), (obj, deleted) => dependents.seen(obj, deleted));
      this.controllers.push(vlanPolicies);
    }
    for (const c of this.controllers) await c.start();
    if (wanted.includes('FirewallRule')) {
      this.firewallRules = new FirewallRuleController({
        kube,
        temporal: this.options.temporal,
        runner: this.runner,
        logger: logger.child({ controller: 'FirewallRule' }),
        zones: wanted.includes('FirewallZone'),
        onChange: (e) => this.history.push(e),
      });
      await this.firewallRules.start();
    }
  }

  private async stopControllers(): Promise<void> {
    // Stop waiting for changes first: they go on in Temporal, and the next leader joins them.
    this.runner.abortAll();
    const controllers = this.controllers;
    this.controllers = [];
    await Promise.all(controllers.map((c) => c.stop()));
    const rules = this.firewallRules;
    this.firewallRules = undefined;
    await rules?.stop();
  }
}
