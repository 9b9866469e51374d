/**
 * Exit codes of the `fos1` CLI, for scripts (docs/cli.md):
 *
 * | code | meaning |
 * | --- | --- |
 * | 0 | done: the request was accepted, the change applied (or is still running, without `--watch`) |
 * | 1 | the change failed: rejected, rolled back, reverted (aborted or unconfirmed), rollback failed |
 * | 2 | usage or invalid request: bad arguments, an unreadable/invalid change file, a 400/409/413/415 |
 * | 3 | authentication or authorization: no or a bad token (401), not allowed (403) |
 * | 4 | not found: no change with that id |
 * | 5 | the API is unreachable or failed (connection refused, time-out, 5xx) |
 * | 6 | `audit verify`: the audit store does not verify (the first bad record is named) |
 */
export const ExitCode = { ok: 0, changeFailed: 1, usage: 2, auth: 3, notFound: 4, unreachable: 5, auditInvalid: 6 } as const;

/** An error the CLI reports as one message and exits with `code`. */
export class CliError extends Error {
  constructor(
    readonly code: (typeof ExitCode)[keyof typeof ExitCode],
    message: string,
    /** Lines printed after the message (a 400's issues). */
    readonly details: string[] = [],
    /** The API's answer, for `--output json`. */
    readonly body?: unknown,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
