/**
 * scripts/audit-verify.ts (what `fos1 audit verify` wraps) on a real file store: exit 0 and
 * a one-line summary when intact, 1 and the first mismatching record when not, 2 for bad
 * arguments; only the public key file is needed.
 */
import { writeFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditFiles, FileAuditStore, loadOrCreateSigningKey, createCheckpointSigner } from '../../activities/audit-store';
import { auditVerifyMain } from '../../scripts/audit-verify';
import { trail } from '../helpers/audit-records';

describe('audit-verify script', () => {
  let root: string;
  let dir: string;
  let pub: string;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'fos1-audit-verify-'));
    dir = join(root, 'audit');
    const keyPath = join(root, 'audit-key.pem');
    const signer = createCheckpointSigner(loadOrCreateSigningKey(keyPath));
    expect(createCheckpointSigner(loadOrCreateSigningKey(keyPath)).keyId).toBe(signer.keyId); // loaded, not made anew
    pub = `${keyPath}.pub`;
    const store = FileAuditStore.open({ dir, checkpoints: { signer, everyEntries: 2 } });
    await store.append(trail('c1', 4));
    await store.close();
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test('intact: exit 0 and a summary', async () => {
    const { status, output } = await auditVerifyMain(['--file', dir, '--public-key', pub], {});
    expect(status).toBe(0);
    expect(output).toMatch(/^audit chain intact: 4 entries \(head seq 4, [0-9a-f]{64}\), 1 checkpoint\nlast good checkpoint: seq 4 at .* \(key [0-9a-f]{16}\); 0 entries after it$/);
  });

  test('tampered: exit 1 naming the record; --json gives the report', async () => {
    const chain = join(dir, AuditFiles.chain);
    const original = readFileSync(chain, 'utf8');
    writeFileSync(chain, original.replace('"actor":"bob"', '"actor":"bot"')); // record 2 is bob's
    try {
      const text = await auditVerifyMain(['--file', dir, '--public-key', pub], {});
      expect(text.status).toBe(1);
      expect(text.output).toContain('first: entry 2 (c1/run-1/1, chain.ndjson line 2) does not match its hash: its content was changed');
      const json = await auditVerifyMain(['--file', dir, '--public-key', pub, '--json'], {});
      expect(JSON.parse(json.output)).toMatchObject({ ok: false, validThrough: 1, firstProblem: { kind: 'hash-mismatch', seq: 2, id: 'c1/run-1/1' } });
    } finally {
      writeFileSync(chain, original);
    }
  });

  test('bad arguments: exit 2 naming the option', async () => {
    expect(await auditVerifyMain(['--file', dir, '--postgres', 'postgresql://x/y', '--public-key', pub], {})).toEqual({ status: 2, output: 'audit verify: --file and --postgres: give one store, not both' });
    expect(await auditVerifyMain(['--file', join(root, 'nope'), '--public-key', pub], {})).toEqual({ status: 2, output: `audit verify: --file: ${join(root, 'nope')} does not exist` });
    expect((await auditVerifyMain(['--colour'], {})).status).toBe(2);
  });
});
