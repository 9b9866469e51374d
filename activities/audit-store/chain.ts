/**
 * Hashing, signing and verifying the audit chain (node:crypto), shared by both backends.
 * The encodings are in model/audit-chain.ts and docs/audit.md.
 *
 * Verification reads the raw stored entries in `seq` order and checks, for each, that its
 * `seq` follows the one before (a deleted entry is a gap), that its `prevHash` is the hash
 * of the one before, and that its hash is the sha256 of its own canonical encoding (an
 * edited byte). Then every checkpoint: signed by a known key, and naming the hash the
 * chain has at its `seq` (a rewritten chain, or one truncated below a checkpoint).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import type { AuditRecord } from '../../model/audit';
import { auditRecordSchema, checkpointSignedInput, entryHashInput, GENESIS_HASH, type AuditCheckpoint, type AuditEntry } from '../../model/audit-chain';

/** sha256, lowercase hex. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Builds the entry that follows `prev` (undefined for the first). */
export function chainEntry(prev: { seq: number; hash: string } | undefined, id: string, record: AuditRecord): AuditEntry {
  const seq = (prev?.seq ?? 0) + 1;
  const prevHash = prev?.hash ?? GENESIS_HASH;
  return { seq, id, prevHash, record, hash: sha256Hex(entryHashInput({ seq, id, prevHash, record })) };
}

/** The key id of an ed25519 public key: first 16 hex digits of sha256 over its SPKI DER. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Signs checkpoints with one ed25519 private key. */
export interface CheckpointSigner {
  keyId: string;
  sign(seq: number, headHash: string, time: string): AuditCheckpoint;
}

/** A signer from an ed25519 private key. */
export function createCheckpointSigner(privateKey: KeyObject): CheckpointSigner {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`audit signing key: must be an ed25519 key (got ${privateKey.asymmetricKeyType ?? 'a symmetric key'})`);
  const keyId = keyIdOf(createPublicKey(privateKey));
  return {
    keyId,
    sign(seq, headHash, time) {
      const payload = Buffer.from(checkpointSignedInput({ seq, headHash, time, keyId }), 'utf8');
      return { seq, headHash, time, keyId, signature: sign(null, payload, privateKey).toString('base64') };
    },
  };
}

/**
 * Loads the ed25519 signing key (PKCS#8 PEM) at `path`, creating it (mode 0600, fsynced)
 * with its public key beside it at `path.pub` (SPKI PEM) when there is none yet. The
 * public key is all a verifier needs; the private key never leaves the worker's host.
 */
export function loadOrCreateSigningKey(path: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`audit signing key ${path}: cannot be read (${(err as NodeJS.ErrnoException).code})`);
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    try {
      // `wx`: of two workers starting at once, one writes the key and the other reads it,
      // rather than each signing with a key of its own.
      writeDurably(path, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    } catch (writeErr) {
      if ((writeErr as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateSigningKey(path);
      throw new Error(`audit signing key ${path}: cannot be created (${(writeErr as NodeJS.ErrnoException).code})`);
    }
    writeFileSync(`${path}.pub`, publicKey.export({ type: 'spki', format: 'pem' }) as string, { mode: 0o644 });
    return privateKey;
  }
  try {
    return createPrivateKey(pem);
  } catch {
    throw new Error(`audit signing key ${path}: not a PKCS#8 PEM private key`);
  }
}

function writeDurably(path: string, text: string, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads ed25519 public keys (SPKI PEM files), keyed by key id, for {@link verifyAuditChain}. */
export function loadPublicKeys(paths: string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const path of paths) {
    let key: KeyObject;
    try {
      key = createPublicKey(readFileSync(path, 'utf8'));
    } catch {
      throw new Error(`audit public key ${path}: cannot be read as an SPKI PEM public key`);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`audit public key ${path}: must be ed25519 (got ${key.asymmetricKeyType})`);
    keys.set(keyIdOf(key), key);
  }
  return keys;
}

/** One stored entry as a backend read it: the parsed fields, or why it could not be parsed. */
export type RawEntry =
  | {
      ok: true;
      seq: number;
      id: string;
      prevHash: string;
      hash: string;
      /** The record as parsed from storage (not validated: verification judges it by its hash). */
      record: unknown;
      /** Where it is, for the report (`line 17` of the file, `row seq=17`). */
      where: string;
      /** A backend's own consistency finding (PostgreSQL: a query column that disagrees with the record). */
      problem?: string;
    }
  | { ok: false; where: string; message: string; id?: string };

/** One stored checkpoint as read, or why it could not be read. */
export type RawCheckpoint = ({ ok: true } & AuditCheckpoint & { where: string }) | { ok: false; where: string; message: string };

/** What a backend gives the verifier. */
export interface AuditChainSource {
  /** Every entry in `seq` order (the file: line order). */
  entries(): AsyncIterable<RawEntry>;
  /** Every checkpoint, in the order they were written. */
  checkpoints(): AsyncIterable<RawCheckpoint>;
  /** The store's own idea of its head (PostgreSQL's head row), if it keeps one. */
  head?(): Promise<{ seq: number; hash: string } | undefined>;
}

/** Kinds of problem verification reports. */
export type AuditProblemKind =
  | 'unreadable'
  | 'hash-mismatch'
  | 'link-mismatch'
  | 'gap'
  | 'out-of-order'
  | 'invalid-record'
  | 'index-mismatch'
  | 'head-mismatch'
  | 'checkpoint-unreadable'
  | 'checkpoint-unknown-key'
  | 'checkpoint-bad-signature'
  | 'checkpoint-mismatch'
  | 'checkpoint-beyond-chain';

/** Something that does not match, named precisely. */
export interface AuditProblem {
  kind: AuditProblemKind;
  /** The entry's sequence number (for a gap: the first missing one). */
  seq?: number;
  /** The entry's record id, when known. */
  id?: string;
  /** For a gap: the last missing sequence number. */
  seqTo?: number;
  /** For checkpoint problems: which checkpoint (0-based, in storage order), its seq and key. */
  checkpoint?: { index: number; seq?: number; keyId?: string; time?: string };
  where: string;
  message: string;
}

/** The verifier's answer. */
export interface AuditVerifyReport {
  ok: boolean;
  entries: number;
  /** Last entry read (the chain's head as stored). */
  head?: { seq: number; hash: string };
  /** Entries 1..validThrough were checked and found intact (0 when the first is bad). */
  validThrough: number;
  checkpoints: number;
  /** The newest checkpoint that verified (signature and hash): entries up to its seq cannot be removed unseen. */
  lastGoodCheckpoint?: { seq: number; time: string; keyId: string };
  /** Entries after the last good checkpoint: a truncation of these alone is not detectable. */
  uncheckpointed: number;
  /** The first problem (by position in the chain; checkpoint problems at their seq). */
  firstProblem?: AuditProblem;
  /** Every problem found: the first chain problem (the chain is not read further) and every bad checkpoint. */
  problems: AuditProblem[];
}

/**
 * Verifies a stored chain against `publicKeys` (key id → ed25519 public key). Reads the
 * entries once, streaming (only the hashes at checkpointed positions are kept).
 */
export async function verifyAuditChain(source: AuditChainSource, publicKeys: ReadonlyMap<string, KeyObject>): Promise<AuditVerifyReport> {
  const checkpoints: RawCheckpoint[] = [];
  for await (const cp of source.checkpoints()) checkpoints.push(cp);
  const wanted = new Set<number>();
  for (const cp of checkpoints) if (cp.ok) wanted.add(cp.seq);
  const hashAt = new Map<number, string>();

  const problems: AuditProblem[] = [];
  let chainProblem: AuditProblem | undefined;
  let prev: { seq: number; hash: string; id: string } | undefined;
  let count = 0;
  let validThrough = 0;
  for await (const raw of source.entries()) {
    count++;
    if (chainProblem) {
      // Keep reading only to learn the stored hashes at checkpointed positions and the head.
      if (raw.ok) {
        if (wanted.has(raw.seq) && !hashAt.has(raw.seq)) hashAt.set(raw.seq, raw.hash);
        prev = { seq: raw.seq, hash: raw.hash, id: raw.id };
      }
      continue;
    }
    const expected = (prev?.seq ?? 0) + 1;
    const problem = checkEntry(raw, prev, expected);
    if (problem) {
      chainProblem = problem;
      problems.push(problem);
    } else if (raw.ok) {
      validThrough = raw.seq;
    }
    if (raw.ok) {
      if (wanted.has(raw.seq) && !hashAt.has(raw.seq)) hashAt.set(raw.seq, raw.hash);
      prev = { seq: raw.seq, hash: raw.hash, id: raw.id };
    }
  }
  const head = prev ? { seq: prev.seq, hash: prev.hash } : undefined;

  const storedHead = source.head ? await source.head() : undefined;
  if (storedHead && !chainProblem && (storedHead.seq !== (head?.seq ?? 0) || (head && storedHead.hash !== head.hash))) {
    problems.push({
      kind: 'head-mismatch',
      seq: (head?.seq ?? 0) + 1,
      where: 'head row',
      message: `the store's head says seq ${storedHead.seq} but the chain ends at seq ${head?.seq ?? 0}${storedHead.seq > (head?.seq ?? 0) ? ': entries at the end were removed' : ''}`,
    });
  }

  let lastGood: AuditVerifyReport['lastGoodCheckpoint'];
  checkpoints.forEach((cp, index) => {
    const problem = checkCheckpoint(cp, index, publicKeys, hashAt, head?.seq ?? 0);
    if (problem) problems.push(problem);
    else if (cp.ok && cp.seq <= validThrough && (!lastGood || cp.seq >= lastGood.seq)) lastGood = { seq: cp.seq, time: cp.time, keyId: cp.keyId };
  });

  problems.sort((a, b) => (a.seq ?? Number.MAX_SAFE_INTEGER) - (b.seq ?? Number.MAX_SAFE_INTEGER));
  return {
    ok: problems.length === 0,
    entries: count,
    head,
    validThrough,
    checkpoints: checkpoints.length,
    lastGoodCheckpoint: lastGood,
    uncheckpointed: (head?.seq ?? 0) - (lastGood?.seq ?? 0),
    firstProblem: problems[0],
    problems,
  };
}

function checkEntry(raw: RawEntry, prev: { seq: number; hash: string; id: string } | undefined, expected: number): AuditProblem | undefined {
  if (!raw.ok) {
    return { kind: 'unreadable', seq: expected, id: raw.id, where: raw.where, message: `entry ${expected} (${raw.where}) cannot be read: ${raw.message}` };
  }
  const { seq, id, where } = raw;
  const after = prev ? ` after seq ${prev.seq} (${prev.id})` : ' at the start of the chain';
  if (seq > expected) {
    return {
      kind: 'gap',
      seq: expected,
      seqTo: seq - 1,
      id,
      where,
      message: seq - 1 === expected ? `entry ${expected} is missing: seq ${seq} (${id}) follows${after}` : `entries ${expected}..${seq - 1} are missing: seq ${seq} (${id}) follows${after}`,
    };
  }
  if (seq < expected) return { kind: 'out-of-order', seq, id, where, message: `entry seq ${seq} (${id}, ${where}) appears${after}: the chain is reordered or an entry is repeated` };
  if (raw.prevHash !== (prev?.hash ?? GENESIS_HASH)) {
    return { kind: 'link-mismatch', seq, id, where, message: `entry ${seq} (${id}) does not carry the hash of the entry before it${prev ? ` (seq ${prev.seq}, ${prev.id}): that entry was rewritten or one was inserted` : ''}` };
  }
  let computed: string;
  try {
    computed = sha256Hex(entryHashInput({ seq, id, prevHash: raw.prevHash, record: raw.record as AuditRecord }));
  } catch (err) {
    return { kind: 'unreadable', seq, id, where, message: `entry ${seq} (${id}) has a record with no canonical form: ${(err as Error).message}` };
  }
  if (computed !== raw.hash) return { kind: 'hash-mismatch', seq, id, where, message: `entry ${seq} (${id}, ${where}) does not match its hash: its content was changed` };
  if (!auditRecordSchema.safeParse(raw.record).success) return { kind: 'invalid-record', seq, id, where, message: `entry ${seq} (${id}) is not a valid audit record` };
  if (raw.problem) return { kind: 'index-mismatch', seq, id, where, message: `entry ${seq} (${id}): ${raw.problem}` };
  return undefined;
}

function checkCheckpoint(cp: RawCheckpoint, index: number, keys: ReadonlyMap<string, KeyObject>, hashAt: Map<number, string>, lastSeq: number): AuditProblem | undefined {
  if (!cp.ok) return { kind: 'checkpoint-unreadable', checkpoint: { index }, where: cp.where, message: `checkpoint ${index} (${cp.where}) cannot be read: ${cp.message}` };
  const named = { index, seq: cp.seq, keyId: cp.keyId, time: cp.time };
  const label = `checkpoint ${index} (seq ${cp.seq}, ${cp.time}, key ${cp.keyId})`;
  const key = keys.get(cp.keyId);
  if (!key) return { kind: 'checkpoint-unknown-key', seq: cp.seq, checkpoint: named, where: cp.where, message: `${label} is signed by a key the verifier does not know` };
  const payload = Buffer.from(checkpointSignedInput(cp), 'utf8');
  let good = false;
  try {
    good = verify(null, payload, key, Buffer.from(cp.signature, 'base64'));
  } catch {
    good = false;
  }
  if (!good) return { kind: 'checkpoint-bad-signature', seq: cp.seq, checkpoint: named, where: cp.where, message: `${label}: the signature does not verify (the checkpoint was forged or altered)` };
  if (cp.seq > lastSeq) {
    return { kind: 'checkpoint-beyond-chain', seq: lastSeq + 1, checkpoint: named, where: cp.where, message: `${label} covers ${cp.seq} entries but the chain ends at seq ${lastSeq}: entries ${lastSeq + 1}..${cp.seq} were removed` };
  }
  const stored = hashAt.get(cp.seq);
  if (stored === undefined) return { kind: 'checkpoint-mismatch', seq: cp.seq, checkpoint: named, where: cp.where, message: `${label}: the chain has no entry ${cp.seq}` };
  if (stored !== cp.headHash) return { kind: 'checkpoint-mismatch', seq: cp.seq, checkpoint: named, where: cp.where, message: `${label}: the chain's hash at seq ${cp.seq} is not the signed one (entries up to ${cp.seq} were rewritten)` };
  return undefined;
}
