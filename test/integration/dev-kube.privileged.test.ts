/**
 * `npm start -- --kube`'s Kubernetes part (scripts/dev-kube.ts) on real parts: the embedded
 * kube-apiserver with the CRDs, the kubeconfig, and the controllers' own identity key in the
 * state directory — created once (mode 0600), the same key on the next start — which the
 * controllers sign with. A NetworkInterface applied there becomes a change on a sandbox node
 * whose audit records say `fos1-controller`, verified by a cluster worker holding that key.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import type { Condition } from '../../controllers/object-controller';
import type { ControllerManager } from '../../controllers/manager';
import { changeWorkflowId } from '../../model/naming';
import type { ChangeStatus } from '../../workflows/change';
import { DEV_KUBE_NAMESPACE, startDevKube, type DevKube } from '../../scripts/dev-kube';
import { eventually } from '../helpers/eventually';
import { createTestFleet, startFleetWorkers, type FleetWorkers, type TestFleet } from '../helpers/fleet';
import { describeKube } from '../helpers/kube';
import { startTemporal } from '../helpers/temporal';

describeKube('npm start --kube: the controllers sign with their own key from the state directory', ['root', 'netns', 'temporal-cli'], () => {
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  let stateDir: string;
  let devKube: DevKube | undefined;
  let env: TestWorkflowEnvironment;
  let fleet: TestFleet;
  let workers: FleetWorkers | undefined;
  let manager: ControllerManager | undefined;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'fos1-dev-kube-'));
    [env, fleet] = await Promise.all([startTemporal(), createTestFleet(1)]);
  }, 240_000);

  afterAll(async () => {
    await manager?.stop({ release: true });
    await devKube?.stop();
    await workers?.stop();
    fleet?.destroy();
    await env?.teardown();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }, 120_000);

  it('creates controller-identity.key once (0600) and keeps it across starts; a NetworkInterface change is recorded actorVerified', async () => {
    const keyFile = join(stateDir, 'controller-identity.key');
    const first = await startDevKube(stateDir, logger);
    const created = readFileSync(keyFile, 'utf8');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, 'kubeconfig')).mode & 0o777).toBe(0o600);
    expect(first.controllerIdentityKey).toEqual(Buffer.from(created.trim(), 'base64'));
    await first.stop();
    // The next start reuses the key: the cluster worker configured with it keeps verifying.
    devKube = await startDevKube(stateDir, logger);
    expect(readFileSync(keyFile, 'utf8')).toBe(created);
    expect(devKube.controllerIdentityKey).toEqual(first.controllerIdentityKey);

    workers = await startFleetWorkers(env, fleet, { identityKeys: { controller: devKube.controllerIdentityKey } });
    manager = devKube.startControllers(env.client);
    await eventually(() => manager!.elector.isLeader, (l) => l, 'the dev controllers lead', 30_000, 100);
    const node = fleet.nodes[0]!;
    await devKube.kube.client.create({ apiVersion: 'network.fos1.io/v1alpha1', kind: 'NetworkInterface', metadata: { name: 'dev-lan1', namespace: DEV_KUBE_NAMESPACE }, spec: { node: node.name, name: 'lan1', type: 'veth', addresses: ['10.204.0.1/24'] } });
    const get = () => devKube!.kube.client.get({ apiVersion: 'network.fos1.io/v1alpha1', kind: 'NetworkInterface', namespace: DEV_KUBE_NAMESPACE, name: 'dev-lan1' });
    const applied = await eventually(get, (o) => ((o?.status?.conditions ?? []) as Condition[]).some((c) => c.type === 'Applied' && c.observedGeneration === 1), 'dev-lan1 status for generation 1', 90_000, 200);
    expect(((applied?.status?.conditions ?? []) as Condition[]).find((c) => c.type === 'Applied')).toMatchObject({ status: 'True' });
    const addresses = (JSON.parse(execFileSync('ip', ['-n', node.netns, '-j', 'addr', 'show', 'dev', 'lan1']).toString()) as { addr_info: { local: string; prefixlen: number; scope: string }[] }[])[0]!.addr_info;
    expect(addresses.filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`)).toEqual(['10.204.0.1/24']);
    const status = (await env.client.workflow.getHandle(String(applied?.status?.workflowId)).result()) as ChangeStatus;
    const changeWide = status.audit.filter((r) => r.node === undefined);
    expect(changeWide.length).toBeGreaterThan(0);
    for (const r of changeWide) expect(r).toMatchObject({ actor: 'fos1-controller', actorVerified: true });
    expect(applied?.status?.workflowId).toBe(changeWorkflowId(status.changeId ?? ''));

    // Clean up through the controller (the finalizer's change clears the addresses).
    await devKube.kube.client.delete({ apiVersion: 'network.fos1.io/v1alpha1', kind: 'NetworkInterface', namespace: DEV_KUBE_NAMESPACE, name: 'dev-lan1' });
    await eventually(get, (o) => o === undefined, 'dev-lan1 cleaned up', 90_000, 200);
  });
});
