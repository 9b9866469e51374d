/**
 * fos1's Kubernetes client: a thin wrapper over @kubernetes/client-node that speaks in the
 * operations fos1 needs (server-side apply, get, list by label, delete, status replace, watch)
 * and turns every API error into a {@link KubeApiError} carrying the HTTP status, the API's
 * reason and its message — so callers can decide retryable vs not by status, and users see
 * the apiserver's own words (which field, which rule).
 */
import * as k8s from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import type { KubeObject } from '../model/firewall-translate';

/** How to reach an apiserver: URL, the CA that signed its serving certificate, and a bearer token. */
export interface KubeConnection {
  server: string;
  /** PEM of the CA (or the self-signed serving certificate). */
  caPem?: string;
  token: string;
}

/** An object as the apiserver returns it. */
export interface StoredObject extends KubeObject {
  metadata: KubeObject['metadata'] & {
    resourceVersion?: string;
    uid?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    finalizers?: string[];
    managedFields?: unknown[];
  };
  status?: Record<string, unknown>;
}

/** Identifies one object. */
export interface ObjectRef {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
}

/** An error answer of the apiserver (or no answer: status 0). */
export class KubeApiError extends Error {
  constructor(
    /** HTTP status; 0 when the apiserver could not be reached. */
    readonly status: number,
    /** The Status object's `reason` (`Conflict`, `Invalid`, `NotFound`, …). */
    readonly reason: string,
    message: string,
    /** The Status object's `details.causes`: for a 422, each field the apiserver refused and its rule. */
    readonly causes: { field?: string; message?: string }[] = [],
  ) {
    super(message);
    this.name = 'KubeApiError';
  }

  /** 429 and 5xx (and unreachable) may heal by waiting; other 4xx will not. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** Options of {@link KubeClient.apply}. */
export interface ApplyOptions {
  /** Server-side apply field manager; fos1's objects are owned by it. */
  fieldManager: string;
  /** Take over fields another manager owns (default false: a conflict is an error). */
  force?: boolean;
  /** Validate and admit on the server, persist nothing. */
  dryRun?: boolean;
}

/** A watch event (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR). */
export interface WatchEvent {
  type: string;
  object: StoredObject;
}

/** fos1's Kubernetes client. */
export class KubeClient {
  readonly config: k8s.KubeConfig;
  private readonly objects: k8s.KubernetesObjectApi;
  private readonly custom: k8s.CustomObjectsApi;

  /** From an explicit connection (the test harness), or a loaded KubeConfig (see {@link loadKubeConfig}). */
  constructor(source: KubeConnection | k8s.KubeConfig) {
    let kc: k8s.KubeConfig;
    if (source instanceof k8s.KubeConfig) {
      kc = source;
    } else {
      kc = new k8s.KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'fos1', server: source.server, caData: source.caPem ? Buffer.from(source.caPem).toString('base64') : undefined, skipTLSVerify: false }],
        users: [{ name: 'fos1', token: source.token }],
        contexts: [{ name: 'fos1', cluster: 'fos1', user: 'fos1' }],
        currentContext: 'fos1',
      });
    }
    this.config = kc;
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  /** Server-side apply: the object as this field manager wants it; returns what the server stored. */
  async apply(obj: KubeObject, options: ApplyOptions): Promise<StoredObject> {
    // The whole object: kinds like ClusterRole keep their content outside `spec` (rules, roleRef…).
    const body = toTyped(obj);
    return toWire(
      await call(`apply ${describe(obj)}`, () =>
        this.objects.patch(body, undefined, options.dryRun ? 'All' : undefined, options.fieldManager, options.force ?? false, k8s.PatchStrategy.ServerSideApply),
      ),
    );
  }

  /** Reads one object; undefined when it does not exist. */
  async get(ref: ObjectRef): Promise<StoredObject | undefined> {
    try {
      return toWire(await call(`get ${describe(ref)}`, () => this.objects.read({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace: ref.namespace } })));
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Lists objects of a kind (all namespaces unless one is given), optionally by label and field selector. */
  async list(apiVersion: string, kind: string, options: { namespace?: string; labelSelector?: string; fieldSelector?: string } = {}): Promise<{ items: StoredObject[]; resourceVersion: string }> {
    const result = await call(`list ${kind}`, () => this.objects.list(apiVersion, kind, options.namespace, undefined, undefined, undefined, options.fieldSelector, options.labelSelector));
    return { items: result.items.map((item) => toWire({ ...item, apiVersion, kind })), resourceVersion: result.metadata?.resourceVersion ?? '' };
  }

  /** Creates an object (fails with 409 if it exists). */
  async create(obj: KubeObject, options: { fieldManager?: string; dryRun?: boolean } = {}): Promise<StoredObject> {
    return toWire(await call(`create ${describe(obj)}`, () => this.objects.create(toTyped(obj), undefined, options.dryRun ? 'All' : undefined, options.fieldManager)));
  }

  /** Replaces an object (optimistic: `metadata.resourceVersion` must be current). */
  async replace(obj: StoredObject, options: { fieldManager?: string } = {}): Promise<StoredObject> {
    return toWire(await call(`replace ${describe(obj)}`, () => this.objects.replace(toTyped(obj), undefined, undefined, options.fieldManager)));
  }

  /** Deletes an object; false when it was already gone. */
  async delete(ref: ObjectRef, options: { dryRun?: boolean } = {}): Promise<boolean> {
    try {
      await call(`delete ${describe(ref)}`, () =>
        this.objects.delete({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace: ref.namespace } }, undefined, options.dryRun ? 'All' : undefined),
      );
      return true;
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return false;
      throw err;
    }
  }

  /** Replaces the status subresource of a custom object (optimistic on resourceVersion). */
  async replaceStatus(obj: StoredObject, plural: string): Promise<StoredObject> {
    const [group, version] = obj.apiVersion.split('/') as [string, string];
    const name = obj.metadata.name;
    return call(`update status of ${describe(obj)}`, () =>
      obj.metadata.namespace
        ? this.custom.replaceNamespacedCustomObjectStatus({ group, version, namespace: obj.metadata.namespace, plural, name, body: obj })
        : this.custom.replaceClusterCustomObjectStatus({ group, version, plural, name, body: obj }),
    ) as Promise<StoredObject>;
  }

  /**
   * Server-side apply of the status subresource of a custom object: `status` as this field
   * manager wants it (the fields it leaves out and owned before are dropped; conditions are a
   * map keyed by `type`, so other managers' conditions stay). A missing object is a 404, never
   * a creation: the status subresource cannot create.
   */
  async applyStatus(ref: ObjectRef, plural: string, status: Record<string, unknown>, options: { fieldManager: string; force?: boolean }): Promise<StoredObject> {
    const [group, version] = ref.apiVersion.split('/') as [string, string];
    const body = { apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, ...(ref.namespace ? { namespace: ref.namespace } : {}) }, status };
    const headers = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply);
    const common = { group, version, plural, name: ref.name, body, fieldManager: options.fieldManager, force: options.force ?? true };
    return call(`apply status of ${describe(ref)}`, () =>
      ref.namespace ? this.custom.patchNamespacedCustomObjectStatus({ ...common, namespace: ref.namespace }, headers) : this.custom.patchClusterCustomObjectStatus(common, headers),
    ) as Promise<StoredObject>;
  }

  /**
   * Watches a collection path (e.g. `/apis/security.fos1.io/v1alpha1/firewallrules`) from a
   * resourceVersion. `onEvent` sees every event, including `ERROR` (a 410 Gone arrives so);
   * `onDone` is called once when the stream ends, with the error if any. Returns `stop()`.
   */
  async watch(path: string, resourceVersion: string, onEvent: (event: WatchEvent) => void, onDone: (err: unknown) => void): Promise<() => void> {
    const watcher = new k8s.Watch(this.config);
    const controller = await watcher.watch(
      path,
      { resourceVersion, allowWatchBookmarks: true },
      (type: string, object: StoredObject) => onEvent({ type, object }),
      (err: unknown) => onDone(err ? toKubeApiError('watch', err) : null),
    );
    return () => controller.abort();
  }
}

/**
 * Loads a kubeconfig: the file at `path` when given; otherwise the pod's service account when
 * running in a cluster, else `$KUBECONFIG` / `~/.kube/config` (client-node's default order).
 * Entry points call this once, with a path from their parsed configuration.
 */
export function loadKubeConfig(path?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}

/**
 * client-node serialises built-in kinds through its generated models, whose property names
 * differ from the wire names for a few fields (`enum` is `_enum`, `x-kubernetes-*` are
 * camel-cased, …): a plain JSON object sent as-is silently loses them — a CRD would lose its
 * enums. So objects go out through the models (`loadYaml` of their JSON, which is YAML) and
 * come back in wire form (`dumpYaml`), and fos1 only ever sees wire JSON.
 */
function toTyped(obj: KubeObject): k8s.KubernetesObject {
  return k8s.loadYaml<k8s.KubernetesObject>(JSON.stringify(obj));
}

function toWire(obj: unknown): StoredObject {
  return parseYaml(k8s.dumpYaml(obj)) as StoredObject;
}

function describe(ref: { kind: string; name?: string; namespace?: string; metadata?: { name: string; namespace?: string } }): string {
  const name = ref.name ?? ref.metadata?.name ?? '?';
  const ns = ref.namespace ?? ref.metadata?.namespace;
  return `${ref.kind} ${ns ? `${ns}/` : ''}${name}`;
}

async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toKubeApiError(what, err);
  }
}

/** Converts a client-node error (ApiException, fetch failure, watch status) to a {@link KubeApiError}. */
export function toKubeApiError(what: string, err: unknown): KubeApiError {
  if (err instanceof KubeApiError) return err;
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string };
  const status = typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : 0;
  let body: { message?: string; reason?: string; details?: { causes?: { field?: string; message?: string }[] } } | undefined;
  if (typeof e.body === 'string') {
    try {
      body = JSON.parse(e.body) as typeof body;
    } catch {
      body = { message: e.body };
    }
  } else if (e.body && typeof e.body === 'object') {
    body = e.body as typeof body;
  }
  const reason = body?.reason ?? (status === 0 ? 'Unreachable' : `HTTP${status}`);
  const detail = body?.message ?? (e.message ? e.message.split('\n')[0] : String(err));
  const causes = Array.isArray(body?.details?.causes) ? body.details.causes.map((c) => ({ ...(c.field ? { field: c.field } : {}), ...(c.message ? { message: c.message } : {}) })) : [];
  return new KubeApiError(status, reason, `${what}: ${status === 0 ? 'apiserver unreachable: ' : `${status} ${reason}: `}${detail}`, causes);
}
