/**
 * The PostgreSQL audit backend on a real server (initdb'd for this file): append and verify;
 * one byte of one stored record changed with an UPDATE, a row deleted, a checkpoint forged,
 * each named by `verify`; the same record id appended twice is one row, also from two stores
 * at once; queries by change, node, actor, action and time; and records appended through the
 * activity by a real Temporal workflow while the server is down are all written once it is
 * back — none lost, none twice, the chain intact.
 */
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { createAuditActivities, PostgresAuditStore, verifyAuditStore } from '../../activities/audit-store';
import { canonicalJson } from '../../model/audit-chain';
import { testKey, trail } from '../helpers/audit-records';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { startPostgres, type TestPostgres } from '../helpers/postgres';
import { startTemporal } from '../helpers/temporal';

const silent = () => undefined;
const quiet = { log: silent, trace: silent, debug: silent, info: silent, warn: silent, error: (m: string) => console.error(m) };

describePrivileged('PostgreSQL audit store', ['postgres'], () => {
  let pg: TestPostgres;
  const key = testKey();
  let n = 0;
  const stores: PostgresAuditStore[] = [];
  /** A fresh database and a store on it. */
  async function fresh(everyEntries = 100): Promise<{ db: string; url: string; store: PostgresAuditStore }> {
    const db = `audit_${++n}`;
    const url = await pg.createDatabase(db);
    const store = new PostgresAuditStore({ connection: { connectionString: url }, checkpoints: { signer: key.signer, everyEntries } });
    stores.push(store);
    return { db, url, store };
  }

  beforeAll(async () => {
    pg = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
    await pg?.destroy();
  });

  test('appends are chained, checkpointed every N entries, and verify', async () => {
    const { url, store } = await fresh(4);
    await store.append(trail('c1', 3));
    const second = await store.append(trail('c1', 5, { from: 3 }));
    expect(second.head.seq).toBe(8);
    expect(second.checkpoint).toEqual({ seq: 8, keyId: key.signer.keyId });
    const report = await verifyAuditStore({ backend: 'postgres', connectionString: url }, key.publicKeys);
    expect(report).toMatchObject({ ok: true, entries: 8, validThrough: 8, checkpoints: 2, lastGoodCheckpoint: { seq: 8 }, uncheckpointed: 0 });
  });

  test('one byte of one stored record changed with an UPDATE: verify names that record', async () => {
    const { db, store } = await fresh();
    const records = trail('c1', 6);
    await store.append(records);
    await pg.sql(db, "UPDATE fos1_audit_entries SET record_json = replace(record_json, 'record number 3 of c1', 'record number 3 of d1') WHERE seq = 4");
    const report = await store.verify(key.publicKeys);
    expect(report.validThrough).toBe(3);
    expect(report.firstProblem).toMatchObject({ kind: 'hash-mismatch', seq: 4, id: records[3]!.id, where: 'fos1_audit_entries seq=4' });
  });

  test('a query column edited away from its record is named (queries must not be misdirected)', async () => {
    const { db, store } = await fresh();
    const records = trail('c1', 3);
    await store.append(records);
    await pg.sql(db, "UPDATE fos1_audit_entries SET actor = 'carol' WHERE seq = 2");
    expect((await store.verify(key.publicKeys)).firstProblem).toMatchObject({ kind: 'index-mismatch', seq: 2, id: records[1]!.id, message: expect.stringContaining('actor') });
  });

  test('a deleted row: verify names the gap', async () => {
    const { db, store } = await fresh();
    const records = trail('c1', 5);
    await store.append(records);
    await pg.sql(db, 'DELETE FROM fos1_audit_entries WHERE seq = 3');
    const report = await store.verify(key.publicKeys);
    expect(report.firstProblem).toMatchObject({ kind: 'gap', seq: 3, seqTo: 3, id: records[3]!.id });
  });

  test('rows deleted from the end: the head row and the checkpoint name the removal', async () => {
    const { db, store } = await fresh(5);
    await store.append(trail('c1', 5)); // checkpoint at 5
    await pg.sql(db, 'DELETE FROM fos1_audit_entries WHERE seq > 3');
    const report = await store.verify(key.publicKeys);
    expect(report.problems.map((p) => p.kind)).toEqual(['head-mismatch', 'checkpoint-beyond-chain']);
    expect(report.firstProblem).toMatchObject({ seq: 4 });
  });

  test('a forged checkpoint is named', async () => {
    const { db, store } = await fresh();
    await store.append(trail('c1', 3));
    const [genuine] = await pg.sql(db, 'SELECT n, signature FROM fos1_audit_checkpoints');
    const forger = testKey();
    await pg.sql(db, 'INSERT INTO fos1_audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES (2, $1, $2, $3, $4)', ['e'.repeat(64), '2026-03-01T12:00:00.000Z', key.signer.keyId, forger.signer.sign(2, 'e'.repeat(64), '2026-03-01T12:00:00.000Z').signature]);
    const report = await store.verify(key.publicKeys);
    expect(report.problems).toHaveLength(1);
    expect(report.firstProblem).toMatchObject({ kind: 'checkpoint-bad-signature', checkpoint: { index: 1, seq: 2, keyId: key.signer.keyId } });
    expect(genuine).toBeDefined();
  });

  test('the same record id twice is one row, also when two stores append at once', async () => {
    const { db, url, store } = await fresh();
    const other = new PostgresAuditStore({ connection: { connectionString: url }, checkpoints: { signer: key.signer } });
    stores.push(other);
    const records = trail('c1', 20);
    // Two workers retrying the same batches concurrently, in different orders of batches.
    await Promise.all([store.append(records.slice(0, 10)), other.append(records.slice(10)), other.append(records.slice(0, 10)), store.append(records.slice(5, 15))]);
    await store.append([records[0]!]);
    const rows = await pg.sql(db, 'SELECT record_id, count(*)::int AS c FROM fos1_audit_entries GROUP BY record_id HAVING count(*) > 1');
    expect(rows).toEqual([]);
    const [{ total, max }] = (await pg.sql(db, 'SELECT count(*)::int AS total, max(seq)::int AS max FROM fos1_audit_entries')) as [{ total: number; max: number }];
    expect([total, max]).toEqual([20, 20]);
    expect((await store.verify(key.publicKeys)).ok).toBe(true);
    // Stored JSON is the canonical encoding of what was given.
    const [row] = await pg.sql(db, 'SELECT record_json FROM fos1_audit_entries WHERE record_id = $1', [records[7]!.id]);
    expect(row!.record_json).toBe(canonicalJson(records[7]!.record));
  });

  test('queries by change, node, actor, action and time range', async () => {
    const { store } = await fresh();
    await store.append(trail('c1', 6));
    await store.append(trail('c2', 4, { base: '2026-03-02T10:00:00.000Z' }));
    const ids = async (q: Parameters<PostgresAuditStore['query']>[0]) => (await store.query(q)).map((e) => e.id);
    expect(await ids({ changeId: 'c2' })).toEqual(['c2/run-1/0', 'c2/run-1/1', 'c2/run-1/2', 'c2/run-1/3']);
    expect(await ids({ changeId: 'c1', node: 'n1' })).toEqual(['c1/run-1/1', 'c1/run-1/3', 'c1/run-1/5']);
    expect(await ids({ actor: 'alice', changeId: 'c1' })).toEqual(['c1/run-1/0', 'c1/run-1/2', 'c1/run-1/4']);
    expect(await ids({ step: 'applied' })).toEqual(['c1/run-1/3', 'c2/run-1/3']);
    expect(await ids({ from: '2026-03-01T10:01:00.000Z', to: '2026-03-01T10:03:00.000Z' })).toEqual(['c1/run-1/1', 'c1/run-1/2']);
    expect(await ids({ limit: 2, afterSeq: 8 })).toEqual(['c2/run-1/2', 'c2/run-1/3']);
    const [entry] = await store.query({ changeId: 'c2', step: 'submitted' });
    expect(entry!.record).toEqual(trail('c2', 1, { base: '2026-03-02T10:00:00.000Z' })[0]!.record);
  });

  describePrivileged('while the server is down', ['temporal-cli'], () => {
    let env: TestWorkflowEnvironment;
    beforeAll(async () => {
      env = await startTemporal();
    }, 120_000);
    afterAll(async () => {
      await env?.teardown();
    });

    test('records appended by a workflow while PostgreSQL is stopped are all written once when it is back', async () => {
      const { db, store } = await fresh(10);
      const logger = pino({ level: 'silent' });
      const worker = await Worker.create({
        connection: env.nativeConnection,
        namespace: env.namespace ?? 'default',
        taskQueue: 'audit-test',
        workflowBundle: await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows/audit-append'), logger: quiet }),
        activities: createAuditActivities({ store, logger }),
      });
      await worker.runUntil(async () => {
        // A first change while the database is up.
        const before = await env.client.workflow.execute('auditAppendWorkflow', { taskQueue: 'audit-test', workflowId: 'audit-before', args: ['c-before', [trail('c-before', 3).map((r) => r.record)]] });
        expect(before).toHaveLength(3);

        await pg.stop();
        const batches = [0, 1, 2].map((b) => trail('c-down', 4, { from: b * 4 }).map((r) => r.record));
        const handle = await env.client.workflow.start('auditAppendWorkflow', { taskQueue: 'audit-test', workflowId: 'audit-down', args: ['c-down', batches] });
        // The first batch's activity keeps failing while the server is down (and the workflow waits).
        await eventually(
          async () => (await handle.describe()).raw.pendingActivities?.[0]?.attempt ?? 0,
          (attempt) => attempt >= 3,
          'the audit activity to have been retried while PostgreSQL is down',
          60_000,
          200,
        );
        expect((await handle.describe()).status.name).toBe('RUNNING');
        await pg.start();
        const ids = (await handle.result()) as string[];
        expect(ids).toHaveLength(12);

        const rows = (await pg.sql(db, 'SELECT seq::int AS seq, record_id FROM fos1_audit_entries ORDER BY seq')) as { seq: number; record_id: string }[];
        // None lost, none twice, in the workflow's order, after the first change's records.
        expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
        expect(rows.slice(3).map((r) => r.record_id)).toEqual(ids);
        expect(new Set(rows.map((r) => r.record_id)).size).toBe(15);
        const report = await store.verify(key.publicKeys);
        expect(report).toMatchObject({ ok: true, entries: 15, lastGoodCheckpoint: { seq: 15 } });
        const down = await store.query({ changeId: 'c-down' });
        expect(down.map((e) => e.record)).toEqual(batches.flat());
      });
    }, 180_000);
  });
});
