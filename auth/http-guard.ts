/**
 * The front door of every fos1 HTTP server (the API, the ingest NDJSON endpoint):
 *
 * - a cap on concurrent requests (503 above it);
 * - `Host` must name an allowed host (DNS rebinding: a page on evil.example whose name
 *   resolves to 127.0.0.1 still sends `Host: evil.example`), and a browser's `Origin`, when
 *   present, must be an allowed host too (CSRF: a foreign page's POST is refused before
 *   anything runs) — 403 either way;
 * - a bearer token (401 with `WWW-Authenticate: Bearer` without a valid one) and the
 *   permission of the route (403);
 * - the body's media type (415): a browser can send text/plain and form bodies cross-origin
 *   without a CORS preflight, never application/json.
 *
 * Every authentication and authorization decision is logged as `audit authz <result>` with
 * the principal, verb, resource and route (never the token).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { describePermission, type Authenticator, type Permission, type Principal } from './authenticator';

/** A request refused by the guard: status, message and extra headers for the answer. */
export class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpRefusal';
  }
}

/** Limits and checks of an HTTP entry point (see {@link HttpGuard}). */
export interface HttpSecurityOptions {
  authenticator: Authenticator;
  /**
   * Names requests may carry in Host and Origin: `name` (on the server's own port) or
   * `name:port`. Default: localhost, 127.0.0.1 and [::1] on the server's port.
   */
  allowedHosts?: string[];
  /** Requests handled at once; more are answered 503 (default 64). */
  maxConcurrentRequests?: number;
  /** Time to receive a whole request (ms, default 60 s): `server.requestTimeout`. */
  requestTimeoutMs?: number;
  /** Time to receive the headers (ms, default 10 s): `server.headersTimeout`. */
  headersTimeoutMs?: number;
  /**
   * Called with every refusal (unauthenticated, forbidden, foreign Host or Origin), after it
   * is logged: the API hands them to the durable audit store (api/authz-audit.ts).
   */
  onRefusal?: (decision: AuthzDecision) => void;
}

/** One authentication or authorization decision, as audited. */
export interface AuthzDecision {
  principal: string;
  verb?: string;
  resource?: string;
  /** `METHOD /path` (no query string). */
  route: string;
  result: string;
  remote?: string;
  /** When it was decided (ISO 8601). */
  at: string;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

interface HostPort {
  hostname: string;
  port: string | undefined;
}

function parseHost(value: string, defaultPort?: string): HostPort | undefined {
  try {
    const url = new URL(`http://${value}`);
    if (url.username || url.password || url.pathname !== '/' || url.search || url.hash) return undefined;
    return { hostname: url.hostname.toLowerCase(), port: url.port || defaultPort };
  } catch {
    return undefined;
  }
}

/** Applies the time-outs of `options` to a server (before it listens). */
export function applyServerLimits(server: Server, options: HttpSecurityOptions): void {
  server.requestTimeout = options.requestTimeoutMs ?? 60_000;
  server.headersTimeout = Math.min(options.headersTimeoutMs ?? 10_000, server.requestTimeout);
  // Idle keep-alive connections are not left open for long either.
  server.keepAliveTimeout = 5_000;
}

/** Checks requests for one HTTP server; see the module comment. */
export class HttpGuard {
  private inFlight = 0;
  private readonly max: number;
  private readonly allowed: { hostname: string; port: string | undefined }[];

  constructor(
    private readonly options: HttpSecurityOptions,
    private readonly logger: Logger,
  ) {
    this.max = options.maxConcurrentRequests ?? 64;
    const entries = options.allowedHosts?.length ? options.allowedHosts : LOOPBACK_NAMES;
    this.allowed = entries.map((e) => {
      const hp = parseHost(e.trim());
      if (!hp) throw new Error(`allowed host "${e}" is not a host name or host:port`);
      return hp;
    });
  }

  /**
   * Counts the request (503 above the cap) and checks Host and Origin (403). Throws
   * {@link HttpRefusal}; the count drops when the response closes.
   */
  admit(req: IncomingMessage, res: ServerResponse): void {
    if (this.inFlight >= this.max) throw new HttpRefusal(503, `too many requests in progress (at most ${this.max}); retry shortly`, { 'retry-after': '1' });
    this.inFlight++;
    res.once('close', () => this.inFlight--);
    const ownPort = String(req.socket.localPort ?? '');
    const host = req.headers.host;
    const hostOk = host !== undefined && this.isAllowed(parseHost(host, '80'), ownPort);
    if (!hostOk) this.refuse(req, 'bad-host', 403, `Host "${host ?? ''}" is not one of this server's names (FOS1_ALLOWED_HOSTS)`);
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let parsed: HostPort | undefined;
      try {
        const url = new URL(origin);
        if (url.protocol === 'http:' || url.protocol === 'https:') parsed = { hostname: url.hostname.toLowerCase(), port: url.port || (url.protocol === 'https:' ? '443' : '80') };
      } catch {
        parsed = undefined;
      }
      if (!this.isAllowed(parsed, ownPort)) this.refuse(req, 'foreign-origin', 403, `requests from origin "${origin.slice(0, 200)}" are refused: fos1 does not serve web pages of other sites`);
    }
  }

  /** The caller's principal from `Authorization: Bearer …`; 401 without a valid token. */
  async authenticate(req: IncomingMessage): Promise<Principal> {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer[ ]+([\x21-\x7e]{1,4096})[ ]*$/i.exec(header);
    const principal = match?.[1] ? await this.options.authenticator.authenticate(match[1]) : undefined;
    if (!principal) {
      this.audit(req, undefined, undefined, 'unauthenticated');
      throw new HttpRefusal(401, header ? 'the bearer token is not valid' : 'authentication required: send "Authorization: Bearer <token>"', { 'www-authenticate': 'Bearer realm="fos1"' });
    }
    return principal;
  }

  /** 403 unless the principal has the permission; audited either way. */
  async authorize(req: IncomingMessage, principal: Principal, permission: Permission): Promise<void> {
    const allowed = await this.options.authenticator.authorize(principal, permission);
    this.audit(req, principal, permission, allowed ? 'allowed' : 'forbidden');
    if (!allowed) throw new HttpRefusal(403, `${principal.name} may not ${describePermission(permission)}`);
  }

  /** 415 unless the request's media type is `type` (parameters such as charset are fine). */
  requireMediaType(req: IncomingMessage, type: 'application/json' | 'application/x-ndjson'): void {
    const given = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (given !== type) throw new HttpRefusal(415, `the body must be ${type} (Content-Type: ${type}); got ${given ? `"${given.slice(0, 100)}"` : 'none'}`);
  }

  private isAllowed(hp: HostPort | undefined, ownPort: string): boolean {
    if (!hp) return false;
    return this.allowed.some((a) => a.hostname === hp.hostname && (a.port ?? ownPort) === hp.port);
  }

  private refuse(req: IncomingMessage, result: string, status: number, message: string): never {
    this.audit(req, undefined, undefined, result);
    throw new HttpRefusal(status, message);
  }

  private audit(req: IncomingMessage, principal: Principal | undefined, permission: Permission | undefined, result: string): void {
    const route = `${req.method ?? '?'} ${(req.url ?? '/').split('?')[0]?.slice(0, 200)}`;
    const decision: AuthzDecision = {
      principal: principal?.name ?? 'anonymous',
      ...(permission ? { verb: permission.verb, resource: permission.resource } : {}),
      route,
      result,
      ...(req.socket.remoteAddress ? { remote: req.socket.remoteAddress } : {}),
      at: new Date().toISOString(),
    };
    const { at: _at, ...logged } = decision;
    this.logger.info({ audit: logged }, `audit authz ${result}`);
    if (result !== 'allowed') this.options.onRefusal?.(decision);
  }
}
