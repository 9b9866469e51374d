/**
 * One fos1 contender run, in its own process so its peak RSS is its own:
 *   tsx bench/datapath/fos1-load.ts PIN_DIR LIST_FILE STORE_DIR [THREADS]
 * Loads LIST_FILE into the pinned maps through the activity path (syncFromRef: read,
 * parse, dump, diff, batch apply, digest read-back), then adds single entries through
 * the patch path and through a full-state sync, and prints one JSON line of results.
 * THREADS (1 or 2, default 2) is `BlocklistMaps`' `batchThreads`: 1 measures the
 * single-threaded batch apply and dump for comparison in the same run.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BlocklistStore, createBlocklistSync } from '../../activities/blocklist-sync';
import { BlocklistMaps } from '../../bpf/blocklist-maps';

const [pinDir, listFile, storeDir, threadsArg = '2'] = process.argv.slice(2) as [string, string, string, string?];
if (threadsArg !== '1' && threadsArg !== '2') throw new Error(`THREADS must be 1 or 2, got ${threadsArg}`);
const maps = BlocklistMaps.open({
  batchThreads: threadsArg === '2' ? 2 : 1,
  pinDir,
  maxEntriesV4: 200_000,
  maxEntriesV6: 1024,
  hostMaps: { maxEntriesV4: 1_200_000, maxEntriesV6: 1024 },
});
const sync = createBlocklistSync({ maps: () => maps, store: new BlocklistStore(storeDir, undefined, { dirs: [dirname(listFile), storeDir] }) });
const ms = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e6;

async function main(): Promise<void> {
  let t = process.hrtime.bigint();
  const load = await sync.syncFromRef({ file: listFile });
  const loadMs = ms(t);

  // One new entry, five times (different addresses), through the patch path.
  const patchMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    t = process.hrtime.bigint();
    sync.patch({ upsert: [{ cidr: `10.200.0.${i + 1}` }], remove: [] });
    patchMs.push(ms(t));
  }

  // One new entry as a full desired state (the whole list, the patched entries and one
  // more line): the diff path, which has to compare all of it.
  const plusOne = join(storeDir, 'plus-one.txt');
  copyFileSync(listFile, plusOne);
  appendFileSync(plusOne, '\n10.200.0.1\n10.200.0.2\n10.200.0.3\n10.200.0.4\n10.200.0.5\n10.200.1.1\n');
  t = process.hrtime.bigint();
  const full = await sync.syncFromRef({ file: plusOne });
  const fullMs = ms(t);

  const memlock = (name: string): number => {
    const info = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(pinDir, name)], { encoding: 'utf8' })) as { bytes_memlock?: number };
    return info.bytes_memlock ?? 0;
  };
  process.stdout.write(
    `${JSON.stringify({
      batchThreads: Number(threadsArg),
      loadMs,
      loadTimings: load.timings,
      loadCounts: load.counts,
      patchMs,
      fullPlusOneMs: fullMs,
      fullPlusOneTimings: full.timings,
      fullPlusOneCounts: full.counts,
      maxRssKiB: process.resourceUsage().maxRSS,
      kernelBytes: memlock('blockhost_v4') + memlock('blocklist_v4'),
    })}\n`,
  );
  maps.close();
}

void main();
