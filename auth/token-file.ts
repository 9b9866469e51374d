/**
 * The token-file authenticator: fos1's embedded default.
 *
 * The file (YAML or JSON) holds sha256 hashes of bearer tokens, never the tokens:
 *
 *   tokens:
 *     - { sha256: "<hex of sha256(token)>", principal: admin, roles: [admin] }
 *     - { sha256: "…", principal: grafana, roles: [viewer] }
 *   roles:
 *     admin:  { changes: [submit, approve, confirm, abort, pause, promote, lift, view], alerts: [ingest] }
 *     viewer: { changes: [view] }
 *
 * A token is hashed and compared with every entry in constant time (no early exit), so
 * timing tells nothing about how much of a hash matched. `npm start` creates the file with
 * an admin token on first start ({@link createTokenFile}).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PERMISSIONS, type Authenticator, type Permission, type Principal } from './authenticator';

const verbsOf = <R extends keyof typeof PERMISSIONS>(r: R) => z.array(z.enum(PERMISSIONS[r])).default([]);

/** Schema of the token file. */
export const tokenFileSchema = z
  .object({
    tokens: z
      .array(
        z
          .object({
            sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the lowercase hex sha256 of the token (never the token itself)'),
            principal: z.string().regex(/^[\w.@:-]{1,100}$/, 'must be 1–100 letters, digits, "_", "-", ".", "@" or ":"'),
            roles: z.array(z.string().min(1)).default([]),
          })
          .strict(),
      )
      .default([]),
    roles: z.record(z.string(), z.object({ changes: verbsOf('changes'), alerts: verbsOf('alerts') }).strict()).default({}),
  })
  .strict()
  .superRefine((file, ctx) => {
    file.tokens.forEach((t, i) =>
      t.roles.forEach((r, j) => {
        if (!(r in file.roles)) ctx.addIssue({ code: 'custom', path: ['tokens', i, 'roles', j], message: `role "${r}" is not defined under roles` });
      }),
    );
  });

export type TokenFile = z.output<typeof tokenFileSchema>;

/** The roles `npm start` writes: admin (everything), operator (no approve/lift), viewer, ingest. */
export const DEFAULT_ROLES: TokenFile['roles'] = {
  admin: { changes: [...PERMISSIONS.changes], alerts: [...PERMISSIONS.alerts] },
  operator: { changes: ['submit', 'confirm', 'abort', 'pause', 'promote', 'view'], alerts: [] },
  viewer: { changes: ['view'], alerts: [] },
  /** Approves or rejects changes the approval policy holds (docs/approvals.md); the policy names this role. */
  approver: { changes: ['approve', 'view'], alerts: [] },
  /** Marks a principal whose changes may override maintenance windows and freezes (options.override). */
  emergency: { changes: ['submit', 'view'], alerts: [] },
  ingest: { changes: [], alerts: ['ingest'] },
};

/** Hex sha256 of a token, as the file stores it. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A fresh random bearer token (256 bits, base64url). */
export function newToken(): string {
  return `fos1_${randomBytes(32).toString('base64url')}`;
}

/** Parses a token file's text; the error names the field and the rule (never a value). */
export function parseTokenFile(text: string, path: string): TokenFile {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch {
    throw new Error(`token file ${path} is neither YAML nor JSON`);
  }
  const parsed = tokenFileSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new Error(`invalid token file ${path}:\n${parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  return parsed.data;
}

/** Token-file backend of {@link Authenticator}. */
export class TokenFileAuthenticator implements Authenticator {
  readonly kind = 'token-file';
  private readonly entries: { hash: Buffer; principal: string; roles: string[] }[];

  constructor(private readonly file: TokenFile) {
    this.entries = file.tokens.map((t) => ({ hash: Buffer.from(t.sha256, 'hex'), principal: t.principal, roles: t.roles }));
  }

  /** Reads and validates the file at `path`. */
  static fromFile(path: string): TokenFileAuthenticator {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`token file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    return new TokenFileAuthenticator(parseTokenFile(text, path));
  }

  authenticate(token: string): Promise<Principal | undefined> {
    const presented = Buffer.from(hashToken(token), 'hex');
    let found: Principal | undefined;
    // Every entry is compared, match or not: the time taken does not depend on which one matched.
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.hash, presented) && !found) found = { name: entry.principal, roles: [...entry.roles] };
    }
    return Promise.resolve(found);
  }

  authorize(principal: Principal, permission: Permission): Promise<boolean> {
    const allowed = principal.roles.some((r) => (this.file.roles[r]?.[permission.resource] as readonly string[] | undefined)?.includes(permission.verb));
    return Promise.resolve(allowed);
  }
}

/**
 * Creates a token file with one admin token (and the default roles) and a second file
 * holding that token, both mode 0600, unless the token file exists. Returns whether it
 * created them. The token is only ever written to `tokenOut`, never returned or logged.
 */
export function createTokenFile(path: string, tokenOut: string, principal = 'admin'): boolean {
  if (existsSync(path)) return false;
  const token = newToken();
  const file: TokenFile = { tokens: [{ sha256: hashToken(token), principal, roles: ['admin'] }], roles: DEFAULT_ROLES };
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  mkdirSync(dirname(tokenOut), { recursive: true, mode: 0o700 });
  writeFileSync(tokenOut, `${token}\n`, { mode: 0o600 });
  writeFileSync(path, `# fos1 bearer tokens: sha256 of each token → principal and roles (see docs/security.md)\n${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return true;
}
