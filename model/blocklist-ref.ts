/**
 * A blocklist passed by reference. Large blocklists (a million entries is ~15 MB of
 * text) never travel inside workflow payloads, which Temporal limits to 2 MB: the
 * workflow carries this small object and the node activity reads the content.
 *
 * - `{ sha256 }`: content-addressed, resolved in the node's blocklist store folder
 *   (`<store>/<sha256>`); the content is hashed on read and must match.
 * - `{ file, sha256? }`: an absolute path on the node (e.g. a mounted ConfigMap or a
 *   feed download); with `sha256` the content is checked too, so a file that changed
 *   between plan and apply is refused instead of silently applied.
 *
 * The content is the text format (`CIDR [expires=UNIX] [rule=ID]` per line) or a fos1
 * snapshot (binary, written by the blocklist activity for rollback).
 * Pure code: bundled into workflows.
 */
import { z } from 'zod';

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 digest: 64 lowercase hex digits');

export const blocklistRefSchema = z.union([
  z.object({ sha256: sha256Schema }).strict(),
  z
    .object({
      file: z
        .string()
        .regex(/^\/[^\0]*$/, 'must be an absolute path')
        .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments'),
      sha256: sha256Schema.optional(),
    })
    .strict(),
]);

export type BlocklistRef = z.output<typeof blocklistRefSchema>;
