/**
 * The audit chain's pure parts: the canonical JSON every hash is computed over (the
 * documented format, byte for byte), batch validation, queries, and the verifier's
 * verdicts on chains that were reordered, truncated below a checkpoint or rewritten with
 * recomputed hashes (fed from memory; the backends' own tests tamper with real storage).
 */
import { createHash } from 'node:crypto';
import { chainEntry, verifyAuditChain, type AuditChainSource, type RawCheckpoint, type RawEntry } from '../../activities/audit-store';
import { AuditInputError, canonicalJson, GENESIS_HASH, matchesAuditQuery, validateAuditBatch, validateAuditQuery, type AuditCheckpoint, type AuditEntry } from '../../model/audit-chain';
import { testKey, trail } from '../helpers/audit-records';

describe('canonicalJson', () => {
  test('sorts keys by code unit at every depth, leaves out undefined, writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: [{ z: true, y: null }, 'x'], c: undefined, B: 'é' })).toBe('{"B":"é","a":[{"y":null,"z":true},"x"],"b":1}');
  });
  test('is the same for the same value whatever the key order', () => {
    expect(canonicalJson({ x: 1, y: { p: 2, q: 3 } })).toBe(canonicalJson({ y: { q: 3, p: 2 }, x: 1 }));
  });
  test('refuses values with no JSON form, naming where', () => {
    expect(() => canonicalJson({ a: { b: Number.NaN } })).toThrow('$.a.b: NaN has no canonical JSON form');
    expect(() => canonicalJson({ a: 1n })).toThrow('$.a: a bigint has no canonical JSON form');
  });
});

describe('chainEntry', () => {
  test('hashes the canonical JSON of { v, seq, id, prevHash, record } (docs/audit.md)', () => {
    const [first] = trail('c1', 1);
    const entry = chainEntry(undefined, first!.id, first!.record);
    const r = first!.record;
    const text =
      `{"id":"${first!.id}","prevHash":"${GENESIS_HASH}","record":{"actor":"${r.actor}","changeId":"c1","detail":"${r.detail}","durationMs":${r.durationMs},` +
      `"node":"${r.node}","result":"ok","startedAt":"${r.startedAt}","step":"${r.step}"},"seq":1,"v":1}`;
    expect(entry.hash).toBe(createHash('sha256').update(text).digest('hex'));
    const second = chainEntry(entry, 'next', r);
    expect([second.seq, second.prevHash]).toEqual([2, entry.hash]);
  });
});

describe('validateAuditBatch', () => {
  const [a, b] = trail('c1', 2);
  test('names the record and field that breaks a rule', () => {
    expect(() => validateAuditBatch([a, { id: 'x', record: { ...b!.record, result: 'maybe' } }])).toThrow(new AuditInputError('records[1].record.result: Invalid option: expected one of "ok"|"failed"|"skipped"'));
    expect(() => validateAuditBatch([{ id: '', record: a!.record }])).toThrow('records[0].id: must not be empty');
    expect(() => validateAuditBatch([{ id: 'x', record: { ...a!.record, extra: 1 } }])).toThrow(/records\[0\]\.record: Unrecognized key/);
    expect(() => validateAuditBatch({})).toThrow('records: must be an array');
  });
  test('keeps one of an id given twice with the same record, refuses it with different ones', () => {
    expect(validateAuditBatch([a, b, a])).toEqual([a, b]);
    expect(() => validateAuditBatch([a, { id: a!.id, record: b!.record }])).toThrow(`records[1].id: ${a!.id} appears twice in the batch with different records`);
  });
});

describe('queries', () => {
  const records = trail('c1', 5);
  test('time range is [from, to) on startedAt; filters combine', () => {
    const q = validateAuditQuery({ from: records[1]!.record.startedAt, to: records[3]!.record.startedAt, actor: 'bob' });
    expect(records.filter((r, i) => matchesAuditQuery(i + 1, r.record, q)).map((r) => r.id)).toEqual([records[1]!.id]);
  });
  test('bad query fields are named', () => {
    expect(() => validateAuditQuery({ from: 'yesterday' })).toThrow('query.from: must be an ISO 8601 date-time');
    expect(() => validateAuditQuery({ colour: 'red' })).toThrow(/query\.\(root\): Unrecognized key/);
  });
});

describe('verifyAuditChain', () => {
  const key = testKey();
  function build(n: number): AuditEntry[] {
    const out: AuditEntry[] = [];
    for (const r of trail('c1', n)) out.push(chainEntry(out[out.length - 1], r.id, r.record));
    return out;
  }
  function source(entries: AuditEntry[], checkpoints: AuditCheckpoint[]): AuditChainSource {
    return {
      async *entries(): AsyncIterable<RawEntry> {
        for (const e of entries) yield { ok: true, ...e, where: `mem ${e.seq}` };
      },
      async *checkpoints(): AsyncIterable<RawCheckpoint> {
        for (const [i, c] of checkpoints.entries()) yield { ok: true, ...c, where: `cp ${i}` };
      },
    };
  }
  const cpAt = (entries: AuditEntry[], seq: number) => key.signer.sign(seq, entries[seq - 1]!.hash, '2026-03-01T12:00:00.000Z');

  test('an intact chain with checkpoints verifies, and says how much is not covered by one', async () => {
    const entries = build(6);
    const report = await verifyAuditChain(source(entries, [cpAt(entries, 2), cpAt(entries, 4)]), key.publicKeys);
    expect(report).toMatchObject({ ok: true, entries: 6, validThrough: 6, checkpoints: 2, lastGoodCheckpoint: { seq: 4 }, uncheckpointed: 2, problems: [] });
  });

  test('two entries swapped: the first one out of place is named', async () => {
    const entries = build(4);
    const swapped = [entries[0]!, entries[2]!, entries[1]!, entries[3]!];
    const report = await verifyAuditChain(source(swapped, []), key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'gap', seq: 2, seqTo: 2, id: entries[2]!.id });
  });

  test('a chain rewritten from seq 3 with recomputed hashes is caught by the checkpoint at 4', async () => {
    const entries = build(5);
    const forged = entries.slice(0, 2);
    for (const e of entries.slice(2)) forged.push(chainEntry(forged[forged.length - 1], e.id, { ...e.record, actor: 'mallory' }));
    const report = await verifyAuditChain(source(forged, [cpAt(entries, 2), cpAt(entries, 4)]), key.publicKeys);
    expect(report.ok).toBe(false);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-mismatch', seq: 4, checkpoint: { index: 1, seq: 4 } });
    expect(report.lastGoodCheckpoint).toMatchObject({ seq: 2 });
  });

  test('entries removed from the end below a checkpoint: truncation is named', async () => {
    const entries = build(5);
    const report = await verifyAuditChain(source(entries.slice(0, 3), [cpAt(entries, 5)]), key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-beyond-chain', seq: 4, checkpoint: { index: 0, seq: 5 } });
    expect(report.firstProblem!.message).toContain('entries 4..5 were removed');
  });

  test('a checkpoint by a key the verifier does not know is named, not trusted', async () => {
    const entries = build(2);
    const other = testKey();
    const report = await verifyAuditChain(source(entries, [other.signer.sign(2, entries[1]!.hash, '2026-03-01T12:00:00.000Z')]), key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-unknown-key', checkpoint: { index: 0, keyId: other.signer.keyId } });
    expect(report.lastGoodCheckpoint).toBeUndefined();
  });
});
