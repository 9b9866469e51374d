/**
 * fos1's HTTP API for a test: listening on a free loopback port, with a token-file
 * authenticator holding one random bearer token per named principal (test/helpers/api-tokens.ts).
 */
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import pino from 'pino';
import { startApiServer, type ApiServer, type ApiServerOptions } from '../../api/server';
import type { TokenFileAuthenticator } from '../../auth/token-file';
import { testTokens, type TestPrincipals } from './api-tokens';

/** What {@link startTestApi} started. */
export interface TestApi<P extends TestPrincipals> {
  server: ApiServer;
  /** `http://127.0.0.1:<port>`. */
  base: string;
  /** Each principal's bearer token. */
  tokens: Record<keyof P, string>;
  authenticator: TokenFileAuthenticator;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * Starts the API over `client` for `principals` (name → token-file roles). `identityKey`
 * signs identity assertions (give the cluster worker the same key); `audit` serves the
 * audit and revision routes.
 */
export async function startTestApi<P extends TestPrincipals>(client: Client, principals: P, options: Partial<Pick<ApiServerOptions, 'identityKey' | 'audit' | 'logger'>> = {}): Promise<TestApi<P>> {
  const { authenticator, tokens } = testTokens(principals);
  const server = await startApiServer({ client, port: 0, host: '127.0.0.1', logger: options.logger ?? pino({ level: 'silent' }), security: { authenticator }, ...(options.identityKey ? { identityKey: options.identityKey } : {}), ...(options.audit ? { audit: options.audit } : {}) });
  return {
    server,
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    tokens,
    authenticator,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
