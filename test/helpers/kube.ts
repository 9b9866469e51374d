/**
 * A real kube-apiserver + etcd for integration tests (k8s/harness.ts), with Cilium's CRDs from
 * ../shared/data/cilium/crds and fos1's own from deploy/crds installed.
 *
 * {@link describeKube} runs a suite only when the binaries scripts/bootstrap.d/50-kube.sh
 * builds are present (and the other capabilities it is given): otherwise it skips and says
 * why — except under CI=true, where a missing binary is a failure, like describePrivileged.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startKubeApiServer, type KubeApiServer } from '../../k8s/harness';
import { etcdPath, kubeApiserverPath } from '../../k8s/paths';
import { describePrivileged, missingReason, type Capability } from './capabilities';
import { sharedData } from './shared-data';

/** Cilium's CRDs (shared test data, read in place, never copied). */
export const CILIUM_CRD_DIR = sharedData('cilium', 'crds');
/** Cilium's example policies. */
export const CILIUM_EXAMPLES_DIR = sharedData('cilium', 'examples');
/** fos1's CRDs. */
export const FOS1_CRD_DIR = resolve(__dirname, '../../deploy/crds');
/** fos1's other manifests (RBAC, controller Deployment). */
export const FOS1_DEPLOY_DIR = resolve(__dirname, '../../deploy');

/** Why the kube binaries are unusable, or null. */
export function kubeMissingReason(): string | null {
  const missing = [kubeApiserverPath(), etcdPath()].filter((p) => !existsSync(p));
  if (missing.length > 0) return `not built: ${missing.join(', ')} (scripts/bootstrap.sh builds them)`;
  if (!existsSync(CILIUM_CRD_DIR)) return `Cilium CRDs not found at ${CILIUM_CRD_DIR}`;
  return null;
}

/** `describe` that needs the kube binaries (plus `needs`); skips with a reason, fails under CI=true. */
export function describeKube(name: string, needs: Capability[], body: () => void): void {
  const why = kubeMissingReason();
  if (why === null) {
    if (needs.length > 0) describePrivileged(name, needs, body);
    else describe(name, body);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('has the capabilities it needs', () => {
        throw new Error(`CI=true and a capability is missing — kube-apiserver/etcd: ${why}`);
      });
    });
    return;
  }
  const others = needs.map((c) => missingReason(c)).filter((r) => r !== null);
  console.warn(`SKIPPED "${name}" — kube-apiserver/etcd: ${why}${others.length ? `; ${others.join('; ')}` : ''}`);
  const skipped = describe.skip;
  skipped(name, body);
}

/** YAML files directly in `dir` (non-recursive, like envtest's CRDDirectoryPaths). */
export function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => join(dir, f));
}

/** Starts the apiserver with Cilium's and fos1's CRDs installed. */
export function startKubeWithCrds(): Promise<KubeApiServer> {
  return startKubeApiServer({ crdFiles: [...yamlFiles(CILIUM_CRD_DIR), ...yamlFiles(FOS1_CRD_DIR)] });
}
