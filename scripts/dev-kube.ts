/**
 * The Kubernetes part of `npm start -- --kube`: the embedded etcd + kube-apiserver
 * (k8s/harness.ts) with fos1's CRDs (deploy/crds) and Cilium's (../shared/data/cilium/crds)
 * installed, a kubeconfig for it at `<state dir>/kubeconfig` (mode 0600: it holds the admin
 * token), and fos1's controllers (controllers/manager.ts) campaigning for their Lease in
 * `fos1-system`. The controllers sign their changes with a key of their own,
 * `<state dir>/controller-identity.key` (created on first start, mode 0600; the cluster worker
 * of `npm start` verifies with it), so their audit records say `actorVerified: true`. The apiserver's data is thrown away on exit (etcd runs in a temporary folder);
 * the Temporal history of the changes the controllers started stays.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import { stringify as toYaml } from 'yaml';
import { createIdentityKeyFile, loadIdentityKey } from '../auth/identity-assertion';
import { ControllerManager } from '../controllers/manager';
import { startKubeApiServer, type KubeApiServer } from '../k8s/harness';
import { etcdPath, kubeApiserverPath, kubectlPath } from '../k8s/paths';
import { sharedDataDir } from './paths';

/** The running apiserver and controllers; `stop()` ends both. */
export interface DevKube {
  kube: KubeApiServer;
  kubeconfig: string;
  /** The controllers' identity key: the controllers sign with it, the cluster worker verifies with it. */
  controllerIdentityKey: Buffer;
  startControllers(temporal: Client): ControllerManager;
  stop(): Promise<void>;
}

/** Namespace of the controllers' Lease (and a place for the operator's objects). */
export const DEV_KUBE_NAMESPACE = 'fos1-system';

/** Starts the apiserver with the CRDs and writes the kubeconfig; refuses with the fix when a binary is missing. */
export async function startDevKube(stateDir: string, logger: Logger): Promise<DevKube> {
  const missing = [etcdPath(), kubeApiserverPath(), kubectlPath()].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`--kube needs ${missing.join(', ')}: run \`bash scripts/bootstrap.sh\` once (it builds etcd, kube-apiserver and kubectl)`);
  const yaml = (dir: string) => readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => join(dir, f));
  const ciliumCrds = join(sharedDataDir(), 'cilium', 'crds');
  if (!existsSync(ciliumCrds)) throw new Error(`--kube: Cilium's CRDs not found at ${ciliumCrds}`);
  const kube = await startKubeApiServer({ crdFiles: [...yaml(ciliumCrds), ...yaml(join(__dirname, '..', 'deploy', 'crds'))] });
  await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: DEV_KUBE_NAMESPACE } });
  const kubeconfig = join(stateDir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    toYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fos1-dev', cluster: { server: kube.connection.server, 'certificate-authority-data': Buffer.from(kube.connection.caPem ?? '').toString('base64') } }],
      users: [{ name: 'fos1-admin', user: { token: kube.connection.token } }],
      contexts: [{ name: 'fos1-dev', context: { cluster: 'fos1-dev', user: 'fos1-admin', namespace: DEV_KUBE_NAMESPACE } }],
      'current-context': 'fos1-dev',
    }),
    { mode: 0o600 },
  );
  logger.info({ server: kube.connection.server, kubeconfig, kubectl: kubectlPath() }, `kube-apiserver ready with fos1's and Cilium's CRDs — try: KUBECONFIG=${kubeconfig} ${kubectlPath()} get crds`);
  const controllerKeyFile = join(stateDir, 'controller-identity.key');
  if (createIdentityKeyFile(controllerKeyFile)) logger.info({ controllerKeyFile }, 'created the controllers\' identity key (they sign the changes they start; the cluster worker checks it)');
  const controllerIdentityKey = loadIdentityKey(controllerKeyFile);
  let manager: ControllerManager | undefined;
  return {
    kube,
    kubeconfig,
    controllerIdentityKey,
    startControllers(temporal) {
      manager = new ControllerManager({
        kube: kube.client,
        temporal,
        logger: logger.child({ component: 'controllers' }),
        lease: { namespace: DEV_KUBE_NAMESPACE, name: 'fos1-controller', identity: `${hostname()}-${process.pid}` },
        bakeSeconds: 0,
        identityKey: controllerIdentityKey,
      });
      manager.start();
      return manager;
    },
    async stop() {
      await manager?.stop({ release: true });
      await kube.stop();
    },
  };
}
