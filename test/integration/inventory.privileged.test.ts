/**
 * Where rollouts find nodes: the inventory file of the embedded default (YAML or JSON, errors
 * naming the field, never echoing the file) and Kubernetes Nodes labelled fos1.io/router=true
 * on a real kube-apiserver, labels copied.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { createInventoryActivities } from '../../activities/inventory';
import { KubeClient } from '../../k8s/client';
import { readManifests, startKubeApiServer, type KubeApiServer } from '../../k8s/harness';
import { selectNodes } from '../../model/inventory';
import { describeKube, FOS1_DEPLOY_DIR } from '../helpers/kube';

describe('inventory file', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'fos1-inventory-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const list = (path: string) => createInventoryActivities({ kind: 'file', path }).listInventory();

  it('reads YAML and JSON, sorted by name, re-read on every call', async () => {
    const path = write('fleet.yaml', '- name: router-2\n  labels: { zone: b }\n- name: router-1\n  labels:\n    zone: a\n    canary: "true"\n');
    expect(await list(path)).toEqual([
      { name: 'router-1', labels: { zone: 'a', canary: 'true' } },
      { name: 'router-2', labels: { zone: 'b' } },
    ]);
    write('fleet.yaml', JSON.stringify([{ name: 'router-3' }]));
    expect(await list(path)).toEqual([{ name: 'router-3', labels: {} }]);
  });

  it('refuses a bad file naming the field, without echoing its content', async () => {
    const path = write('bad.yaml', '- name: router-1\n- name: Secret_Name\n  labels: { zone: "a b" }\n');
    const err = (await list(path).catch((e: unknown) => e)) as { type: string; message: string };
    expect(err).toMatchObject({ type: 'InvalidInventory' });
    expect(err.message).toContain('[1].name: must be a node name');
    expect(err.message).toContain('[1].labels.zone: must be a Kubernetes label value');
    expect(err.message).not.toContain('Secret_Name');
    expect(await list(write('notyaml.yaml', 'a: [b')).catch((e: unknown) => e)).toMatchObject({ type: 'InvalidInventory' });
    expect(await list(join(dir, 'missing.yaml')).catch((e: unknown) => e)).toMatchObject({ type: 'InventoryUnavailable', message: expect.stringContaining('ENOENT') });
  });

  it('says what to configure when there is no inventory', async () => {
    await expect(createInventoryActivities({ kind: 'none' }).listInventory()).rejects.toMatchObject({ type: 'InventoryUnavailable', message: expect.stringContaining('FOS1_INVENTORY_FILE') });
  });
});

describeKube('inventory from Kubernetes Nodes', [], () => {
  let kube: KubeApiServer;

  beforeAll(async () => {
    kube = await startKubeApiServer();
    const node = (name: string, labels: Record<string, string>) => kube.client.create({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels } });
    await node('edge-b', { 'fos1.io/router': 'true', 'topology.kubernetes.io/zone': 'b', 'fos1.io/site': 'ams' });
    await node('edge-a', { 'fos1.io/router': 'true', 'topology.kubernetes.io/zone': 'a', 'fos1.io/site': 'ams' });
    await node('worker-1', { 'topology.kubernetes.io/zone': 'a' });
    await node('retired', { 'fos1.io/router': 'false' });
  });

  afterAll(async () => {
    await kube?.stop();
  });

  it('lists the Nodes labelled fos1.io/router=true with all their labels, sorted', async () => {
    const nodes = await createInventoryActivities({ kind: 'kubernetes', kube: kube.client }).listInventory();
    expect(nodes.map((n) => n.name)).toEqual(['edge-a', 'edge-b']);
    expect(nodes[0]?.labels).toEqual({ 'fos1.io/router': 'true', 'topology.kubernetes.io/zone': 'a', 'fos1.io/site': 'ams' });
    expect(selectNodes(nodes, { matchLabels: { 'topology.kubernetes.io/zone': 'b' } }).map((n) => n.name)).toEqual(['edge-b']);
  });

  it('refuses a labelled Node whose name cannot be a fos1 target, naming it', async () => {
    await kube.client.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'ip-10-0-0-1.ec2.internal', labels: { 'fos1.io/router': 'true' } } });
    try {
      await expect(createInventoryActivities({ kind: 'kubernetes', kube: kube.client }).listInventory()).rejects.toMatchObject({
        type: 'InvalidInventory',
        message: expect.stringContaining('Node ip-10-0-0-1.ec2.internal cannot be a fos1 target'),
      });
    } finally {
      await kube.client.delete({ apiVersion: 'v1', kind: 'Node', name: 'ip-10-0-0-1.ec2.internal' });
    }
  });

  it("works with the cluster worker's ServiceAccount under deploy/rbac.yaml (fos1-inventory: get, list nodes)", async () => {
    for (const m of readManifests([join(FOS1_DEPLOY_DIR, 'rbac.yaml')])) await kube.client.apply(m, { fieldManager: 'fos1-test' });
    const core = kube.client.config.makeApiClient(k8s.CoreV1Api);
    // A token as the kubelet projects it (TokenRequest; empty audiences = the apiserver's own).
    const as = async (name: string) => {
      const request = await core.createNamespacedServiceAccountToken({ name, namespace: 'fos1-system', body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [], expirationSeconds: 600 } } });
      return new KubeClient({ ...kube.connection, token: request.status?.token ?? '' });
    };
    const asWorker = await as('fos1-cluster-worker');
    expect((await createInventoryActivities({ kind: 'kubernetes', kube: asWorker }).listInventory()).map((n) => n.name)).toEqual(['edge-a', 'edge-b']);
    // The controller's ServiceAccount has no such grant: the listing is refused, not empty.
    const asController = await as('fos1-controller');
    await expect(createInventoryActivities({ kind: 'kubernetes', kube: asController }).listInventory()).rejects.toMatchObject({ type: 'InventoryUnavailable', message: expect.stringContaining('403') });
  });

  it('reports an unreachable apiserver as unavailable (retryable)', async () => {
    const dead = new KubeClient({ ...kube.connection, server: 'https://127.0.0.1:9' });
    await expect(createInventoryActivities({ kind: 'kubernetes', kube: dead }).listInventory()).rejects.toMatchObject({ type: 'InventoryUnavailable' });
  });
});
