/**
 * FOS1_WORKFLOW_BUNDLE (workers/config.ts): a prebuilt workflow bundle the worker loads
 * instead of bundling at start (a restarted worker polls sooner). Unset: bundle at start.
 * A bad value stops the worker naming the variable and the rule.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseWorkerConfig } from '../../workers/config';

describe('worker configuration: FOS1_WORKFLOW_BUNDLE', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-bundle-cfg-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const base = { FOS1_NODE_NAME: 'n1' };

  test('unset: no prebuilt bundle (the worker bundles workflows/ at start)', () => {
    expect(parseWorkerConfig(base).workflowBundle).toBeUndefined();
  });

  test('a readable .js file is taken', () => {
    const file = join(dir, 'workflows.js');
    writeFileSync(file, '// bundle');
    expect(parseWorkerConfig({ ...base, FOS1_WORKFLOW_BUNDLE: file }).workflowBundle).toBe(file);
  });

  test('a relative path, a non-.js name, a missing file or a folder is refused, naming the variable', () => {
    expect(() => parseWorkerConfig({ ...base, FOS1_WORKFLOW_BUNDLE: 'workflows.js' })).toThrow(/FOS1_WORKFLOW_BUNDLE.*must be an absolute path to a \.js file/);
    expect(() => parseWorkerConfig({ ...base, FOS1_WORKFLOW_BUNDLE: join(dir, 'workflows.txt') })).toThrow(/FOS1_WORKFLOW_BUNDLE.*must be an absolute path to a \.js file/);
    expect(() => parseWorkerConfig({ ...base, FOS1_WORKFLOW_BUNDLE: join(dir, 'missing.js') })).toThrow(/FOS1_WORKFLOW_BUNDLE \(.*missing\.js\): must be a readable file/);
    const folder = join(dir, 'folder.js');
    mkdirSync(folder);
    expect(() => parseWorkerConfig({ ...base, FOS1_WORKFLOW_BUNDLE: folder })).toThrow(/FOS1_WORKFLOW_BUNDLE \(.*folder\.js\): must be a readable file/);
  });
});
