/**
 * The approval policy's pure parts: parsing with field-naming errors, first-match rules over
 * target globs, labels, subsystems, diff size, author roles and automation; the plan
 * digest; the pure SHA-256 the workflow computes it with (checked against node:crypto).
 */
import { createHash } from 'node:crypto';
import { approvalAssertionSubject, globMatch, matchingRule, needsPlan, parseApprovalPolicy, planDigest, type ApprovalPolicy, type ChangeFacts } from '../../model/approval-policy';
import { canonicalJson } from '../../model/identity';
import { sha256Hex } from '../../model/sha256';
import { readApprovalPolicyFile } from '../../activities/approval';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const policyOf = (doc: unknown): ApprovalPolicy => {
  const parsed = parseApprovalPolicy(doc);
  if (!parsed.ok) throw new Error(parsed.issues.join('\n'));
  return parsed.policy;
};

const human: ChangeFacts = { targets: ['edge-1'], subsystems: ['routes'], operations: 3, authorRoles: ['operator'], automation: false };

describe('sha256Hex (pure, for workflows)', () => {
  it.each(['', 'abc', 'ünïcödé ✓ 🚀', 'x'.repeat(55), 'y'.repeat(56), 'z'.repeat(64), 'w'.repeat(1000)])('matches node:crypto for %#', (text) => {
    expect(sha256Hex(text)).toBe(createHash('sha256').update(text, 'utf8').digest('hex'));
  });
});

describe('approval policy', () => {
  const production = policyOf({
    rules: [
      { name: 'enforcer-within-caps', match: { automation: true, maxOperations: 100 }, approvals: 0 },
      { name: 'enforcer-beyond-caps', match: { automation: true }, approvals: 1, approverRole: 'security' },
      { name: 'big-or-nat', match: { subsystems: ['nat'] }, approvals: 2 },
      { name: 'large', match: { minOperations: 50 }, approvals: 2 },
      { name: 'edge', match: { nodes: ['edge-*'] }, approvals: 1, expiresAfter: '2h' },
      { name: 'prod-labelled', match: { labels: { env: 'prod' } }, approvals: 1 },
    ],
  });

  it('applies defaults: nothing required, unverified approvals off, the emergency role', () => {
    const empty = policyOf({});
    expect(empty).toMatchObject({ rules: [], windows: [], freezes: [], allowUnverifiedApprovals: false, emergencyRole: 'emergency', automation: { authors: ['fos1-enforcer'], respectWindows: false } });
    expect(needsPlan(empty)).toBe(false);
    expect(production.rules[4]).toMatchObject({ approverRole: 'approver', expiresAfter: 7_200_000 });
  });

  it('names the field and the rule of every problem', () => {
    const parsed = parseApprovalPolicy({ rules: [{ name: 'a', approvals: -1 }, { name: 'a', approvals: 1, match: { subsystems: ['dns'] } }], windows: [{ days: ['Funday'], start: '25:00', end: '05:00', timeZone: 'Mars/Olympus' }] });
    expect(parsed.ok).toBe(false);
    const issues = parsed.ok ? [] : parsed.issues.join('\n');
    expect(issues).toMatch(/rules\[0\]\.approvals: .*0/);
    expect(issues).toMatch(/rules\[1\]\.match\.subsystems\[0\]/);
    expect(issues).toMatch(/windows\[0\]\.days\[0\]: must be one of Sun/);
    expect(issues).toMatch(/windows\[0\]\.start: must be a time "HH:MM"/);
    expect(issues).toMatch(/windows\[0\]\.timeZone: must be an IANA time zone/);
  });

  it('refuses two rules of one name', () => {
    expect(parseApprovalPolicy({ rules: [{ name: 'a', approvals: 1 }, { name: 'a', approvals: 2 }] })).toEqual({ ok: false, issues: ['rules[1].name: names rule "a" twice'] });
  });

  it('picks the first matching rule', () => {
    expect(matchingRule(production, human)?.name).toBe('edge');
    expect(matchingRule(production, { ...human, subsystems: ['routes', 'nat'] })?.name).toBe('big-or-nat');
    expect(matchingRule(production, { ...human, operations: 50 })?.name).toBe('large');
    expect(matchingRule(production, { ...human, targets: ['core-1'] })).toBeUndefined();
    expect(matchingRule(production, { ...human, targets: ['core-1'], labels: { 'core-1': { env: 'prod' } } })?.name).toBe('prod-labelled');
  });

  it('lets automation within caps through and asks for one security approval beyond them', () => {
    const enforcer = { ...human, targets: ['core-1'], subsystems: ['blocklist' as const], automation: true };
    expect(matchingRule(production, { ...enforcer, operations: 100 })?.approvals).toBe(0);
    expect(matchingRule(production, { ...enforcer, operations: 101 })).toMatchObject({ name: 'enforcer-beyond-caps', approvals: 1, approverRole: 'security' });
  });

  it('matches author roles', () => {
    const p = policyOf({ rules: [{ name: 'juniors', match: { authorRoles: ['junior'] }, approvals: 1 }] });
    expect(matchingRule(p, human)).toBeUndefined();
    expect(matchingRule(p, { ...human, authorRoles: ['junior'] })?.name).toBe('juniors');
    expect(needsPlan(p)).toBe(true);
  });

  it('matches globs literally except for * and ?', () => {
    expect(globMatch('edge-*', 'edge-12')).toBe(true);
    expect(globMatch('edge-?', 'edge-12')).toBe(false);
    expect(globMatch('edge-1', 'edge-12')).toBe(false);
  });

  it('digests every node\'s diff and the strategy, independent of key order', () => {
    const a = planDigest({ nodes: { n1: ['+ block 192.0.2.1/32'], n2: [] }, strategy: { waves: 1 } });
    expect(a).toBe(`sha256:${createHash('sha256').update(canonicalJson({ nodes: { n1: ['+ block 192.0.2.1/32'], n2: [] }, strategy: { waves: 1 } })).digest('hex')}`);
    expect(planDigest({ nodes: { n2: [], n1: ['+ block 192.0.2.1/32'] }, strategy: { waves: 1 } })).toBe(a);
    expect(planDigest({ nodes: { n1: ['+ block 192.0.2.2/32'], n2: [] }, strategy: { waves: 1 } })).not.toBe(a);
    expect(planDigest({ nodes: { n1: ['+ block 192.0.2.1/32'], n2: [] }, strategy: { waves: 2 } })).not.toBe(a);
  });

  it('binds an approval assertion to the decision and the plan', () => {
    const approve = canonicalJson(approvalAssertionSubject('c1', 'bob', 'approve', { planDigest: 'sha256:aa' }));
    expect(canonicalJson(approvalAssertionSubject('c1', 'bob', 'reject', { planDigest: 'sha256:aa' }))).not.toBe(approve);
    expect(canonicalJson(approvalAssertionSubject('c1', 'bob', 'approve', { planDigest: 'sha256:bb' }))).not.toBe(approve);
  });
});

describe('readApprovalPolicyFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fos1-policy-'));
  it('reads YAML and JSON, and the dev policy asks for nothing', async () => {
    const yamlFile = join(dir, 'p.yaml');
    writeFileSync(yamlFile, 'rules:\n  - name: edge\n    match: { nodes: [edge-*] }\n    approvals: 2\n');
    expect((await readApprovalPolicyFile(yamlFile)).rules[0]).toMatchObject({ name: 'edge', approvals: 2 });
    const jsonFile = join(dir, 'p.json');
    writeFileSync(jsonFile, JSON.stringify({ freezes: [{ from: '2026-12-20T00:00:00Z', to: '2027-01-02T00:00:00Z', reason: 'holidays' }] }));
    expect((await readApprovalPolicyFile(jsonFile)).freezes).toHaveLength(1);
    const dev = await readApprovalPolicyFile(join(__dirname, '..', '..', 'deploy', 'approval-policy', 'dev.yaml'));
    expect(needsPlan(dev)).toBe(false);
    expect(dev.windows.length + dev.freezes.length).toBe(0);
  });
  it('refuses a bad file with InvalidApprovalPolicy naming the file and field, not the content', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'rules:\n  - name: secret-value-xyz\n    approvals: many\n');
    const err = await readApprovalPolicyFile(bad).then(() => undefined, (e: unknown) => e as { type?: string; message: string });
    expect(err?.type).toBe('InvalidApprovalPolicy');
    expect(err?.message).toMatch(/bad\.yaml is invalid:\nrules\[0\]\.approvals/);
    const missing = await readApprovalPolicyFile(join(dir, 'none.yaml')).then(() => undefined, (e: unknown) => e as { type?: string; message: string });
    expect(missing?.message).toMatch(/cannot be read: ENOENT/);
  });
  it('checks the example production policy in docs', async () => {
    const example = await readApprovalPolicyFile(join(__dirname, '..', '..', 'docs', 'approval-policy.example.yaml'));
    expect(needsPlan(example)).toBe(true);
    expect(example.windows.length).toBeGreaterThan(0);
  });
});
