/**
 * The EVE tail keeps its read position across restarts, on real files: stop the tail,
 * change the file (append, rotate, truncate, corrupt the state file), start a new tail
 * with the same state file, and assert exactly the lines that are new are delivered —
 * nothing read twice, nothing skipped. And where the ingest configuration puts the state file.
 */
import { appendFileSync, mkdtempSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIngestConfig } from '../../ingest/config';
import { EveFileTail, readTailPosition } from '../../ingest/eve-tail';
import { until } from '../helpers/eventually';
import { describePrivileged } from '../helpers/capabilities';
import { sharedLines } from '../helpers/shared-data';

const SAMPLE = sharedLines('suricata', 'eve', 'eve-alerts.log');

let dir: string;
let path: string;
let stateFile: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fos1-eve-resume-'));
  path = join(dir, 'eve.json');
  stateFile = join(dir, 'eve.json.fos1-position.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs a tail until `expected` lines arrived (and no more after a final read), then stops it. */
async function runTail(expected: number, from: 'start' | 'end' = 'end', errors: unknown[] = []): Promise<{ seen: string[]; tail: EveFileTail }> {
  const seen: string[] = [];
  const tail = new EveFileTail(path, { from, pollMs: 50, stateFile, onLine: (l) => void seen.push(l), onError: (e) => void errors.push(e) });
  await tail.start();
  try {
    await until(() => seen.length >= expected, `${expected} line(s)`);
    await tail.poll();
  } finally {
    await tail.stop();
  }
  return { seen, tail };
}

const lines = (from: number, to: number) => SAMPLE.slice(from, to).map((l) => `${l}\n`).join('');

describePrivileged('EVE tail read position', ['shared-data'], () => {
  test('after a restart, exactly the lines appended while it was stopped are delivered', async () => {
    writeFileSync(path, lines(0, 2));
    const first = await runTail(2, 'start');
    expect(first.seen).toEqual(SAMPLE.slice(0, 2));
    // The position is on disk: this file, just past the last line.
    const saved = await readTailPosition(stateFile);
    const s = statSync(path);
    expect(saved).toMatchObject({ path, dev: s.dev, ino: s.ino, position: s.size });

    appendFileSync(path, lines(2, 5));
    // `from: 'start'` would re-read everything; the saved position wins.
    const second = await runTail(3, 'start');
    expect(second.seen).toEqual(SAMPLE.slice(2, 5));
    expect(second.tail.stats.resumed).toBe(true);

    // A restart with nothing new delivers nothing.
    const third = await runTail(0, 'start');
    expect(third.seen).toEqual([]);
  });

  test('a line half-written when the tail stopped is delivered whole, once, after the restart', async () => {
    writeFileSync(path, `${lines(0, 1)}${SAMPLE[1]!.slice(0, 30)}`);
    const first = await runTail(1, 'start');
    expect(first.seen).toEqual([SAMPLE[0]]);
    appendFileSync(path, `${SAMPLE[1]!.slice(30)}\n${lines(2, 3)}`);
    const second = await runTail(2);
    expect(second.seen).toEqual([SAMPLE[1], SAMPLE[2]]);
  });

  test('rotated while stopped: the rest of the old file (now eve.json.1) first, then the new file from its start', async () => {
    writeFileSync(path, lines(0, 2));
    await runTail(2, 'start');
    appendFileSync(path, lines(2, 3)); // written after the stop, before the rotation
    renameSync(path, `${path}.1`);
    writeFileSync(path, lines(3, 5));
    const second = await runTail(3);
    expect(second.seen).toEqual(SAMPLE.slice(2, 5));
    expect(second.tail.stats.rotations).toBe(1);
    // Now following the new file.
    const saved = await readTailPosition(stateFile);
    expect(saved).toMatchObject({ ino: statSync(path).ino, position: statSync(path).size });
  });

  test('rotated while stopped and the old file gone: the new file is read from its start', async () => {
    writeFileSync(path, lines(0, 2));
    await runTail(2, 'start');
    rmSync(path);
    writeFileSync(path, lines(2, 4));
    const second = await runTail(2);
    expect(second.seen).toEqual(SAMPLE.slice(2, 4));
  });

  test('truncated while stopped (copytruncate), even when refilled past the saved offset: read from the start', async () => {
    writeFileSync(path, lines(0, 2));
    await runTail(2, 'start');
    truncateSync(path, 0);
    appendFileSync(path, lines(4, 8)); // longer than before: only the content tells
    const second = await runTail(4);
    expect(second.seen).toEqual(SAMPLE.slice(4, 8));
    expect(second.tail.stats.truncations).toBe(1);
  });

  test('a damaged state file is reported, naming the file and field, and the tail starts as configured', async () => {
    writeFileSync(path, lines(0, 2));
    writeFileSync(stateFile, JSON.stringify({ path, dev: 1, ino: 'x', position: 0, before: '', savedAt: '' }));
    const errors: unknown[] = [];
    const first = await runTail(2, 'start', errors);
    expect(first.seen).toEqual(SAMPLE.slice(0, 2));
    expect(String(errors[0])).toMatch(new RegExp(`state file ${stateFile.replace(/[.]/g, '\\.')} is invalid: ino: `));
    // …and it is rewritten with a good position.
    expect(await readTailPosition(stateFile)).toMatchObject({ position: statSync(path).size });
  });

  test('the position is saved only after beforeSave settles (decisions sent), and atomically', async () => {
    writeFileSync(path, lines(0, 1));
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const seen: string[] = [];
    const tail = new EveFileTail(path, { from: 'start', pollMs: 50, stateFile, beforeSave: () => gate, onLine: (l) => void seen.push(l) });
    await tail.start();
    try {
      await until(() => seen.length === 1, 'the line');
      expect(await readTailPosition(stateFile)).toBeNull();
    } finally {
      release();
      await tail.stop();
    }
    expect(await readTailPosition(stateFile)).toMatchObject({ position: statSync(path).size });
    expect(tail.stats.saves).toBe(1);
  });
});

describePrivileged('ingest configuration of the read position', ['shared-data'], () => {
  test('kept next to the EVE file by default, at FOS1_EVE_STATE_FILE when given, and not at all with "off"', () => {
    expect(parseIngestConfig({ FOS1_EVE_FILE: '/var/log/suricata/eve.json', FOS1_ENFORCE_NODES: 'node-a' }).eveStateFile).toBe('/var/log/suricata/eve.json.fos1-position.json');
    expect(parseIngestConfig({ FOS1_EVE_FILE: '/var/log/suricata/eve.json', FOS1_EVE_STATE_FILE: '/var/lib/fos1/eve.pos', FOS1_ENFORCE_NODES: 'node-a' }).eveStateFile).toBe('/var/lib/fos1/eve.pos');
    expect(parseIngestConfig({ FOS1_EVE_FILE: '/var/log/suricata/eve.json', FOS1_EVE_STATE_FILE: 'off', FOS1_ENFORCE_NODES: 'node-a' })).not.toHaveProperty('eveStateFile');
    expect(parseIngestConfig({ FOS1_ENFORCE_NODES: 'node-a' })).not.toHaveProperty('eveStateFile');
  });
});
