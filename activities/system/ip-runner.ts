/**
 * Runs iproute2 (`ip`) with argv arrays — never a shell string — optionally inside a
 * named network namespace (`ip -n NAME`, which enters the namespace for that one call).
 */
import { execFile } from 'node:child_process';
import { checkArgv, checkBatchScript } from './command-args';

/** Runs one `ip` invocation; `stdin` feeds `ip -batch -`. Resolves with stdout. */
export interface IpRunner {
  /** The namespace this runner acts in; undefined for the caller's own (the host in production). */
  readonly netns: string | undefined;
  run(args: readonly string[], stdin?: string): Promise<string>;
}

/** The error of a failed `ip` call, with the kernel's message (e.g. "Nexthop has invalid gateway."). */
export class IpCommandError extends Error {
  override readonly name = 'IpCommandError';
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`ip ${args.join(' ')} failed (exit ${exitCode}): ${stderr.trim() || 'no message'}`);
  }
}

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Creates an {@link IpRunner} for the host namespace or the named one. */
export function createIpRunner(options: { netns?: string; ipBinary?: string } = {}): IpRunner {
  const { netns, ipBinary = 'ip' } = options;
  if (netns !== undefined && !NETNS_NAME.test(netns)) {
    throw new Error(`network namespace name "${netns}" is not valid (letters, digits, "_", "-", ".")`);
  }
  const prefix = netns ? ['-n', netns] : [];
  return {
    netns,
    run(args, stdin) {
      const argv = [...prefix, ...args];
      return new Promise((resolve, reject) => {
        // The last check before root runs it (activities/system/command-args.ts): no argument
        // with a newline, no batch line with anything but plain tokens.
        checkArgv(argv);
        if (stdin !== undefined) checkBatchScript(stdin);
        const child = execFile(ipBinary, argv, { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
          if (err) {
            const code = typeof err.code === 'number' ? err.code : null;
            reject(new IpCommandError(argv, code, stderr));
          } else {
            resolve(stdout);
          }
        });
        if (stdin !== undefined) child.stdin?.end(stdin);
      });
    },
  };
}
