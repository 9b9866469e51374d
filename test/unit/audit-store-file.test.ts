/**
 * The append-only file backend, on real files: appends are chained, fsynced and idempotent
 * across a reopen (the id index is rebuilt from the file); editing one byte, deleting a
 * line, forging or dropping checkpoints are each named by `verify`; a torn last line is cut;
 * queries filter by change, node, actor, action and time; the activity maps failures to the
 * retry policy's types.
 */
import { ApplicationFailure } from '@temporalio/common';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AuditConflictError, AuditFiles, createAuditActivities, FileAuditStore, verifyAuditStore } from '../../activities/audit-store';
import { AuditFailureType, canonicalJson } from '../../model/audit-chain';
import { testKey, trail } from '../helpers/audit-records';

describe('FileAuditStore', () => {
  let dir: string;
  const key = testKey();
  const open = (everyEntries = 4) => FileAuditStore.open({ dir, checkpoints: { signer: key.signer, everyEntries } });
  const chainPath = () => join(dir, AuditFiles.chain);
  const lines = () => readFileSync(chainPath(), 'utf8').split('\n').filter(Boolean);
  beforeEach(() => {
    dir = join(mkdtempSync(join(tmpdir(), 'fos1-audit-')), 'audit');
  });
  afterEach(() => rmSync(join(dir, '..'), { recursive: true, force: true }));

  test('appends chain each record to the one before, checkpoint every N entries, and verify', async () => {
    const store = open(4);
    const first = await store.append(trail('c1', 3));
    expect(first.appended.map((a) => a.seq)).toEqual([1, 2, 3]);
    expect(first.checkpoint).toEqual({ seq: 3, keyId: key.signer.keyId }); // the first checkpoint comes with the first append
    const second = await store.append(trail('c1', 5, { from: 3 }));
    expect(second.checkpoint).toEqual({ seq: 8, keyId: key.signer.keyId });
    const entries = lines().map((l) => JSON.parse(l) as { seq: number; prevHash: string; hash: string });
    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    entries.slice(1).forEach((e, i) => expect(e.prevHash).toBe(entries[i]!.hash));
    // each line is the canonical encoding (what docs/audit.md promises a reader)
    for (const l of lines()) expect(canonicalJson(JSON.parse(l))).toBe(l);
    const report = await store.verify(key.publicKeys);
    expect(report).toMatchObject({ ok: true, entries: 8, validThrough: 8, checkpoints: 2, lastGoodCheckpoint: { seq: 8 }, uncheckpointed: 0 });
    await store.close();
  });

  test('the same record id twice is stored once, also after the store is reopened', async () => {
    let store = open();
    const records = trail('c1', 3);
    await store.append(records);
    const again = await store.append([records[1]!, ...trail('c1', 1, { from: 3 })]);
    expect(again.duplicates).toEqual([{ id: records[1]!.id, seq: 2 }]);
    expect(again.appended).toEqual([{ id: 'c1/run-1/3', seq: 4 }]);
    await store.close();
    store = open();
    const afterReopen = await store.append(records);
    expect(afterReopen.appended).toEqual([]);
    expect(afterReopen.duplicates.map((d) => d.seq)).toEqual([1, 2, 3]);
    expect(lines()).toHaveLength(4);
    await store.close();
  });

  test('an id stored with other content is a conflict and nothing of the batch is written', async () => {
    const store = open();
    const [a, b] = trail('c1', 2);
    await store.append([a!]);
    await expect(store.append([b!, { id: a!.id, record: { ...a!.record, actor: 'mallory' } }])).rejects.toThrow(AuditConflictError);
    expect(lines()).toHaveLength(1);
    await store.close();
  });

  test('one edited byte in one stored record: verify names that record (seq and id)', async () => {
    const store = open(100);
    const records = trail('c1', 6);
    await store.append(records);
    await store.close();
    const text = readFileSync(chainPath());
    // Change one byte inside record 4's detail text ("record number 3 of c1" → "record number 3 of d1").
    const at = text.indexOf('record number 3 of c1') + 'record number 3 of '.length;
    text[at] = 'd'.charCodeAt(0);
    writeFileSync(chainPath(), text);
    const report = await verifyAuditStore({ backend: 'file', dir }, key.publicKeys);
    expect(report.ok).toBe(false);
    expect(report.validThrough).toBe(3);
    expect(report.firstProblem).toMatchObject({ kind: 'hash-mismatch', seq: 4, id: records[3]!.id, where: `${AuditFiles.chain} line 4` });
  });

  test('a byte edit that breaks the JSON: verify names the line and the seq it should hold', async () => {
    const store = open(100);
    const records = trail('c1', 3);
    await store.append(records);
    await store.close();
    const text = readFileSync(chainPath());
    text[text.indexOf('{"hash"', text.indexOf('\n') + 1)] = '['.charCodeAt(0); // line 2's first byte
    writeFileSync(chainPath(), text);
    const report = await verifyAuditStore({ backend: 'file', dir }, key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'unreadable', seq: 2, id: records[1]!.id, where: `${AuditFiles.chain} line 2` });
  });

  test('a deleted record: verify names the gap', async () => {
    const store = open(100);
    const records = trail('c1', 5);
    await store.append(records);
    await store.close();
    const kept = lines().filter((_, i) => i !== 2);
    writeFileSync(chainPath(), `${kept.join('\n')}\n`);
    const report = await verifyAuditStore({ backend: 'file', dir }, key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'gap', seq: 3, seqTo: 3, id: records[3]!.id });
    expect(report.firstProblem!.message).toBe(`entry 3 is missing: seq 4 (${records[3]!.id}) follows after seq 2 (${records[1]!.id})`);
  });

  test('a forged checkpoint is named (by position, seq and key)', async () => {
    const store = open(100);
    await store.append(trail('c1', 3));
    await store.close();
    const genuine = JSON.parse(readFileSync(join(dir, AuditFiles.checkpoints), 'utf8').trim()) as { signature: string };
    // Same key id, a claim about another head, and a signature copied from the genuine one.
    appendFileSync(join(dir, AuditFiles.checkpoints), `${canonicalJson({ seq: 2, headHash: 'f'.repeat(64), time: '2026-03-01T12:00:00.000Z', keyId: key.signer.keyId, signature: genuine.signature })}\n`);
    const report = await verifyAuditStore({ backend: 'file', dir }, key.publicKeys);
    expect(report.problems).toHaveLength(1);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-bad-signature', checkpoint: { index: 1, seq: 2, keyId: key.signer.keyId }, where: `${AuditFiles.checkpoints} line 2` });
  });

  test('the chain cut back below a checkpoint: verify names the entries removed', async () => {
    const store = open(3);
    await store.append(trail('c1', 2));
    await store.append(trail('c1', 4, { from: 2 })); // checkpoint at 6
    await store.close();
    writeFileSync(chainPath(), `${lines().slice(0, 4).join('\n')}\n`);
    const report = await verifyAuditStore({ backend: 'file', dir }, key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-beyond-chain', seq: 5, checkpoint: { seq: 6 } });
  });

  test('a torn last line (a crash mid-append) is cut on open; the chain goes on intact', async () => {
    let store = open();
    await store.append(trail('c1', 2));
    await store.close();
    appendFileSync(chainPath(), '{"hash":"abc","id":"c1/run-1/2","prev');
    store = open();
    const retried = await store.append(trail('c1', 1, { from: 2 }));
    expect(retried.appended).toEqual([{ id: 'c1/run-1/2', seq: 3 }]);
    expect((await store.verify(key.publicKeys)).ok).toBe(true);
    await store.close();
  });

  test('one process appends; read-only openers see complete lines without the lock', async () => {
    const store = open();
    expect(() => open()).toThrow('already open for appending in this process'); // two writers would fork the chain
    await store.append(trail('c1', 2));
    appendFileSync(chainPath(), '{"partial'); // as if an append were in progress
    const reader = FileAuditStore.open({ dir, readOnly: true });
    expect((await reader.query({})).map((e) => e.seq)).toEqual([1, 2]);
    expect((await reader.verify(key.publicKeys)).ok).toBe(true);
    await expect(reader.append(trail('c1', 1))).rejects.toThrow('read-only');
    await store.close();
    writeFileSync(join(dir, AuditFiles.lock), '1\n'); // another live process (pid 1) holds it
    expect(() => open()).toThrow('in use by process 1');
    writeFileSync(join(dir, AuditFiles.lock), `${process.pid}\n`); // our own pid, left by a predecessor
    await open().close();
  });

  test('queries by change, node, actor, action and time range', async () => {
    const store = open(100);
    await store.append(trail('c1', 6));
    await store.append(trail('c2', 4, { base: '2026-03-02T10:00:00.000Z' }));
    const ids = async (q: Parameters<FileAuditStore['query']>[0]) => (await store.query(q)).map((e) => e.id);
    expect(await ids({ changeId: 'c2' })).toEqual(['c2/run-1/0', 'c2/run-1/1', 'c2/run-1/2', 'c2/run-1/3']);
    expect(await ids({ changeId: 'c1', node: 'n1' })).toEqual(['c1/run-1/1', 'c1/run-1/3', 'c1/run-1/5']);
    expect(await ids({ actor: 'alice', changeId: 'c1' })).toEqual(['c1/run-1/0', 'c1/run-1/2', 'c1/run-1/4']);
    expect(await ids({ step: 'applied' })).toEqual(['c1/run-1/3', 'c2/run-1/3']);
    expect(await ids({ from: '2026-03-01T10:01:00.000Z', to: '2026-03-01T10:03:00.000Z' })).toEqual(['c1/run-1/1', 'c1/run-1/2']);
    expect(await ids({ limit: 2, afterSeq: 8 })).toEqual(['c2/run-1/2', 'c2/run-1/3']);
    await store.close();
  });

  test('appendAudit: a malformed batch and a conflicting id are non-retryable; duplicates are counted', async () => {
    const store = open();
    const { appendAudit } = createAuditActivities({ store, logger: pino({ level: 'silent' }) });
    const records = trail('c1', 2);
    expect(await appendAudit(records)).toEqual({ appended: 2, duplicates: 0, headSeq: 2 });
    expect(await appendAudit(records)).toEqual({ appended: 0, duplicates: 2, headSeq: 2 });
    const bad = appendAudit([{ id: 'x', record: { ...records[0]!.record, startedAt: 'soon' } }]);
    await expect(bad).rejects.toMatchObject({ type: AuditFailureType.InvalidAuditRecord, nonRetryable: true, message: 'records[0].record.startedAt: must be an ISO 8601 date-time' });
    const conflict = appendAudit([{ id: records[0]!.id, record: records[1]!.record }]);
    await expect(conflict).rejects.toBeInstanceOf(ApplicationFailure);
    await expect(conflict).rejects.toMatchObject({ type: AuditFailureType.AuditRecordConflict, nonRetryable: true });
    await store.close();
  });
});
