/**
 * The cluster worker's guard (FOS1_GUARD_FILE): parsed once at start into the worker's
 * configuration; defaults without it; a bad file stops the worker naming the variable, the
 * file and the field, never the file's content.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { parseWorkerConfig } from '../../workers/config';

describe('worker configuration: FOS1_GUARD_FILE', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-guard-cfg-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const base = { FOS1_NODE_NAME: 'n1' };

  test('unset: the defaults; FOS1_RESOLV_CONF defaults to /etc/resolv.conf', () => {
    const c = parseWorkerConfig(base);
    expect(c.guard).toEqual(guardConfigSchema.parse({}));
    expect(c.resolvConf).toBe('/etc/resolv.conf');
  });

  test('a file sets the lists and caps', () => {
    const file = join(dir, 'guard.json');
    writeFileSync(file, JSON.stringify({ allowLists: { management: ['10.0.0.0/24'] }, maxActiveQuarantines: 5 }));
    expect(parseWorkerConfig({ ...base, FOS1_GUARD_FILE: file }).guard).toMatchObject({ allowLists: { management: ['10.0.0.0/24'] }, maxActiveQuarantines: 5, maxActiveBlocks: 10_000 });
  });

  test('a bad field is named with its rule; unreadable or non-JSON files are named, their content never shown', () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ maxNewRateLimitsPerMinute: 0 }));
    expect(() => parseWorkerConfig({ ...base, FOS1_GUARD_FILE: bad })).toThrow(/invalid worker configuration:\n {2}invalid FOS1_GUARD_FILE \(.*bad\.json\):\n {4}maxNewRateLimitsPerMinute: /);
    const secret = join(dir, 'secret.txt');
    writeFileSync(secret, 'root:s3cr3t-hash:19000:0:99999:7:::\n');
    let message = '';
    try {
      parseWorkerConfig({ ...base, FOS1_GUARD_FILE: secret });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain(`FOS1_GUARD_FILE ${secret} is not valid JSON`);
    expect(message).not.toContain('s3cr3t');
    expect(() => parseWorkerConfig({ ...base, FOS1_GUARD_FILE: join(dir, 'missing.json') })).toThrow(/cannot be read \(ENOENT\)/);
  });
});
