/**
 * What a node workflow evaluates when a worker starts it (workflows/worker-entry.ts loads each
 * workflow's modules on its first call): the node workflow's module graph must stay free of the
 * change request's schemas — strategy, gates, inventory, cluster policy, firewall — which were
 * most of a node worker's CPU in bench/rollout. Follows value imports (not `import type`,
 * which the bundle drops) from the source files.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(__dirname, '../..');

/** Relative modules `file` imports or re-exports as values. */
function valueImports(file: string): string[] {
  const source = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of source.matchAll(/^(?:import|export)\s+(?!type\b)([^;]*?)\s+from\s+'(\.[^']+)'/gm)) {
    const [, clause = '', specifier = ''] = m;
    // `import { type A, type B } from` brings in no value either.
    const names = /^\{([\s\S]*)\}$/.exec(clause.trim())?.[1];
    if (names !== undefined && names.split(',').every((n) => n.trim() === '' || n.trim().startsWith('type '))) continue;
    out.push(specifier);
  }
  for (const m of source.matchAll(/require\('(\.[^']+)'\)/g)) out.push(m[1] as string);
  return out;
}

/** Every source module reachable from `entry` by value imports, relative to the repository. */
function moduleGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    const name = relative(root, file);
    if (seen.has(name)) return;
    seen.add(name);
    for (const specifier of valueImports(file)) {
      const next = join(dirname(file), `${specifier}.ts`);
      if (existsSync(next)) visit(next);
    }
  };
  visit(join(root, entry));
  return seen;
}

describe('workflow module graphs', () => {
  it('the node workflow does not evaluate the change request schemas', () => {
    const graph = moduleGraph('workflows/node-change.ts');
    expect(graph).toContain('model/node-change-input.ts');
    for (const heavy of ['model/change-request.ts', 'model/rollout-strategy.ts', 'model/gates.ts', 'model/inventory.ts', 'model/cluster-policy.ts', 'model/firewall.ts', 'workflows/change.ts']) {
      expect(graph).not.toContain(heavy);
    }
  });

  it('the worker entry imports no workflow module eagerly (each loads on its first call)', () => {
    const eager = valueImports(join(root, 'workflows/worker-entry.ts')).filter((s) => !readFileSync(join(root, 'workflows/worker-entry.ts'), 'utf8').includes(`require('${s}')`));
    expect(eager).toEqual(['./support']);
  });

  it('the graph walk sees through re-exports: the change workflow reaches the schemas the node workflow avoids', () => {
    const graph = moduleGraph('workflows/change.ts');
    expect(graph).toContain('model/change-request.ts');
    expect(graph).toContain('model/node-change-input.ts');
    expect(graph).toContain('model/rollout-strategy.ts');
  });
});
