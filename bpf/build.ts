/**
 * Compiles fos1's BPF programs (`bpf/fos1-*.bpf.c`) with `clang -target bpf -O2 -g`
 * against the running kernel's BTF.
 *
 * `vmlinux.h` is generated from `/sys/kernel/btf/vmlinux` with bpftool (CO-RE: the
 * programs see the kernel's own type definitions, and libbpf relocates field accesses
 * at load time). Both the header (~3 MB) and the objects go to a cache folder keyed by
 * content hashes, never into the work tree: a second build with unchanged sources and
 * kernel is a few file checks.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Folder of the C sources (this folder). */
export const BPF_SOURCE_DIR = __dirname;

/** The program files, one per attach point. */
export const BPF_PROGRAMS = {
  tc: 'fos1-tc.bpf.c',
  xdp: 'fos1-xdp.bpf.c',
} as const;

export type BpfProgramFile = keyof typeof BPF_PROGRAMS;

/** Where to build and with what. */
export interface BuildOptions {
  /** Cache folder; objects go to `<cacheDir>/bpf-build/<hash>/`. */
  cacheDir: string;
  /** Kernel BTF to generate vmlinux.h from. */
  btfPath?: string;
  clang?: string;
  bpftool?: string;
}

/** Paths of the compiled objects. */
export type BuiltObjects = Record<BpfProgramFile, string>;

/** A compile or header-generation step failed; `output` is the tool's stderr. */
export class BpfBuildError extends Error {
  override name = 'BpfBuildError';
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(`${message}\n${output}`);
  }
}

/** Builds (or finds in the cache) every program object. Synchronous: it runs once per process. */
export function buildDatapath(opts: BuildOptions): BuiltObjects {
  const btfPath = opts.btfPath ?? '/sys/kernel/btf/vmlinux';
  const clang = opts.clang ?? 'clang';
  const root = join(opts.cacheDir, 'bpf-build');
  mkdirSync(root, { recursive: true });

  const btfHash = sha256(readFileSync(btfPath));
  const vmlinuxDir = join(root, `vmlinux-${btfHash.slice(0, 16)}`);
  if (!existsSync(join(vmlinuxDir, 'vmlinux.h'))) {
    const header = run(opts.bpftool ?? 'bpftool', ['btf', 'dump', 'file', btfPath, 'format', 'c'], 'bpftool btf dump');
    atomicWriteDir(vmlinuxDir, { 'vmlinux.h': header });
  }

  const includeDir = join(BPF_SOURCE_DIR, 'include');
  const sourceHash = sha256(
    [btfHash, ...Object.values(BPF_PROGRAMS), ...readdirSync(includeDir).sort()]
      .map((name) => {
        if (name === btfHash) return name;
        const path = name.endsWith('.bpf.c') ? join(BPF_SOURCE_DIR, name) : join(includeDir, name);
        return `${name}\0${readFileSync(path, 'utf8')}`;
      })
      .join('\0'),
  );
  const outDir = join(root, `objects-${sourceHash.slice(0, 16)}`);
  const built = Object.fromEntries(
    Object.entries(BPF_PROGRAMS).map(([kind, file]) => [kind, join(outDir, file.replace(/\.c$/, '.o'))]),
  ) as BuiltObjects;
  if (Object.values(built).every((p) => existsSync(p))) return built;

  const tmp = `${outDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const file of Object.values(BPF_PROGRAMS)) {
    run(
      clang,
      [
        '-target', 'bpf', '-O2', '-g', '-Wall', '-Werror',
        '-I', vmlinuxDir, '-I', includeDir,
        '-c', join(BPF_SOURCE_DIR, file),
        '-o', join(tmp, file.replace(/\.c$/, '.o')),
      ],
      `clang ${file}`,
    );
  }
  try {
    renameSync(tmp, outDir);
  } catch {
    // A concurrent build finished first; its output is identical.
    rmSync(tmp, { recursive: true, force: true });
  }
  return built;
}

function run(cmd: string, args: string[], what: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new BpfBuildError(`${what} failed: ${e.message.split('\n')[0]}`, e.stderr ?? '');
  }
}

function atomicWriteDir(dir: string, files: Record<string, string>): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(tmp, name), text);
  try {
    renameSync(tmp, dir);
  } catch {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
