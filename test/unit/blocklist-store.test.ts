/**
 * The node's content-addressed blocklist store: hash-checked reads, and pruning of old
 * snapshots so a node that changes its blocklist often does not fill its disk.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
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

  test('put returns the sha256 and read returns the content it names', async () => {
    const store = new BlocklistStore(dir);
    const ref = store.put(Buffer.from('192.0.2.1\n'));
    expect(ref.sha256).toBe(createHash('sha256').update('192.0.2.1\n').digest('hex'));
    expect((await store.read(ref)).toString()).toBe('192.0.2.1\n');
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

  test('a blob whose content no longer matches its name is refused, naming both hashes', async () => {
    const store = new BlocklistStore(dir);
    const ref = store.put(Buffer.from('192.0.2.1\n'));
    writeFileSync(join(dir, ref.sha256), '192.0.2.2\n');
    await expect(store.read(ref)).rejects.toThrow(/has sha256 [0-9a-f]{64}, but the reference says [0-9a-f]{64}: the content changed after it was referenced/);
  });

  describe('file references are confined to the feed directories', () => {
    const SECRET = 'root:$6$s3cr3t-hash-never-shown:19000:0:99999:7:::';
    let feeds: string;
    let outside: string;
    let store: BlocklistStore;
    beforeEach(() => {
      feeds = join(dir, 'feeds');
      outside = join(dir, 'outside');
      mkdirSync(feeds);
      mkdirSync(outside);
      store = new BlocklistStore(join(dir, 'store'), undefined, { dirs: [feeds], maxBytes: 1024 * 1024, readTimeoutMs: 5000 });
    });
    const refusal = async (ref: unknown) => {
      const err = (await store.load(ref).then(
        () => undefined,
        (e: unknown) => e,
      )) as { type?: string; message?: string } | undefined;
      expect(err).toBeDefined();
      return { type: err?.type, message: err?.message ?? '' };
    };

    test('a regular file in a feed directory is read and parsed, also through a link that stays inside', async () => {
      writeFileSync(join(feeds, 'a.txt'), '192.0.2.1\n');
      mkdirSync(join(feeds, 'sub'));
      symlinkSync(join(feeds, 'a.txt'), join(feeds, 'sub', 'link.txt'));
      expect((await store.read({ file: join(feeds, 'a.txt') })).toString()).toBe('192.0.2.1\n');
      expect((await store.read({ file: join(feeds, 'sub', 'link.txt') })).toString()).toBe('192.0.2.1\n');
    });

    test('a file outside every feed directory is refused before it is opened', async () => {
      expect(await refusal({ file: '/etc/shadow' })).toEqual({ type: 'InvalidBlocklist', message: expect.stringMatching(/^blocklist file \/etc\/shadow is outside the feed directories \(FOS1_FEED_DIRS\) \(.*feeds\)/) });
      expect(await refusal({ file: `${feeds}-other/x.txt` })).toMatchObject({ type: 'InvalidBlocklist', message: expect.stringContaining('is outside the feed directories') });
      expect(await refusal({ file: `${feeds}/./a.txt` })).toMatchObject({ message: expect.stringContaining('must be a normalised absolute path') });
    });

    test('without feed directories no file reference is read', async () => {
      const none = new BlocklistStore(join(dir, 'store'));
      writeFileSync(join(feeds, 'a.txt'), '192.0.2.1\n');
      await expect(none.read({ file: join(feeds, 'a.txt') })).rejects.toThrow(/is outside the feed directories \(FOS1_FEED_DIRS\) \(none are configured\)/);
    });

    test('a link out of the feed directory, file or directory, is refused', async () => {
      writeFileSync(join(outside, 'secret.txt'), `${SECRET}\n`);
      symlinkSync(join(outside, 'secret.txt'), join(feeds, 'evil.txt'));
      symlinkSync(outside, join(feeds, 'dir'));
      for (const file of [join(feeds, 'evil.txt'), join(feeds, 'dir', 'secret.txt')]) {
        const { type, message } = await refusal({ file });
        expect(type).toBe('InvalidBlocklist');
        expect(message).toContain('resolves through a link to a path outside its directory');
        expect(message).not.toContain('s3cr3t');
      }
    });

    test('a FIFO is refused at once, never opened for a read that would block', async () => {
      execFileSync('mkfifo', [join(feeds, 'pipe')]);
      const started = Date.now();
      expect(await refusal({ file: join(feeds, 'pipe') })).toEqual({ type: 'InvalidBlocklist', message: `blocklist file ${join(feeds, 'pipe')} is a FIFO, not a regular file: only regular files are read` });
      expect(Date.now() - started).toBeLessThan(2000);
    });

    test('a directory is refused; a missing file is BlocklistRefNotFound', async () => {
      mkdirSync(join(feeds, 'd'));
      expect(await refusal({ file: join(feeds, 'd') })).toMatchObject({ message: expect.stringContaining('is a directory, not a regular file') });
      expect(await refusal({ file: join(feeds, 'nope.txt') })).toEqual({ type: 'BlocklistRefNotFound', message: `blocklist file ${join(feeds, 'nope.txt')} cannot be read: it does not exist` });
    });

    test('a file over the size limit is refused unread, a 10 GB sparse one included', async () => {
      const big = join(feeds, 'big.txt');
      closeSync(openSync(big, 'w'));
      truncateSync(big, 10 * 1024 ** 3);
      const started = Date.now();
      expect(await refusal({ file: big })).toEqual({ type: 'InvalidBlocklist', message: `blocklist file ${big} is ${10 * 1024 ** 3} bytes, more than the limit of 1048576 (FOS1_FEED_MAX_BYTES)` });
      expect(Date.now() - started).toBeLessThan(2000);
    });

    test('a bad line names the file, the line number and the rule, never the content', async () => {
      const file = join(feeds, 'bad.txt');
      for (const line of [SECRET, `192.0.2.1 ${SECRET}`, `10.0.0.1/24 # ${SECRET}`, `10.0.0.1/99`]) {
        writeFileSync(file, `192.0.2.7\n${line}\n`);
        const { type, message } = await refusal({ file });
        expect(type).toBe('InvalidBlocklist');
        expect(message).toMatch(new RegExp(`^blocklist file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line 2: `));
        expect(message).not.toContain('s3cr3t');
        expect(message).not.toContain('10.0.0.1');
      }
    });
  });
});
