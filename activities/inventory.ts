/**
 * The cluster activity `listInventory`: the router nodes a rollout can target, with labels.
 *
 * With Kubernetes configured: the Nodes labelled `fos1.io/router=true`, each with all its
 * labels (site, zone, role... as the cluster's operators set them). On the embedded default:
 * a YAML or JSON file (FOS1_INVENTORY_FILE), a list of `{ name, labels }`, read on every call
 * so an edit takes effect with the next rollout. Either way the answer is sorted by name.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { failure, FailureType } from '../model/failures';
import { parseInventory, ROUTER_NODE_LABEL, type InventoryActivities, type InventoryNode } from '../model/inventory';
import type { KubeClient } from '../k8s/client';

/** Where the inventory comes from. */
export type InventorySource =
  | { kind: 'file'; path: string }
  /** Kubernetes Nodes matching `labelSelector` (default `fos1.io/router=true`). */
  | { kind: 'kubernetes'; kube: KubeClient; labelSelector?: string }
  | { kind: 'none' };

/** Reads the inventory file; errors name the file's field, never its content. */
export async function readInventoryFile(path: string): Promise<InventoryNode[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw failure(FailureType.InventoryUnavailable, `inventory file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    const line = (err as { linePos?: { line: number }[] }).linePos?.[0]?.line;
    throw failure(FailureType.InvalidInventory, `inventory file ${path} is not YAML or JSON${line ? ` (line ${line})` : ''}`);
  }
  const parsed = parseInventory(doc ?? []);
  if (!parsed.ok) throw failure(FailureType.InvalidInventory, `inventory file ${path}: ${parsed.issues.map((i) => `${i.field || '(top level)'}: ${i.message}`).join('; ')}`);
  return sortByName(parsed.nodes);
}

/** Reads the router Nodes from Kubernetes, labels copied. */
export async function readKubernetesInventory(kube: KubeClient, labelSelector = `${ROUTER_NODE_LABEL}=true`): Promise<InventoryNode[]> {
  let items;
  try {
    ({ items } = await kube.list('v1', 'Node', { labelSelector }));
  } catch (err) {
    throw failure(FailureType.InventoryUnavailable, `listing Nodes (${labelSelector}) failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = parseInventory(items.map((n) => ({ name: n.metadata.name, labels: n.metadata.labels ?? {} })));
  if (!parsed.ok) {
    const issue = parsed.issues[0];
    const index = Number(/^\[(\d+)\]/.exec(issue?.field ?? '')?.[1]);
    const name = Number.isInteger(index) ? items[index]?.metadata.name : undefined;
    throw failure(FailureType.InvalidInventory, `Node ${name ?? '?'} cannot be a fos1 target: ${issue?.field}: ${issue?.message}`);
  }
  return sortByName(parsed.nodes);
}

function sortByName(nodes: InventoryNode[]): InventoryNode[] {
  return [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Builds the inventory activity for a source. */
export function createInventoryActivities(source: InventorySource): InventoryActivities {
  return {
    async listInventory() {
      switch (source.kind) {
        case 'file':
          return readInventoryFile(source.path);
        case 'kubernetes':
          return readKubernetesInventory(source.kube, source.labelSelector);
        case 'none':
          throw failure(FailureType.InventoryUnavailable, 'no inventory: set FOS1_INVENTORY_FILE, or FOS1_KUBECONFIG for Kubernetes Nodes labelled fos1.io/router=true');
      }
    },
  };
}
