/**
 * Pinned versions and cache paths of the Kubernetes tools fos1 builds from the Go module proxy
 * (scripts/bootstrap.d/50-kube.sh builds exactly these; keep the three places in step).
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

/** Path of the etcd binary. */
export function etcdPath(): string {
  return join(cacheDir(), `etcd-${ETCD_VERSION}`, 'etcd');
}
