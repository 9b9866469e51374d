/**
 * The node's content-addressed blocklist store: hash-checked reads, and pruning of old
 * snapshots so a node that changes its blocklist often does not fill its disk.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlocklistStore } from '../../activities/blocklist-sync';

describe('BlocklistStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-store-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const age = (name: string, days: number) => {
    const t = (Date.now() - days * 24 * 3600_000) / 1000;
    utimesSync(join(dir, name), t, t);
  };

  test('put returns the sha256 and read returns the content it names', () => {
    const store = new BlocklistStore(dir);
    const ref = store.put(Buffer.from('192.0.2.1\n'));
    expect(ref.sha256).toBe(createHash('sha256').update('192.0.2.1\n').digest('hex'));
    expect(store.read(ref).toString()).toBe('192.0.2.1\n');
  });

  test('storing a blob prunes blobs older than the retention, and keeps younger ones and foreign files', () => {
    const store = new BlocklistStore(dir, 7 * 24 * 3600_000);
    const old = store.put(Buffer.from('old\n')).sha256;
    const young = store.put(Buffer.from('young\n')).sha256;
    writeFileSync(join(dir, 'README'), 'not ours');
    age(old, 8);
    age(young, 6);
    age('README', 30);
    const fresh = store.put(Buffer.from('fresh\n')).sha256;
    expect(readdirSync(dir).sort()).toEqual([young, fresh, 'README'].sort());
  });

  test('storing content that is already there refreshes its age', () => {
    const store = new BlocklistStore(dir, 7 * 24 * 3600_000);
    const ref = store.put(Buffer.from('reused\n'));
    age(ref.sha256, 8);
    store.put(Buffer.from('reused\n'));
    store.put(Buffer.from('other\n'));
    expect(readdirSync(dir)).toContain(ref.sha256);
  });

  test('a blob whose content no longer matches its name is refused, naming both hashes', () => {
    const store = new BlocklistStore(dir);
    const ref = store.put(Buffer.from('192.0.2.1\n'));
    writeFileSync(join(dir, ref.sha256), '192.0.2.2\n');
    expect(() => store.read(ref)).toThrow(/has sha256 [0-9a-f]{64}, but the reference says [0-9a-f]{64}: the content changed after it was referenced/);
  });
});
