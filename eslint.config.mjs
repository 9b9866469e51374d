// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

/** Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, no I/O. */
const nodeBuiltins = builtinModules.flatMap((m) => [m, `node:${m}`]);
/** The floor above workflows. */
const TOP = ['workers', 'ingest', 'api', 'controllers', 'cli'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'coverage/**', 'jest.config.js', 'eslint.config.mjs', 'test/helpers/*.js', 'bin/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  // Floors: model → bpf/k8s → activities → workflows → workers/ingest/api/controllers (rules/ is
  // the rule engine ingest runs). No import runs back up a floor; workflows take activity
  // *types* only. Everything the worker bundles into workflows (workflows/ and what they
  // import: model/ only, since the floors forbid the rest) must stay deterministic.
  floor(['model/**/*.ts'], { deterministic: true, above: ['bpf', 'k8s', 'activities', 'workflows', ...TOP, 'rules'] }),
  floor(['bpf/**/*.ts', 'k8s/**/*.ts'], { above: ['activities', 'workflows', ...TOP, 'rules'] }),
  floor(['activities/**/*.ts'], { above: ['workflows', ...TOP, 'rules'] }),
  floor(['workflows/**/*.ts'], { deterministic: true, above: [...TOP, 'rules'], typesOnly: ['activities', 'bpf', 'k8s'] }),
  floor(['rules/**/*.ts'], { above: ['activities', 'workflows', ...TOP] }),
);

/** What sits above workflows (and imports them): nothing below may import these. */
function floorGroups(folders) {
  return folders.map((f) => `**/${f}/**`);
}

/**
 * One floor's import rule: `above` may not be imported at all, `typesOnly` only with
 * `import type`; `deterministic` adds the workflow sandbox's ban on Node built-ins.
 */
function floor(files, { deterministic = false, above, typesOnly = [] }) {
  const patterns = [{ group: floorGroups(above), message: 'Imports must not run back up a floor (model → bpf/k8s → activities → workflows → workers/ingest/api/controllers).' }];
  if (typesOnly.length > 0) patterns.push({ group: floorGroups(typesOnly), message: 'Workflows may only import activity types (import type).', allowTypeImports: true });
  const paths = deterministic ? nodeBuiltins.map((name) => ({ name, message: 'Workflow and model code must stay deterministic: no Node built-ins.' })) : [];
  return { files, rules: { 'no-restricted-imports': ['error', { paths, patterns }] } };
}
