/**
 * FirewallZone controller: a `security.fos1.io/v1alpha1` FirewallZone is the set of endpoints
 * FirewallRules protect (pods by label, or router nodes by label for Cilium's host firewall;
 * model/firewall.ts). It has no state of its own anywhere: it exists only inside the Cilium
 * policies of the FirewallRules that name it (as `spec.zone` or as a peer `spec.peers[i].zone`),
 * translated by model/firewall-translate.ts. So the controller:
 *
 * - **validates** the zone (model/firewall.ts `firewallZoneSchema`): a bad one is refused with
 *   reason `InvalidSpec` and the field named (`spec.selector.<key>: …`); its rules are left as
 *   they were;
 * - **acts** by re-applying, with this generation of the zone, every FirewallRule of the
 *   namespace that names it — through the FirewallRule controller (that rule's own change, a
 *   cluster-only change of the change workflow, under change id
 *   `fwr-<rule>-<hash>-g<generation>-<zone tag>`, so a restarted controller joins it) — and
 *   waits for them: `Applied` True when every rule applied, else `Failed` with the first
 *   failure's type and every failed rule named. A zone created after a rule that names it
 *   makes that rule apply (it had failed for want of it);
 * - **deletion** is refused while a rule still names the zone: the finalizer stays, the
 *   conditions say `ZoneInUse` and name each rule and field, and the cleanup is tried again
 *   when such a rule changes or goes (and with back-off). Deleting the zone under its rules
 *   would make each of them fail to translate; refusing keeps their policies as they are.
 *   With no rule left, nothing remains to clean (the zone made no object) and the finalizer
 *   goes.
 *
 * Its changes are the rules' changes: `changeWorkflow` runs with the rule's cluster policy and
 * no node part (workflows/cluster-only-change.ts), so they get the approval policy, the
 * verified rollback and the durable audit; the zone's status names their workflow ids.
 */
import type { StoredObject } from '../k8s/client';
import { validateFirewallZone } from '../model/firewall';
import { shortHash } from '../model/short-hash';
import { objectChangeId, type ChangeOutcome } from './change-runner';

/** Reason of a refused deletion: FirewallRules still name the zone. */
export const ZONE_IN_USE = 'ZoneInUse';

/** Where a rule names a zone: `spec.zone`, `spec.peers[2].zone`. */
export function zoneReferences(rule: StoredObject, zone: string): string[] {
  const spec = (rule.spec ?? {}) as { zone?: string; peers?: { zone?: string }[] };
  const fields = spec.zone === zone ? ['spec.zone'] : [];
  (spec.peers ?? []).forEach((p, i) => {
    if (p?.zone === zone) fields.push(`spec.peers[${i}].zone`);
  });
  return fields;
}

/**
 * The tag a zone's generation puts into the change ids of the rules it re-applies: the
 * zone's uid (a re-created zone of the same name gets new ids) and generation.
 */
export function zoneForceTag(zone: StoredObject): string {
  return `z${shortHash(zone.metadata.uid ?? '').slice(0, 5)}g${zone.metadata.generation ?? 0}`;
}

/** Validates a zone's spec; the issues name `spec.<field>` (or `metadata.name`) and the rule. */
export function validateZoneObject(zone: StoredObject): { ok: true } | { ok: false; message: string } {
  const result = validateFirewallZone({ name: zone.metadata.name, ...((zone.spec ?? {}) as object) });
  if (result.ok) return { ok: true };
  return { ok: false, message: result.issues.map((i) => `${i.field === 'name' ? 'metadata.name' : `spec.${i.field}`}: ${i.message}`).join('; ') };
}

/** What the zone reconciler needs from the FirewallRule controller. */
export interface ZoneRuleAccess {
  /** The namespace's rules, as last seen. */
  rules(namespace: string): StoredObject[];
  /** Re-applies one rule (its generation did not move) and resolves with its outcome. */
  reapply(rule: StoredObject, tag: string): Promise<ChangeOutcome | undefined>;
}

/** The FirewallZone reconciler's verbs (the kind's `Reconciler` is assembled by the FirewallRule controller). */
export function firewallZoneVerbs(access: ZoneRuleAccess) {
  const naming = (zone: StoredObject) =>
    access
      .rules(zone.metadata.namespace ?? 'default')
      .filter((r) => !r.metadata.deletionTimestamp)
      .map((rule) => ({ rule, fields: zoneReferences(rule, zone.metadata.name) }))
      .filter((r) => r.fields.length > 0)
      .sort((a, b) => (a.rule.metadata.name < b.rule.metadata.name ? -1 : 1));
  const refused = (changeId: string, type: string, message: string): ChangeOutcome => ({ kind: 'failed', changeId, workflowId: '', type, message });
  return {
    async apply(zone: StoredObject, starting: (changeId: string) => void): Promise<ChangeOutcome> {
      const changeId = objectChangeId('fwz', zone, { generation: zone.metadata.generation ?? 0 });
      const valid = validateZoneObject(zone);
      if (!valid.ok) return refused(changeId, 'InvalidSpec', `invalid FirewallZone: ${valid.message}`);
      const rules = naming(zone);
      starting(changeId);
      if (rules.length === 0) return { kind: 'applied', changeId, workflowId: '', message: 'no FirewallRule names this zone: nothing to re-apply', unchanged: true };
      const tag = zoneForceTag(zone);
      const outcomes = await Promise.all(rules.map(async ({ rule }) => ({ rule, outcome: await access.reapply(rule, tag) })));
      const workflowId = [...new Set(outcomes.map((o) => o.outcome?.workflowId).filter((w): w is string => Boolean(w)))].join(', ');
      const failed = outcomes.filter((o) => o.outcome === undefined || o.outcome.kind !== 'applied');
      const name = (rule: StoredObject) => `FirewallRule ${rule.metadata.namespace}/${rule.metadata.name}`;
      if (failed.length === 0) {
        return { kind: 'applied', changeId, workflowId, message: `re-applied ${outcomes.map((o) => `${name(o.rule)} (change ${o.outcome?.changeId})`).join(', ')}` };
      }
      const first = failed[0]?.outcome;
      const type = first && first.kind !== 'applied' ? first.type : 'Failed';
      const message = failed.map((o) => `${name(o.rule)}: ${o.outcome === undefined ? 'not re-applied (it is being deleted, or the controller stopped)' : o.outcome.kind !== 'applied' ? `${o.outcome.type}: ${o.outcome.message}` : ''}`).join('; ');
      return { kind: 'failed', changeId, workflowId, type, message: `${failed.length} of ${outcomes.length} rule(s) naming the zone did not apply: ${message}` };
    },
    async cleanup(zone: StoredObject, starting: (changeId: string) => void): Promise<ChangeOutcome> {
      const changeId = objectChangeId('fwz', zone, 'delete');
      const rules = naming(zone);
      if (rules.length > 0) {
        return refused(changeId, ZONE_IN_USE, `deletion waits: ${rules.map((r) => `FirewallRule ${r.rule.metadata.namespace}/${r.rule.metadata.name} names it (${r.fields.join(', ')})`).join('; ')}; change or delete those rules first`);
      }
      starting(changeId);
      return { kind: 'applied', changeId, workflowId: '', message: 'no FirewallRule names the zone; it made no object of its own', unchanged: true };
    },
  };
}
