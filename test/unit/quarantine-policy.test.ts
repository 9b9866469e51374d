/**
 * The pure parts of quarantine (model/quarantine.ts): label parsing by Kubernetes' rules with
 * the field and rule named, the target address, the configuration of exceptions, and the
 * policy rendering (its schema acceptance is checked against the real CRD in
 * test/integration/quarantine-enforcement.privileged.test.ts).
 */
import {
  KUBE_DNS_EXCEPTION,
  parseQuarantineConfig,
  parseQuarantineLabel,
  policySelects,
  quarantineAddress,
  QuarantineInputError,
  quarantinePolicyName,
  renderQuarantinePolicy,
  samePolicy,
} from '../../model/quarantine';
import { RuleSetError, validateRuleSet } from '../../rules/rule-set';

function inputError(fn: () => unknown): QuarantineInputError {
  try {
    fn();
  } catch (err) {
    if (err instanceof QuarantineInputError) return err;
    throw err;
  }
  throw new Error('expected a QuarantineInputError');
}

describe('quarantine label', () => {
  test.each([
    ['fos1.io/quarantine=true', { key: 'fos1.io/quarantine', value: 'true' }],
    ['quarantined=', { key: 'quarantined', value: '' }],
    ['sec.example.com/state=Isolated_1.a-b', { key: 'sec.example.com/state', value: 'Isolated_1.a-b' }],
  ])('parses %s', (text, expected) => {
    expect(parseQuarantineLabel(text)).toEqual(expected);
  });

  test.each([
    ['no-equals', 'quarantineLabel', /no "=" found/],
    ['=true', 'quarantineLabel.key', /name part must be 1–63 characters/],
    ['-bad=true', 'quarantineLabel.key', /begin and end with a letter or digit/],
    ['Fos1.IO/q=true', 'quarantineLabel.key', /prefix "Fos1.IO" must be a DNS subdomain/],
    ['/q=true', 'quarantineLabel.key', /prefix before "\/" must be a DNS subdomain of 1–253/],
    ['kubernetes.io/q=true', 'quarantineLabel.key', /reserved for Kubernetes components/],
    ['node.k8s.io/q=true', 'quarantineLabel.key', /reserved for Kubernetes components/],
    [`${'a'.repeat(64)}=true`, 'quarantineLabel.key', /name part must be 1–63 characters/],
    ['q=has space', 'quarantineLabel.value', /value must be empty or letters/],
    ['q=-x', 'quarantineLabel.value', /beginning and ending with a letter or digit/],
    [`q=${'v'.repeat(64)}`, 'quarantineLabel.value', /at most 63 characters/],
  ])('refuses %s, naming %s and the rule', (text, field, rule) => {
    const err = inputError(() => parseQuarantineLabel(text));
    expect(err.field).toBe(field);
    expect(err.rule).toMatch(rule);
    expect(err.message.startsWith(`${field}: `)).toBe(true);
  });

  test('refuses a non-string, naming the caller\'s field', () => {
    expect(inputError(() => parseQuarantineLabel(42, 'decision.quarantineLabel')).message).toBe('decision.quarantineLabel: must be a string "key=value"');
  });
});

describe('quarantine label in a rule set', () => {
  const ruleSet = (quarantineLabel: string) => ({
    name: 'q',
    rules: [{ name: 'q1', description: 'quarantine test', eventTypes: ['alert'], conditions: { all: [{ fact: 'severity', operator: 'equal', value: 1 }] }, decision: { action: 'quarantine', quarantineLabel } }],
  });

  test('is checked at load by the same rules, with the path and the rule', () => {
    let issues: string[] = [];
    try {
      validateRuleSet(ruleSet('kubernetes.io/quarantine=true'), 'q.json');
    } catch (err) {
      if (!(err instanceof RuleSetError)) throw err;
      issues = err.issues.map((i) => `${i.field}: ${i.message}`);
    }
    expect(issues).toEqual(['rules[0].decision.quarantineLabel: must be a Kubernetes label "key=value": "kubernetes.io/quarantine" is not a Kubernetes label key: the prefix "kubernetes.io" is reserved for Kubernetes components']);
  });

  test('a valid label is kept, and the default is fos1.io/quarantine=true', () => {
    expect(validateRuleSet(ruleSet('sec.example.com/isolate=yes'), 'q.json').rules[0]!.decision.quarantineLabel).toBe('sec.example.com/isolate=yes');
    const withoutLabel = ruleSet('x=y');
    delete (withoutLabel.rules[0]!.decision as { quarantineLabel?: string }).quarantineLabel;
    expect(validateRuleSet(withoutLabel, 'q.json').rules[0]!.decision.quarantineLabel).toBe('fos1.io/quarantine=true');
  });
});

describe('quarantine target', () => {
  test('is one address: /32, /128 or bare, returned canonical', () => {
    expect(quarantineAddress('10.244.0.10/32')).toBe('10.244.0.10');
    expect(quarantineAddress('10.244.0.10')).toBe('10.244.0.10');
    expect(quarantineAddress('FD00:0::11/128')).toBe('fd00::11');
  });

  test('refuses a wider prefix and a non-address, naming the field', () => {
    expect(inputError(() => quarantineAddress('10.244.0.0/24')).message).toBe('target: quarantine isolates one endpoint: the target must be a /32, not 10.244.0.0/24');
    expect(inputError(() => quarantineAddress('fd00::/64')).rule).toMatch(/must be a \/128/);
    expect(inputError(() => quarantineAddress('pod-a')).rule).toMatch(/^"pod-a" is not an IP prefix/);
  });
});

describe('quarantine configuration', () => {
  test('defaults to no exceptions and no system namespace opened to quarantine', () => {
    expect(parseQuarantineConfig(undefined)).toEqual({ exceptions: [], allowSystemNamespaces: [] });
  });

  test('fills the port protocol default', () => {
    const c = parseQuarantineConfig({ exceptions: [{ name: 'scraper', direction: 'ingress', namespace: 'monitoring', labels: { app: 'prom' }, ports: [{ port: 9100 }] }] });
    expect(c.exceptions[0]!.ports).toEqual([{ port: 9100, protocol: 'TCP' }]);
  });

  test.each([
    [{ exceptions: [{ ...KUBE_DNS_EXCEPTION, labels: { 'bad key!': 'x' } }] }, 'exceptions[0].labels.bad key!', /must be a Kubernetes label key/],
    [{ exceptions: [{ ...KUBE_DNS_EXCEPTION, labels: {} }] }, 'exceptions[0].labels', /must name 1 or 2 labels/],
    [{ exceptions: [{ ...KUBE_DNS_EXCEPTION, ports: [] }] }, 'exceptions[0].ports', /at least one port/],
    [{ exceptions: [{ ...KUBE_DNS_EXCEPTION, direction: 'sideways' }] }, 'exceptions[0].direction', /ingress|egress/],
    [{ exceptions: [{ ...KUBE_DNS_EXCEPTION, namespace: 'Kube_System' }] }, 'exceptions[0].namespace', /must be a namespace name/],
    [{ exceptions: Array.from({ length: 4 }, (_, i) => ({ ...KUBE_DNS_EXCEPTION, name: `e${i}` })) }, 'exceptions', /at most 3 egress exceptions/],
    [{ exception: [] }, '(config)', /unrecognized key/i],
  ])('refuses %j naming %s', (raw, field, rule) => {
    const err = inputError(() => parseQuarantineConfig(raw));
    expect(err.field).toBe(field);
    expect(err.rule).toMatch(rule);
  });
});

describe('quarantine policy', () => {
  const label = { key: 'fos1.io/quarantine', value: 'true' };

  test('names one policy per label: deterministic, a DNS label of at most 63, distinct per label', () => {
    const name = quarantinePolicyName(label);
    expect(name).toMatch(/^fos1-quarantine-fos1-io-quarantine-true-[0-9a-z]+$/);
    expect(quarantinePolicyName(label)).toBe(name);
    expect(quarantinePolicyName({ key: 'fos1.io/quarantine', value: 'True' })).not.toBe(name);
    const long = quarantinePolicyName({ key: `${'x'.repeat(50)}.example.com/${'y'.repeat(63)}`, value: 'z'.repeat(63) });
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });

  test('without exceptions denies everything both ways (deny wins over any allow policy)', () => {
    expect(renderQuarantinePolicy(label, parseQuarantineConfig({}), 'c1')).toEqual({
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumClusterwideNetworkPolicy',
      metadata: {
        name: quarantinePolicyName(label),
        labels: { 'app.kubernetes.io/managed-by': 'fos1', 'fos1.io/source-kind': 'quarantine', 'fos1.io/source-namespace': 'cluster', 'fos1.io/source-name': quarantinePolicyName(label) },
        annotations: { 'fos1.io/change-id': 'c1' },
      },
      spec: {
        description: 'fos1 quarantine: isolates every endpoint labelled fos1.io/quarantine=true',
        endpointSelector: { matchLabels: { 'fos1.io/quarantine': 'true' } },
        ingressDeny: [{ fromEntities: ['all'] }],
        egressDeny: [{ toEntities: ['all'] }],
      },
    });
  });

  test('the kube-dns exception cuts kube-dns out of the egress deny and allows port 53 to it; ingress stays fully denied', () => {
    const spec = renderQuarantinePolicy(label, parseQuarantineConfig({ exceptions: [KUBE_DNS_EXCEPTION] })).spec as Record<string, unknown>;
    expect(spec.ingressDeny).toEqual([{ fromEntities: ['all'] }]);
    expect(spec.ingress).toBeUndefined();
    expect(spec.egressDeny).toEqual([
      { toEntities: ['world', 'host', 'remote-node', 'kube-apiserver', 'ingress', 'init', 'health', 'unmanaged'] },
      {
        toEndpoints: [
          { matchExpressions: [{ key: 'k8s:io.kubernetes.pod.namespace', operator: 'NotIn', values: ['kube-system'] }] },
          { matchExpressions: [{ key: 'k8s:k8s-app', operator: 'NotIn', values: ['kube-dns'] }] },
        ],
      },
    ]);
    expect(spec.egress).toEqual([
      {
        toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
        toPorts: [{ ports: [{ port: '53', protocol: 'UDP' }, { port: '53', protocol: 'TCP' }] }],
      },
    ]);
  });

  test('two exceptions in one direction: the deny selectors are every pick of one negated term per exception', () => {
    const config = parseQuarantineConfig({
      exceptions: [KUBE_DNS_EXCEPTION, { name: 'proxy', direction: 'egress', namespace: 'egress', labels: { app: 'squid', tier: 'edge' }, ports: [{ port: 3128 }] }],
    });
    const deny = (renderQuarantinePolicy(label, config).spec as { egressDeny: { toEndpoints?: { matchExpressions: { key: string; values: string[] }[] }[] }[] }).egressDeny;
    const selectors = deny[1]!.toEndpoints!.map((s) => s.matchExpressions.map((e) => `${e.key}!=${e.values[0]}`).join(' & '));
    // (ns≠kube-system ∨ app≠kube-dns) ∧ (ns≠egress ∨ app≠squid ∨ tier≠edge) → 2 × 3 selectors.
    expect(selectors).toEqual([
      'k8s:io.kubernetes.pod.namespace!=kube-system & k8s:io.kubernetes.pod.namespace!=egress',
      'k8s:io.kubernetes.pod.namespace!=kube-system & k8s:app!=squid',
      'k8s:io.kubernetes.pod.namespace!=kube-system & k8s:tier!=edge',
      'k8s:k8s-app!=kube-dns & k8s:io.kubernetes.pod.namespace!=egress',
      'k8s:k8s-app!=kube-dns & k8s:app!=squid',
      'k8s:k8s-app!=kube-dns & k8s:tier!=edge',
    ]);
  });

  test('selects exactly the endpoints carrying the label', () => {
    const policy = renderQuarantinePolicy(label, parseQuarantineConfig({}));
    expect(policySelects(policy, { app: 'web', 'fos1.io/quarantine': 'true' })).toBe(true);
    expect(policySelects(policy, { app: 'web', 'fos1.io/quarantine': 'false' })).toBe(false);
    expect(policySelects(policy, { app: 'web' })).toBe(false);
  });

  test('is the same policy whatever change wrote it, and a different one when the rule differs', () => {
    const a = renderQuarantinePolicy(label, parseQuarantineConfig({}), 'c1');
    expect(samePolicy(a, renderQuarantinePolicy(label, parseQuarantineConfig({}), 'c2'))).toBe(true);
    expect(samePolicy(a, renderQuarantinePolicy(label, parseQuarantineConfig({ exceptions: [KUBE_DNS_EXCEPTION] }), 'c1'))).toBe(false);
    expect(samePolicy(a, undefined)).toBe(false);
  });
});
