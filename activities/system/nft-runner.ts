/**
 * Runs nftables (`nft`) with argv arrays — never a shell string — optionally inside a
 * named network namespace (`ip netns exec NAME nft …`). Rules travel as nft's JSON
 * (`nft -j -f FILE`), so no input is ever parsed as nft syntax.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkArgv } from './command-args';

/** Runs `nft`. Resolves with stdout. */
export interface NftRunner {
  readonly netns: string | undefined;
  run(args: readonly string[]): Promise<string>;
  /**
   * Runs one JSON transaction (`nft -j -f FILE`). nft reads `-f -` by opening /dev/stdin,
   * which fails on the socket Node gives a child as stdin, so the JSON goes through a
   * private temporary file instead.
   */
  runJson(document: unknown): Promise<string>;
}

/** A failed `nft` call with nft's own message. */
export class NftCommandError extends Error {
  override readonly name = 'NftCommandError';
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`nft ${args.join(' ')} failed (exit ${exitCode}): ${stderr.trim() || 'no message'}`);
  }
}

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Creates an {@link NftRunner} for the host namespace or the named one. */
export function createNftRunner(options: { netns?: string; nftBinary?: string } = {}): NftRunner {
  const { netns, nftBinary = 'nft' } = options;
  if (netns !== undefined && !NETNS_NAME.test(netns)) {
    throw new Error(`network namespace name "${netns}" is not valid (letters, digits, "_", "-", ".")`);
  }
  const [command, prefix] = netns ? ['ip', ['netns', 'exec', netns, nftBinary]] : [nftBinary, []];
  const run = (args: readonly string[]): Promise<string> => {
    const argv = [...prefix, ...args];
    return new Promise((resolve, reject) => {
      checkArgv(argv);
      execFile(command, argv, { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new NftCommandError(args, typeof err.code === 'number' ? err.code : null, stderr));
        else resolve(stdout);
      });
    });
  };
  return {
    netns,
    run,
    async runJson(document) {
      const dir = await mkdtemp(join(tmpdir(), 'fos1-nft-'));
      const file = join(dir, 'transaction.json');
      try {
        await writeFile(file, JSON.stringify(document), { mode: 0o600 });
        return await run(['-j', '-f', file]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
