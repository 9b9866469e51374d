/**
 * A short, stable tag of a text for names that must be DNS labels (change ids, policy
 * names): FNV-1a over the UTF-16 code units, 32 bits, in base 36. Not a security hash.
 * Pure code: bundled into workflows.
 */
export function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}
