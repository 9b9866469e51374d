/**
 * The CLI's HTTP client for the fos1 API (api/routes.ts): bearer token, JSON in and out,
 * and every failure turned into a {@link CliError} whose message says what to do and whose
 * exit code says what kind of failure it was (cli/errors.ts).
 */
import { CliError, ExitCode } from './errors';
import type { CliConnection } from './config';

type Json = Record<string, unknown>;

/** A thin client for one API. */
export class ApiClient {
  constructor(
    private readonly connection: CliConnection,
    private readonly timeoutMs = 60_000,
  ) {}

  /** GET `path`; the answer's JSON. */
  get(path: string): Promise<Json> {
    return this.call('GET', path);
  }

  /** POST `body` as JSON to `path`; the answer's JSON. */
  post(path: string, body: unknown): Promise<Json> {
    return this.call('POST', path, body);
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Json> {
    const { server, token } = this.connection;
    let res: Response;
    try {
      res = await fetch(server + path, {
        method,
        headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err instanceof Error ? err.name : String(err));
      throw new CliError(ExitCode.unreachable, `cannot reach the fos1 API at ${server} (${cause}) — is it running (\`npm start\`)? Point the CLI elsewhere with --server or FOS1_API_URL`);
    }
    const text = await res.text();
    let json: Json;
    try {
      json = (text.trim() ? JSON.parse(text) : {}) as Json;
    } catch {
      throw new CliError(ExitCode.unreachable, `${server} answered ${res.status} with something that is not JSON — is FOS1_API_URL the fos1 API?`);
    }
    if (res.ok) return json;
    throw this.refusal(res.status, json);
  }

  private refusal(status: number, json: Json): CliError {
    const message = typeof json.error === 'string' ? json.error : `HTTP ${status}`;
    const { token, tokenSource, defaultToken } = this.connection;
    if (status === 401) {
      const hint = !token
        ? defaultToken
          ? `no token — set FOS1_API_TOKEN or FOS1_API_TOKEN_FILE, or run \`npm start\` once to create ${tokenSource}`
          : `no token in ${tokenSource}`
        : `the token from ${tokenSource} is not valid for ${this.connection.server} — check it, or set FOS1_API_TOKEN / FOS1_API_TOKEN_FILE`;
      return new CliError(ExitCode.auth, `401: ${hint}`, [], json);
    }
    if (status === 403) return new CliError(ExitCode.auth, `403: ${message} — ask for a role that allows it (docs/security.md)`, [], json);
    if (status === 404) return new CliError(ExitCode.notFound, `404: ${message}`, [], json);
    if (status >= 500) return new CliError(ExitCode.unreachable, `${status}: the API failed: ${message}`, [], json);
    const issues = Array.isArray(json.issues) ? (json.issues as { field?: string; message?: string }[]).map((i) => `  ${i.field || '(request)'}: ${i.message ?? ''}`) : [];
    return new CliError(ExitCode.usage, `${status}: ${message}`, issues, json);
  }
}
