/** Renders a zod issue path as operators write fields: `desired.routes[2].gateway`, `rules[0].peers[1].cidr`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

/** One problem with a change request: the field's path (`desired.routes[2].gateway`) and the rule it breaks. */
export interface ValidationIssue {
  field: string;
  message: string;
}

/** Renders issues as one line each, `field: rule`. */
export function formatIssues(issues: ValidationIssue[]): string {
  return issues.map((i) => `${i.field || '(request)'}: ${i.message}`).join('\n');
}

/**
 * A zod error's issues as {@link ValidationIssue}s: each field's path and the rule it breaks.
 * Typed by shape, so this module needs no zod import (the node workflow's graph stays small).
 */
export function issuesOf(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): ValidationIssue[] {
  return error.issues.map((i) => ({ field: formatPath(i.path), message: i.message }));
}
