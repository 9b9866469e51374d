/**
 * Bearer tokens for tests that call fos1's HTTP servers: a token-file authenticator (the
 * embedded default backend) holding one random token per named principal.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_ROLES, hashToken, TokenFileAuthenticator } from '../../auth/token-file';

/** Principals and their token-file roles (auth/token-file.ts DEFAULT_ROLES). */
export type TestPrincipals = Record<string, (keyof typeof DEFAULT_ROLES)[]>;

/** An authenticator for `principals` and the token of each. */
export function testTokens<P extends TestPrincipals>(principals: P): { authenticator: TokenFileAuthenticator; tokens: Record<keyof P, string> } {
  const tokens = Object.fromEntries(Object.keys(principals).map((name) => [name, `test_${randomBytes(16).toString('hex')}`])) as Record<keyof P, string>;
  const authenticator = new TokenFileAuthenticator({
    tokens: Object.entries(principals).map(([name, roles]) => ({ sha256: hashToken(tokens[name as keyof P]), principal: name, roles })),
    roles: DEFAULT_ROLES,
  });
  return { authenticator, tokens };
}
