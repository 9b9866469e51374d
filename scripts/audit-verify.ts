/**
 * `tsx scripts/audit-verify.ts` (what `fos1 audit verify` wraps): checks the audit chain and
 * its signed checkpoints, and names the first record that does not match.
 *
 *   tsx scripts/audit-verify.ts [--file DIR | --postgres URL] [--public-key FILE]... [--json]
 *
 *   --file DIR         the file store's folder (default: <state dir>/audit)
 *   --postgres URL     a PostgreSQL connection string instead (default: $FOS1_AUDIT_POSTGRES_URL, if set)
 *   --public-key FILE  an ed25519 public key (SPKI PEM) checkpoints may be signed with; repeat
 *                      for rotated keys (default: <state dir>/audit-key.pem.pub)
 *   --json             print the whole report as JSON
 *
 * Exit status: 0 intact, 1 something does not match, 2 bad arguments or the store cannot be read.
 * Only the public key is needed: verification can run anywhere, by anyone given read access.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { verifyAuditStore, type AuditStoreConfig, type AuditVerifyReport } from '../activities/audit-store';
import { devStateDir } from './paths';

/** The report as the CLI prints it. */
export function formatAuditReport(report: AuditVerifyReport): string {
  const lines: string[] = [];
  const cp = report.lastGoodCheckpoint;
  if (report.ok) {
    lines.push(`audit chain intact: ${report.entries} entries${report.head ? ` (head seq ${report.head.seq}, ${report.head.hash})` : ''}, ${report.checkpoints} checkpoint${report.checkpoints === 1 ? '' : 's'}`);
  } else {
    lines.push(`audit chain does NOT verify: ${report.problems.length} problem(s); entries 1..${report.validThrough} intact`);
    lines.push(`first: ${report.firstProblem!.message}`);
    for (const p of report.problems.slice(1)) lines.push(`also:  ${p.message}`);
  }
  lines.push(cp ? `last good checkpoint: seq ${cp.seq} at ${cp.time} (key ${cp.keyId}); ${report.uncheckpointed} entries after it` : 'no good checkpoint: a truncation of the chain would not be detected');
  return lines.join('\n');
}

/** Runs the command; returns the exit status and what to print (for `fos1 audit verify`). */
export async function auditVerifyMain(argv: string[], env: NodeJS.ProcessEnv): Promise<{ status: number; output: string }> {
  let values: { file?: string; postgres?: string; 'public-key'?: string[]; json?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { file: { type: 'string' }, postgres: { type: 'string' }, 'public-key': { type: 'string', multiple: true }, json: { type: 'boolean' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    return { status: 2, output: `audit verify: ${(err as Error).message}` };
  }
  if (values.file && values.postgres) return { status: 2, output: 'audit verify: --file and --postgres: give one store, not both' };
  const stateDir = devStateDir();
  const postgres = values.postgres ?? (values.file ? undefined : env.FOS1_AUDIT_POSTGRES_URL);
  const config: AuditStoreConfig = postgres ? { backend: 'postgres', connectionString: postgres } : { backend: 'file', dir: values.file ?? join(stateDir, 'audit') };
  if (config.backend === 'file' && !existsSync(config.dir)) return { status: 2, output: `audit verify: --file: ${config.dir} does not exist` };
  const keys = values['public-key'] ?? [join(stateDir, 'audit-key.pem.pub')];
  for (const k of keys) if (!existsSync(k)) return { status: 2, output: `audit verify: --public-key: ${k} does not exist` };
  let report: AuditVerifyReport;
  try {
    report = await verifyAuditStore(config, keys);
  } catch (err) {
    return { status: 2, output: `audit verify: ${(err as Error).message}` };
  }
  return { status: report.ok ? 0 : 1, output: values.json ? JSON.stringify(report, null, 2) : formatAuditReport(report) };
}

if (require.main === module) {
  void auditVerifyMain(process.argv.slice(2), process.env).then(({ status, output }) => {
    (status === 0 ? process.stdout : process.stderr).write(`${output}\n`);
    process.exitCode = status;
  });
}
