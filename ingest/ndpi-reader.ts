/**
 * Runs nDPI's `ndpiReader` (Debian `libndpi-bin`, nDPI 4.2) over a capture file or a
 * live interface and hands each flow line of its `-v 2` report to a callback.
 *
 * The reader's protocol and category files are passed explicitly (`-p -c -r -j -S`,
 * the flags nDPI 4.2's own tests use), because its labels depend on them.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { INTERFACE_NAME } from '../model/node-state';
import { LineSplitter } from './line-splitter';

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What to analyse: a capture file, or a live interface for a number of seconds. */
export type NdpiInput = { pcap: string } | { interface: string; seconds: number };

/** Options of {@link runNdpiReader}. */
export interface NdpiReaderOptions {
  input: NdpiInput;
  /** Folder with protos.txt, categories.txt, risky_domains.txt, ja3_fingerprints.csv, sha1_fingerprints.csv. */
  configDir?: string;
  /** Path of the binary. */
  binary?: string;
  /** Network namespace to capture in (`ip netns exec`); the interface lives there. */
  netns?: string;
  onLine: (line: string) => Promise<unknown> | unknown;
}

/** Raised when ndpiReader cannot run or fails; says which and why. */
export class NdpiReaderError extends Error {
  override readonly name = 'NdpiReaderError';
}

/** Builds the argv for ndpiReader (exported for tests); validates every part. */
export function ndpiReaderArgs(input: NdpiInput, configDir?: string): string[] {
  const args: string[] = [];
  if (configDir !== undefined) {
    const files: [string, string][] = [
      ['-p', 'protos.txt'],
      ['-c', 'categories.txt'],
      ['-r', 'risky_domains.txt'],
      ['-j', 'ja3_fingerprints.csv'],
      ['-S', 'sha1_fingerprints.csv'],
    ];
    for (const [flag, name] of files) {
      const path = join(configDir, name);
      if (existsSync(path)) args.push(flag, path);
    }
  }
  args.push('-q', '-t', '-v', '2');
  if ('pcap' in input) {
    if (!existsSync(input.pcap)) throw new NdpiReaderError(`capture ${input.pcap} does not exist`);
    args.push('-i', input.pcap);
  } else {
    if (!INTERFACE_NAME.test(input.interface)) throw new NdpiReaderError(`"${input.interface}" is not an interface name`);
    if (!Number.isInteger(input.seconds) || input.seconds < 1 || input.seconds > 86_400) throw new NdpiReaderError('seconds must be a whole number 1–86400');
    args.push('-i', input.interface, '-s', String(input.seconds));
  }
  return args;
}

/** Runs the reader to completion; resolves with the number of lines it printed. */
export function runNdpiReader(options: NdpiReaderOptions): Promise<number> {
  const args = ndpiReaderArgs(options.input, options.configDir);
  if (options.netns !== undefined && !NETNS_NAME.test(options.netns)) throw new NdpiReaderError(`"${options.netns}" is not a network namespace name`);
  const [command, argv] = options.netns === undefined ? [options.binary ?? 'ndpiReader', args] : ['ip', ['netns', 'exec', options.netns, options.binary ?? 'ndpiReader', ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const splitter = new LineSplitter();
    let lines = 0;
    let stderr = '';
    let chain = Promise.resolve();
    child.stdout.on('data', (chunk: Buffer) => {
      const batch = splitter.push(chunk);
      chain = chain.then(async () => {
        for (const line of batch) {
          lines++;
          await options.onLine(line);
        }
      });
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString();
    });
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new NdpiReaderError(err.code === 'ENOENT' ? 'ndpiReader is not installed (Debian package libndpi-bin; scripts/bootstrap.sh installs it)' : err.message)),
    );
    child.on('close', (code) => {
      chain
        .then(async () => {
          for (const line of splitter.end()) {
            lines++;
            await options.onLine(line);
          }
        })
        .then(() => (code === 0 ? resolve(lines) : reject(new NdpiReaderError(`ndpiReader exited with ${code}: ${stderr.trim().slice(0, 500)}`))), reject);
    });
  });
}
