/** Renders a zod issue path as operators write fields: `desired.routes[2].gateway`, `rules[0].peers[1].cidr`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}
