/**
 * Validates manifests against a real apiserver's schemas (server-side dry-run apply, then
 * optionally a real apply), reporting each document as accepted or rejected with the
 * apiserver's own reason — never stopping at the first bad one.
 *
 * As a command it starts its own etcd + kube-apiserver with the given CRDs installed:
 *
 *   npx tsx k8s/validate.ts --crds ../shared/data/cilium/crds FILE_OR_DIR…
 *
 * and prints one line per document; the exit status is 1 when any was rejected.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { KubeApiError, type KubeClient } from './client';
import { readManifests, startKubeApiServer } from './harness';

/** The verdict on one document. */
export interface ManifestVerdict {
  file: string;
  /** `Kind namespace/name`. */
  object: string;
  verdict: 'accepted' | 'rejected';
  /** For a rejection: HTTP status, reason and the apiserver's message (field and rule). */
  reason?: string;
}

/** Options of {@link validateManifests}. */
export interface ValidateOptions {
  /** Namespace for namespaced documents that name none. */
  defaultNamespace: string;
  /** Kinds that are namespaced (documents of other kinds keep no namespace). */
  namespacedKinds: ReadonlySet<string>;
  fieldManager: string;
  /** After an accepted dry run, also apply for real (default false). */
  apply?: boolean;
  /** Create the namespaces the documents name first (a throwaway test apiserver only). */
  ensureNamespaces?: boolean;
}

/** Dry-runs (and optionally applies) every document of every file, in order. */
export async function validateManifests(client: KubeClient, files: string[], options: ValidateOptions): Promise<ManifestVerdict[]> {
  const out: ManifestVerdict[] = [];
  if (options.ensureNamespaces) {
    const names = new Set([options.defaultNamespace, ...readManifests(files).flatMap((d) => (d.metadata?.namespace ? [d.metadata.namespace] : []))]);
    for (const name of names) {
      try {
        await client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
      } catch (err) {
        if (!(err instanceof KubeApiError && err.status === 409)) throw err;
      }
    }
  }
  for (const file of files) {
    for (const doc of readManifests([file])) {
      const obj = { ...doc, metadata: { ...doc.metadata } };
      if (options.namespacedKinds.has(obj.kind)) obj.metadata.namespace ??= options.defaultNamespace;
      const object = `${obj.kind} ${obj.metadata.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata.name}`;
      try {
        await client.apply(obj, { fieldManager: options.fieldManager, dryRun: true });
        if (options.apply) await client.apply(obj, { fieldManager: options.fieldManager });
        out.push({ file, object, verdict: 'accepted' });
      } catch (err) {
        if (!(err instanceof KubeApiError)) throw err;
        out.push({ file, object, verdict: 'rejected', reason: `${err.status} ${err.reason}: ${err.message}` });
      }
    }
  }
  return out;
}

/** YAML files under `path` (itself if a file), recursively, sorted. */
export function yamlFilesUnder(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((entry) => {
      const full = join(path, entry);
      if (statSync(full).isDirectory()) return yamlFilesUnder(full);
      return /\.ya?ml$/.test(entry) ? [full] : [];
    });
}

async function main(argv: string[]): Promise<number> {
  const crdDirs: string[] = [];
  const inputs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--crds') crdDirs.push(argv[++i] ?? '');
    else inputs.push(argv[i] as string);
  }
  if (inputs.length === 0) {
    console.error('usage: tsx k8s/validate.ts --crds CRD_DIR… FILE_OR_DIR…');
    return 2;
  }
  const crdFiles = crdDirs.flatMap(yamlFilesUnder);
  const api = await startKubeApiServer({ crdFiles });
  try {
    const namespaced = new Set<string>();
    for (const crd of readManifests(crdFiles)) {
      const spec = crd.spec as { scope?: string; names?: { kind?: string } } | undefined;
      if (spec?.scope === 'Namespaced' && spec.names?.kind) namespaced.add(spec.names.kind);
    }
    const verdicts = await validateManifests(api.client, inputs.flatMap(yamlFilesUnder), { defaultNamespace: 'validate', namespacedKinds: namespaced, fieldManager: 'fos1-validate', ensureNamespaces: true });
    for (const v of verdicts) console.log(`${v.verdict === 'accepted' ? 'ok  ' : 'FAIL'} ${v.file} ${v.object}${v.reason ? `\n     ${v.reason}` : ''}`);
    const rejected = verdicts.filter((v) => v.verdict === 'rejected').length;
    console.log(`${verdicts.length - rejected} accepted, ${rejected} rejected`);
    return rejected > 0 ? 1 : 0;
  } finally {
    await api.stop();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(2);
    },
  );
}
