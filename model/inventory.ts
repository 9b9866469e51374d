/**
 * The fleet inventory: which router nodes exist and their labels (site, zone, role...),
 * and label selectors with Kubernetes' semantics (matchLabels AND matchExpressions with
 * In / NotIn / Exists / DoesNotExist) to pick waves from it.
 *
 * Pure code: workflows import it (no Node built-ins here). The cluster activity
 * `listInventory` (activities/inventory.ts) reads Kubernetes Nodes with
 * {@link ROUTER_NODE_LABEL} when a cluster is configured, a file otherwise.
 */
import { z } from 'zod';
import { formatPath } from './issue-path';

/** The label that marks a Kubernetes Node as a fos1 router (value `true`). */
export const ROUTER_NODE_LABEL = 'fos1.io/router';

/** DNS-1123 label: node names (as in change requests). */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Kubernetes label key: optional DNS prefix and `/`, then a 1–63 character name. */
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** Kubernetes label value: empty, or 1–63 characters. */
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export const labelKeySchema = z
  .string()
  .max(316, 'must be at most 316 characters')
  .regex(LABEL_KEY, 'must be a Kubernetes label key like "site" or "topology.kubernetes.io/zone"');
export const labelValueSchema = z.string().regex(LABEL_VALUE, 'must be a Kubernetes label value: at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit');

/** A label map; a bad key is reported at its own path (`labels["bad key"]`), which a record's key schema would not do. */
export const labelsSchema = z.record(z.string(), labelValueSchema).superRefine((labels, ctx) => {
  for (const key of Object.keys(labels)) {
    const r = labelKeySchema.safeParse(key);
    if (!r.success) ctx.addIssue({ code: 'custom', path: [key], message: `key: ${r.error.issues[0]?.message ?? 'invalid'}` });
  }
});

/** One node of the inventory. */
export const inventoryNodeSchema = z
  .object({
    name: z.string().regex(NODE_NAME, 'must be a node name: lowercase letters, digits and "-" (DNS-1123 label)'),
    labels: labelsSchema.default({}),
  })
  .strict();

/** The inventory file: a list of nodes, names unique. */
export const inventorySchema = z.array(inventoryNodeSchema).superRefine((nodes, ctx) => {
  const seen = new Set<string>();
  for (const [i, node] of nodes.entries()) {
    if (seen.has(node.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `"${node.name}" is listed twice` });
    seen.add(node.name);
  }
});

export type InventoryNode = z.output<typeof inventoryNodeSchema>;

/** One requirement of a selector (Kubernetes' LabelSelectorRequirement). */
export const selectorRequirementSchema = z
  .object({
    key: labelKeySchema,
    operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist'], { error: 'must be In, NotIn, Exists or DoesNotExist' }),
    values: z.array(labelValueSchema).optional(),
  })
  .strict()
  .superRefine((req, ctx) => {
    const n = req.values?.length ?? 0;
    if ((req.operator === 'In' || req.operator === 'NotIn') && n === 0) ctx.addIssue({ code: 'custom', path: ['values'], message: `must list at least one value for ${req.operator}` });
    if ((req.operator === 'Exists' || req.operator === 'DoesNotExist') && n > 0) ctx.addIssue({ code: 'custom', path: ['values'], message: `must be empty for ${req.operator}` });
  });

/** A label selector (Kubernetes' LabelSelector); an empty selector matches every node. */
export const labelSelectorSchema = z
  .object({
    matchLabels: labelsSchema.default({}),
    matchExpressions: z.array(selectorRequirementSchema).default([]),
  })
  .strict();

export type LabelSelector = z.output<typeof labelSelectorSchema>;
export type LabelSelectorInput = z.input<typeof labelSelectorSchema>;
export type SelectorRequirement = z.output<typeof selectorRequirementSchema>;

/** Whether `labels` satisfy `selector` (all matchLabels and all matchExpressions, as Kubernetes does). */
export function matchesSelector(selector: LabelSelectorInput, labels: Readonly<Record<string, string>>): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, req.key);
    const values = req.values ?? [];
    switch (req.operator) {
      case 'In':
        if (!has || !values.includes(labels[req.key] as string)) return false;
        break;
      case 'NotIn':
        // Kubernetes: a node without the key satisfies NotIn.
        if (has && values.includes(labels[req.key] as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** The nodes of `inventory` that `selector` matches, in inventory order. */
export function selectNodes(inventory: readonly InventoryNode[], selector: LabelSelectorInput): InventoryNode[] {
  return inventory.filter((node) => matchesSelector(selector, node.labels));
}

/** Parses an inventory (from a file or a test); issues name the field (`[2].labels`). */
export function parseInventory(input: unknown): { ok: true; nodes: InventoryNode[] } | { ok: false; issues: { field: string; message: string }[] } {
  const parsed = inventorySchema.safeParse(input);
  if (parsed.success) return { ok: true, nodes: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => ({ field: formatPath(i.path), message: i.message })) };
}

/** The cluster activity that lists the fleet. */
export interface InventoryActivities {
  /** Every router node with its labels, sorted by name. */
  listInventory(): Promise<InventoryNode[]>;
}
