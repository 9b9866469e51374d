/**
 * The Helm chart (deploy/helm/fos1) with the real helm (built by scripts/bootstrap.d/55-helm.sh)
 * and the real kube-apiserver: `helm lint` passes; `helm template` renders with the default
 * values and with ci/tls-servicemonitor-values.yaml (mutual TLS to Temporal, a ServiceMonitor);
 * every rendered object is accepted by a server-side dry-run apply (the ServiceMonitor excepted:
 * prometheus-operator's CRD is not in the test apiserver, so it is checked by shape only); the
 * node worker's DaemonSet grants no capability beyond NET_ADMIN, BPF and PERFMON (SYS_ADMIN only
 * when nodeWorker.sysAdmin asks), drops ALL, and runs no privileged container; the RBAC is
 * deploy/rbac.yaml's; the ingest follows DPIProfiles with get/list/watch and the status update
 * only; each identity key is mounted only into the components that sign or check with it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import type { KubeApiServer } from '../../k8s/harness';
import { readManifests } from '../../k8s/harness';
import { helmPath, KUBE_VERSION } from '../../k8s/paths';
import { validateManifests } from '../../k8s/validate';
import type { KubeObject } from '../../model/firewall-translate';
import { parseQuarantineConfig } from '../../model/quarantine';
import { parseGuardConfig } from '../../model/enforcement-guard';
import { describeKube, FOS1_CRD_DIR, FOS1_DEPLOY_DIR, startKubeWithCrds, yamlFiles } from '../helpers/kube';

const CHART = resolve(__dirname, '../../deploy/helm/fos1');
const CI_VALUES = join(CHART, 'ci/tls-servicemonitor-values.yaml');
const NAMESPACE = 'fos1-system';
const ALLOWED_CAPS = ['NET_ADMIN', 'BPF', 'PERFMON'];

/** A rendered object, with the top-level fields of the kinds the chart has. */
type Doc = KubeObject & { rules?: unknown; roleRef?: unknown; subjects?: unknown; automountServiceAccountToken?: boolean; data?: Record<string, string> };

const run = promisify(execFile);
let helmHome: string;

async function helm(args: string[]): Promise<{ stdout: string; stderr: string }> {
  // Its own config/cache/data folders: nothing of the user's helm setup leaks in or out.
  const env = { PATH: process.env.PATH, HOME: helmHome, HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data') };
  return run(helmPath(), args, { env, maxBuffer: 16 * 1024 * 1024 });
}

/** `helm template` of the chart, parsed; `args` are extra flags (-f, --set). */
async function render(args: string[] = []): Promise<Doc[]> {
  const { stdout } = await helm(['template', 'fos1', CHART, '--namespace', NAMESPACE, '--kube-version', KUBE_VERSION, ...args]);
  return parseAllDocuments(stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`helm template printed invalid YAML: ${d.errors[0]?.message}`);
      return d.toJS() as Doc | null;
    })
    .filter((o): o is Doc => o !== null);
}

/** Why `helm template` with `args` failed (its stderr), or null if it rendered. */
async function renderFailure(args: string[]): Promise<string | null> {
  try {
    await render(args);
    return null;
  } catch (err) {
    return String((err as { stderr?: string }).stderr ?? err);
  }
}

const find = (objects: Doc[], kind: string, name: string): Doc => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} rendered (have: ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')})`);
  return o;
};

interface Container {
  name: string;
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  securityContext?: { privileged?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { add?: string[]; drop?: string[] }; runAsUser?: number };
  readinessProbe?: { httpGet?: { host?: string; path: string; port: number | string } };
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
}
interface PodSpec {
  hostNetwork?: boolean;
  automountServiceAccountToken?: boolean;
  serviceAccountName?: string;
  securityContext?: { runAsNonRoot?: boolean };
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; hostPath?: { path: string }; secret?: { secretName: string }; configMap?: { name: string } }[];
}
const podSpec = (o: KubeObject): PodSpec => (o.spec as { template: { spec: PodSpec } }).template.spec;
const allContainers = (o: KubeObject): Container[] => [...(podSpec(o).initContainers ?? []), ...podSpec(o).containers];
const envOf = (c: Container, name: string) => c.env?.find((e) => e.name === name);
const workloads = (objects: KubeObject[]) => objects.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet');

/** Dry-runs every object on the apiserver; returns the rejections (empty = all accepted). */
async function dryRunAll(kube: KubeApiServer, objects: KubeObject[]): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'fos1-helm-render-'));
  try {
    const file = join(dir, 'rendered.yaml');
    writeFileSync(file, objects.map((o) => JSON.stringify(o)).join('\n---\n'));
    const verdicts = await validateManifests(kube.client, [file], { defaultNamespace: NAMESPACE, namespacedKinds: new Set(), fieldManager: 'fos1-helm-test', ensureNamespaces: true });
    expect(verdicts).toHaveLength(objects.length);
    return verdicts.filter((v) => v.verdict === 'rejected').map((v) => `${v.object}: ${v.reason}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describeKube('Helm chart deploy/helm/fos1', ['helm'], () => {
  let kube: KubeApiServer;
  let defaults: Doc[];
  let withTls: Doc[];

  beforeAll(async () => {
    helmHome = mkdtempSync(join(tmpdir(), 'fos1-helm-home-'));
    [kube, defaults, withTls] = await Promise.all([startKubeWithCrds(), render(), render(['-f', CI_VALUES])]);
  }, 180_000);
  afterAll(async () => {
    await kube?.stop();
    if (helmHome) rmSync(helmHome, { recursive: true, force: true });
  });

  it('passes helm lint --strict, with the default values and with the TLS + ServiceMonitor values', async () => {
    for (const args of [[], ['-f', CI_VALUES]]) {
      const { stdout } = await helm(['lint', '--strict', CHART, '--namespace', NAMESPACE, '--kube-version', KUBE_VERSION, ...args]);
      expect(stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(stdout).not.toMatch(/\[(ERROR|WARNING)\]/);
    }
  });

  it('renders every component with the default values, and no ServiceMonitor', () => {
    const kinds = defaults.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(kinds).toEqual(
      [
        'ClusterRole/fos1-approval-reader',
        'ClusterRole/fos1-controller',
        'ClusterRole/fos1-dpi-profile-reader',
        'ClusterRole/fos1-inventory',
        'ClusterRole/fos1-policy-applier',
        'ClusterRole/fos1-quarantine',
        'ClusterRoleBinding/fos1-approval-reader',
        'ClusterRoleBinding/fos1-controller',
        'ClusterRoleBinding/fos1-dpi-profile-reader',
        'ClusterRoleBinding/fos1-inventory',
        'ClusterRoleBinding/fos1-policy-applier',
        'ClusterRoleBinding/fos1-quarantine',
        'DaemonSet/fos1-ingest',
        'DaemonSet/fos1-node-worker',
        'Role/fos1-controller-leader-election',
        'RoleBinding/fos1-controller-leader-election',
        'Deployment/fos1-api',
        'Deployment/fos1-cluster-worker',
        'Deployment/fos1-controller',
        'Service/fos1-api',
        'ServiceAccount/fos1-api',
        'ServiceAccount/fos1-cluster-worker',
        'ServiceAccount/fos1-controller',
        'ServiceAccount/fos1-ingest',
        'ServiceAccount/fos1-node-worker',
        'ValidatingAdmissionPolicy/fos1-cilium-owned-only',
        'ValidatingAdmissionPolicy/fos1-host-firewall-zones',
        'ValidatingAdmissionPolicy/fos1-quarantine-label-only',
        'ValidatingAdmissionPolicyBinding/fos1-cilium-owned-only',
        'ValidatingAdmissionPolicyBinding/fos1-host-firewall-zones',
        'ValidatingAdmissionPolicyBinding/fos1-quarantine-label-only',
      ].sort(),
    );
    for (const o of defaults.filter((x) => !x.kind.startsWith('Cluster') && !x.kind.startsWith('ValidatingAdmissionPolicy'))) expect(o.metadata.namespace).toBe(NAMESPACE);
  });

  it('installs exactly the CRDs of deploy/crds, and the apiserver accepts them', async () => {
    // (`helm show crds` prints the files back to back without `---`; template keeps them apart.)
    const crds = (await render(['--include-crds'])).filter((o) => o.kind === 'CustomResourceDefinition');
    expect(crds.map((c) => c.metadata.name).sort()).toEqual(readManifests(yamlFiles(FOS1_CRD_DIR)).map((c) => c.metadata.name).sort());
    expect(crds).toHaveLength(6);
    expect(await dryRunAll(kube, crds)).toEqual([]);
  });

  it('has every object of the default render accepted by a server-side dry run', async () => {
    expect(await dryRunAll(kube, defaults)).toEqual([]);
  });

  it('has every object of the TLS + ServiceMonitor render accepted (the ServiceMonitor checked by shape)', async () => {
    const serviceMonitor = find(withTls, 'ServiceMonitor', 'fos1');
    expect(await dryRunAll(kube, withTls.filter((o) => o !== serviceMonitor))).toEqual([]);
    // Without prometheus-operator's CRD the apiserver has no such kind; its shape instead:
    // it selects the metrics Service, whose port it names, in the release namespace.
    expect(serviceMonitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(serviceMonitor.metadata.labels).toMatchObject({ release: 'prometheus' });
    const spec = serviceMonitor.spec as { selector: { matchLabels: Record<string, string> }; namespaceSelector: { matchNames: string[] }; endpoints: { port: string; path: string }[] };
    const metrics = find(withTls, 'Service', 'fos1-metrics');
    expect(metrics.metadata.labels).toMatchObject(spec.selector.matchLabels);
    expect(spec.namespaceSelector.matchNames).toEqual([NAMESPACE]);
    const ports = (metrics.spec as { ports: { name: string }[] }).ports.map((p) => p.name);
    expect(spec.endpoints.map((e) => [e.port, e.path])).toEqual([['metrics', '/metrics']]);
    expect(ports).toContain('metrics');
    // The Service's selector picks every fos1 pod of the release, and each one declares the port.
    for (const w of workloads(withTls)) {
      const template = (w.spec as { template: { metadata: { labels: Record<string, string> } } }).template;
      expect(template.metadata.labels).toMatchObject((metrics.spec as { selector: Record<string, string> }).selector);
      expect(allContainers(w).flatMap((c) => ((c as { ports?: { name: string }[] }).ports ?? []).map((p) => p.name))).toContain('metrics');
      // The listener binds the pod's address, not loopback (metrics/config.ts), or nothing could scrape it.
      expect(allContainers(w).flatMap((c) => ((c as { env?: { name: string; valueFrom?: unknown }[] }).env ?? []).filter((e) => e.name === 'FOS1_METRICS_HOST'))).toEqual([
        { name: 'FOS1_METRICS_HOST', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      ]);
    }
  });

  it('grants the node worker only NET_ADMIN, BPF and PERFMON, drops ALL, and runs no privileged container', () => {
    const ds = find(defaults, 'DaemonSet', 'fos1-node-worker');
    const containers = allContainers(ds);
    expect(containers.length).toBeGreaterThan(0);
    for (const c of containers) {
      const sc = c.securityContext ?? {};
      expect(sc.privileged).not.toBe(true);
      expect(sc.capabilities?.drop).toEqual(['ALL']);
      expect([...(sc.capabilities?.add ?? [])].sort()).toEqual([...ALLOWED_CAPS].sort());
      expect(sc.allowPrivilegeEscalation).toBe(false);
    }
  });

  it('adds SYS_ADMIN only when nodeWorker.sysAdmin asks, and that render is accepted too', async () => {
    const objects = await render(['--set', 'nodeWorker.sysAdmin=true']);
    const ds = find(objects, 'DaemonSet', 'fos1-node-worker');
    for (const c of allContainers(ds)) {
      expect(c.securityContext?.privileged).not.toBe(true);
      expect(c.securityContext?.capabilities?.drop).toEqual(['ALL']);
      expect([...(c.securityContext?.capabilities?.add ?? [])].sort()).toEqual([...ALLOWED_CAPS, 'SYS_ADMIN'].sort());
      expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
    }
    expect(await dryRunAll(kube, [ds])).toEqual([]);
    // The dry run is a real check: the apiserver refuses what only a privileged container may
    // do, such as Bidirectional mount propagation (why bpffs is mounted HostToContainer).
    const refused = structuredClone(ds);
    for (const c of allContainers(refused)) for (const m of c.volumeMounts ?? []) if (m.mountPath === '/sys/fs/bpf') m.mountPropagation = 'Bidirectional';
    const rejections = await dryRunAll(kube, [refused]);
    expect(rejections).toHaveLength(1);
    expect(rejections[0]).toMatch(/Bidirectional mount propagation is available only to privileged containers/);
  });

  it('runs the node worker on the host network with bpffs, its node name, no cluster queue, and readiness = polling', () => {
    const ds = find(defaults, 'DaemonSet', 'fos1-node-worker');
    const spec = podSpec(ds);
    expect(spec.hostNetwork).toBe(true);
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(ds.spec).toMatchObject({ updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } } });
    const [c] = spec.containers;
    expect(c?.command).toEqual(['node_modules/.bin/tsx', 'workers/main.ts']);
    expect(envOf(c!, 'FOS1_NODE_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
    expect(envOf(c!, 'FOS1_CLUSTER_WORKER')?.value).toBe('false');
    const bpffs = spec.volumes?.find((v) => v.hostPath?.path === '/sys/fs/bpf');
    expect(bpffs).toBeDefined();
    expect(c?.volumeMounts).toContainEqual({ name: bpffs?.name, mountPath: '/sys/fs/bpf', mountPropagation: 'HostToContainer' });
    expect(envOf(c!, 'FOS1_BPF_PIN_DIR')?.value).toMatch(/^\/sys\/fs\/bpf\//);
    // The probe reads the endpoint the worker serves: same port, loopback (host network).
    expect(c?.readinessProbe?.httpGet).toEqual({ host: '127.0.0.1', path: '/readyz', port: Number(envOf(c!, 'FOS1_HEALTH_PORT')?.value) });
    expect(envOf(c!, 'FOS1_HEALTH_HOST')?.value).toBe('127.0.0.1');
  });

  it('runs the other components as non-root with every capability dropped; the cluster worker serves only the cluster queue', () => {
    for (const w of workloads(defaults).filter((o) => o.kind === 'Deployment')) {
      expect(podSpec(w).securityContext?.runAsNonRoot).toBe(true);
      expect(podSpec(w).hostNetwork).not.toBe(true);
      for (const c of allContainers(w)) expect(c.securityContext).toMatchObject({ privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
      for (const c of allContainers(w)) expect(c.securityContext?.capabilities?.add).toBeUndefined();
    }
    const [cw] = podSpec(find(defaults, 'Deployment', 'fos1-cluster-worker')).containers;
    expect(envOf(cw!, 'FOS1_NODE_WORKER')?.value).toBe('false');
    expect(envOf(cw!, 'FOS1_CLUSTER_WORKER')?.value).toBe('true');
    expect(envOf(cw!, 'FOS1_KUBECONFIG')?.value).toBe('default');
    // Leader election: two replicas, only the Lease holder acts (controllers/leader-election.ts).
    const controller = find(defaults, 'Deployment', 'fos1-controller');
    expect(controller.spec).toMatchObject({ replicas: 2 });
    const [ctl] = podSpec(controller).containers;
    expect(envOf(ctl!, 'FOS1_LEASE_NAME')?.value).toBe('fos1-controller');
    expect(envOf(ctl!, 'FOS1_LEASE_DURATION_SECONDS')?.value).toBe('15');
    expect(envOf(ctl!, 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');
    expect(envOf(ctl!, 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    const leaseRole = find(defaults, 'Role', 'fos1-controller-leader-election') as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[] };
    expect(leaseRole.rules).toEqual([
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['fos1-controller'], verbs: ['get', 'update'] },
    ]);
    expect((find(defaults, 'RoleBinding', 'fos1-controller-leader-election') as unknown as { subjects: unknown[] }).subjects).toEqual([{ kind: 'ServiceAccount', name: 'fos1-controller', namespace: 'fos1-system' }]);
  });

  it('has deploy/rbac.yaml\'s roles, bindings and admission policies; only the controller, the cluster worker and the ingest (for DPIProfiles) mount a token', () => {
    const reference = readManifests([join(FOS1_DEPLOY_DIR, 'rbac.yaml')]) as Doc[];
    for (const kind of ['ClusterRole', 'ClusterRoleBinding']) {
      const want = reference.filter((o) => o.kind === kind).map((o) => ({ name: o.metadata.name, rules: o.rules, roleRef: o.roleRef, subjects: o.subjects }));
      const got = defaults.filter((o) => o.kind === kind).map((o) => ({ name: o.metadata.name, rules: o.rules, roleRef: o.roleRef, subjects: o.subjects }));
      expect(got.sort((a, b) => a.name.localeCompare(b.name))).toEqual(want.sort((a, b) => a.name.localeCompare(b.name)));
    }
    // The admission policies that narrow those roles (deploy/rbac.yaml's, for this release's names).
    for (const kind of ['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']) {
      const want = reference.filter((o) => o.kind === kind).map((o) => ({ name: o.metadata.name, spec: (o as { spec?: unknown }).spec }));
      const got = defaults.filter((o) => o.kind === kind).map((o) => ({ name: o.metadata.name, spec: (o as { spec?: unknown }).spec }));
      expect(want).toHaveLength(3);
      expect(got.sort((a, b) => a.name.localeCompare(b.name))).toEqual(want.sort((a, b) => a.name.localeCompare(b.name)));
    }
    const tokens = Object.fromEntries(defaults.filter((o) => o.kind === 'ServiceAccount').map((o) => [o.metadata.name, o.automountServiceAccountToken]));
    expect(tokens).toEqual({ 'fos1-api': false, 'fos1-cluster-worker': true, 'fos1-controller': true, 'fos1-ingest': true, 'fos1-node-worker': false });
  });

  it('deploys the ingest on every router node, following DPIProfiles with get/list/watch and the status update only', async () => {
    const ds = find(defaults, 'DaemonSet', 'fos1-ingest');
    const spec = podSpec(ds);
    expect(spec.serviceAccountName).toBe('fos1-ingest');
    expect(spec.automountServiceAccountToken).toBe(true);
    expect(spec.securityContext?.runAsNonRoot).toBe(true);
    expect(spec.hostNetwork).not.toBe(true);
    const [c] = spec.containers;
    expect(c?.command).toEqual(['node_modules/.bin/tsx', 'ingest/main.ts']);
    expect(c?.securityContext).toMatchObject({ privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    // The switch that turns the DPIProfile source on (ingest/config.ts), with the pod's service account.
    expect(envOf(c!, 'FOS1_DPI_KUBECONFIG')?.value).toBe('in-cluster');
    expect(envOf(c!, 'FOS1_ENFORCE_NODES')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
    // The EVE file is read from Suricata's folder, mounted read-only; position and spool go to the state folder.
    const eveFile = envOf(c!, 'FOS1_EVE_FILE')?.value ?? '';
    const eveMount = c?.volumeMounts?.find((m) => eveFile.startsWith(`${m.mountPath}/`));
    expect(eveMount?.readOnly).toBe(true);
    expect(spec.volumes?.find((v) => v.name === eveMount?.name)?.hostPath?.path).toBe('/var/log/suricata');
    for (const name of ['FOS1_EVE_STATE_FILE', 'FOS1_INGEST_STATE_DIR']) {
      const mount = c?.volumeMounts?.find((m) => (envOf(c, name)?.value ?? '').startsWith(m.mountPath));
      expect(mount?.readOnly).not.toBe(true);
      expect(spec.volumes?.find((v) => v.name === mount?.name)?.hostPath?.path).toBe('/var/lib/fos1-ingest');
    }
    // RBAC: exactly the reads and the status write the DPIProfile controller makes, bound to the ingest only.
    expect(find(defaults, 'ClusterRole', 'fos1-dpi-profile-reader').rules).toEqual([
      { apiGroups: ['security.fos1.io'], resources: ['dpiprofiles'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['security.fos1.io'], resources: ['dpiprofiles/status'], verbs: ['update'] },
    ]);
    const binding = find(defaults, 'ClusterRoleBinding', 'fos1-dpi-profile-reader');
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'fos1-dpi-profile-reader' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'fos1-ingest', namespace: NAMESPACE }]);
    // No other role names dpiprofiles for the ingest: the only binding with it as subject is this one.
    const ingestBindings = defaults.filter((o) => (o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') && JSON.stringify(o.subjects ?? []).includes('"fos1-ingest"'));
    expect(ingestBindings.map((o) => o.metadata.name)).toEqual(['fos1-dpi-profile-reader']);

    // ingest.dpiProfiles=false: no variable, no role, no token.
    const off = await render(['--set', 'ingest.dpiProfiles=false']);
    const [offContainer] = podSpec(find(off, 'DaemonSet', 'fos1-ingest')).containers;
    expect(envOf(offContainer!, 'FOS1_DPI_KUBECONFIG')).toBeUndefined();
    expect(podSpec(find(off, 'DaemonSet', 'fos1-ingest')).automountServiceAccountToken).toBe(false);
    expect(off.some((o) => o.metadata.name === 'fos1-dpi-profile-reader')).toBe(false);
    expect(find(off, 'ServiceAccount', 'fos1-ingest').automountServiceAccountToken).toBe(false);
  });

  it('mounts each identity key only where it signs or checks: the API\'s into the API and the cluster worker, the controllers\' into the controller and the cluster worker', () => {
    const keysOf = (objects: Doc[], name: string) => {
      const spec = podSpec(find(objects, 'Deployment', name));
      const secrets = (spec.volumes ?? []).filter((v) => v.secret?.secretName?.endsWith('-identity')).map((v) => v.secret!.secretName).sort();
      const [c] = spec.containers;
      const env = (c?.env ?? []).filter((e) => e.name.endsWith('IDENTITY_KEY_FILE')).map((e) => e.name).sort();
      // Each variable names a file inside a read-only mount of its Secret.
      for (const e of c?.env ?? []) {
        if (!e.name.endsWith('IDENTITY_KEY_FILE')) continue;
        const mount = c?.volumeMounts?.find((m) => (e.value ?? '').startsWith(`${m.mountPath}/`));
        expect(mount?.readOnly).toBe(true);
        expect(spec.volumes?.find((v) => v.name === mount?.name)?.secret?.secretName).toBe(e.name === 'FOS1_IDENTITY_KEY_FILE' ? 'fos1-api-identity' : 'fos1-controller-identity');
      }
      return { secrets, env };
    };
    expect(keysOf(withTls, 'fos1-api')).toEqual({ secrets: ['fos1-api-identity'], env: ['FOS1_IDENTITY_KEY_FILE'] });
    expect(keysOf(withTls, 'fos1-controller')).toEqual({ secrets: ['fos1-controller-identity'], env: ['FOS1_CONTROLLER_IDENTITY_KEY_FILE'] });
    expect(keysOf(withTls, 'fos1-cluster-worker')).toEqual({ secrets: ['fos1-api-identity', 'fos1-controller-identity'], env: ['FOS1_CONTROLLER_IDENTITY_KEY_FILE', 'FOS1_IDENTITY_KEY_FILE'] });
    // The node worker and the ingest hold neither.
    for (const w of workloads(withTls).filter((o) => o.kind === 'DaemonSet')) expect(JSON.stringify(podSpec(w))).not.toMatch(/identity/i);
    // Without the values: no key anywhere (changes recorded self-asserted).
    for (const w of workloads(defaults)) expect(JSON.stringify(podSpec(w))).not.toMatch(/IDENTITY_KEY_FILE/);
  });

  it('gives every fos1 process the Temporal TLS material from the Secret, at paths inside its mount', () => {
    for (const w of workloads(withTls)) {
      const spec = podSpec(w);
      const volume = spec.volumes?.find((v) => v.secret?.secretName === 'fos1-temporal-tls');
      expect(volume).toBeDefined();
      for (const c of spec.containers) {
        const mount = c.volumeMounts?.find((m) => m.name === volume?.name);
        expect(mount?.readOnly).toBe(true);
        expect(envOf(c, 'TEMPORAL_ADDRESS')?.value).toBe('temporal.example.internal:7233');
        expect(envOf(c, 'TEMPORAL_NAMESPACE')?.value).toBe('fos1');
        expect(envOf(c, 'TEMPORAL_TLS')?.value).toBe('true');
        expect(envOf(c, 'TEMPORAL_TLS_SERVER_NAME')?.value).toBe('temporal.example.internal');
        for (const [name, key] of [['TEMPORAL_TLS_CLIENT_CERT_PATH', 'tls.crt'], ['TEMPORAL_TLS_CLIENT_KEY_PATH', 'tls.key'], ['TEMPORAL_TLS_SERVER_CA_CERT_PATH', 'ca.crt']] as const) {
          expect(envOf(c, name)?.value).toBe(`${mount?.mountPath}/${key}`);
        }
      }
    }
    for (const w of workloads(defaults)) for (const c of podSpec(w).containers) expect(c.env?.filter((e) => e.name.startsWith('TEMPORAL_TLS'))).toEqual([]);
  });

  it('writes the enforcement guard as a file the cluster worker accepts (FOS1_GUARD_FILE)', () => {
    const cm = find(withTls, 'ConfigMap', 'fos1-guard');
    const guard = parseGuardConfig(JSON.parse(cm.data?.['guard.json'] ?? ''));
    expect(guard).toMatchObject({ allowLists: { management: ['10.0.0.0/24'] }, maxActiveQuarantines: 20, maxActiveBlocks: 10_000 });
    const [cw] = podSpec(find(withTls, 'Deployment', 'fos1-cluster-worker')).containers;
    const file = envOf(cw!, 'FOS1_GUARD_FILE')?.value ?? '';
    const mount = cw?.volumeMounts?.find((m) => file.startsWith(`${m.mountPath}/`));
    expect(podSpec(find(withTls, 'Deployment', 'fos1-cluster-worker')).volumes?.find((v) => v.name === mount?.name)?.configMap?.name).toBe('fos1-guard');
    // Without a guard value: no ConfigMap, no variable (the worker's defaults).
    expect(defaults.some((o) => o.kind === 'ConfigMap' && o.metadata.name === 'fos1-guard')).toBe(false);
    expect(envOf(podSpec(find(defaults, 'Deployment', 'fos1-cluster-worker')).containers[0]!, 'FOS1_GUARD_FILE')).toBeUndefined();
  });

  it('writes the quarantine exceptions as a file the cluster worker accepts', () => {
    const cm = find(withTls, 'ConfigMap', 'fos1-quarantine');
    const config = parseQuarantineConfig(JSON.parse(cm.data?.['quarantine.json'] ?? ''));
    expect(config.exceptions.map((e) => [e.name, e.direction, e.ports.length])).toEqual([['kube-dns', 'egress', 2]]);
    const [cw] = podSpec(find(withTls, 'Deployment', 'fos1-cluster-worker')).containers;
    const file = envOf(cw!, 'FOS1_QUARANTINE_FILE')?.value ?? '';
    const mount = cw?.volumeMounts?.find((m) => file.startsWith(`${m.mountPath}/`));
    expect(podSpec(find(withTls, 'Deployment', 'fos1-cluster-worker')).volumes?.find((v) => v.name === mount?.name)?.configMap?.name).toBe('fos1-quarantine');
  });

  it('refuses bad values with the field and the rule', async () => {
    expect(await renderFailure(['--set', 'controller.replicas=0'])).toMatch(/controller\.replicas: must be 1 or more/);
    expect(await renderFailure(['--set', 'controller.leaderElection.leaseDurationSeconds=1'])).toMatch(/controller\.leaderElection\.leaseDurationSeconds: must be at least 2/);
    expect(await renderFailure(['--set', 'temporal.tls.enabled=true'])).toMatch(/temporal\.tls\.secretName: name the Secret/);
    expect(await renderFailure(['--set', 'identity.apiKeySecret=k', '--set', 'identity.controllerKeySecret=k'])).toMatch(/identity\.controllerKeySecret: must be another Secret than identity\.apiKeySecret/);
    expect(await renderFailure(['--set', 'ingest.eveFile=eve.json'])).toMatch(/ingest\.eveFile: must be an absolute path/);
    expect(await renderFailure(['--set', 'temporal.tls.enabled=true', '--set', 'temporal.tls.secretName=s', '--set', 'temporal.tls.keyKey='])).toMatch(/temporal\.tls\.certKey, temporal\.tls\.keyKey: set both/);
  });
});
