/**
 * Pinned versions and cache paths of the Kubernetes tools fos1 builds from the Go module proxy
 * (scripts/bootstrap.d/50-kube.sh and 55-helm.sh build exactly these; keep the places in step).
 */
import { join } from 'node:path';
import { cacheDir } from '../scripts/paths';

/** kube-apiserver version (k8s.io/kubernetes; staging modules pinned to the matching v0.x). */
export const KUBE_VERSION = 'v1.35.4';
/** etcd version (go.etcd.io/etcd/server/v3). */
export const ETCD_VERSION = 'v3.6.5';

/** Path of the kube-apiserver binary. */
export function kubeApiserverPath(): string {
  return join(cacheDir(), `kube-apiserver-${KUBE_VERSION}`, 'kube-apiserver');
}

/** Path of the kubectl binary (built at {@link KUBE_VERSION} from k8s.io/kubectl). */
export function kubectlPath(): string {
  return join(cacheDir(), `kubectl-${KUBE_VERSION}`, 'kubectl');
}

/** Path of the etcd binary. */
export function etcdPath(): string {
  return join(cacheDir(), `etcd-${ETCD_VERSION}`, 'etcd');
}

/** Helm version (helm.sh/helm/v3); scripts/bootstrap.d/55-helm.sh builds exactly this one. */
export const HELM_VERSION = 'v3.22.0';

/** Path of the helm binary. */
export function helmPath(): string {
  return join(cacheDir(), `helm-${HELM_VERSION}`, 'helm');
}
