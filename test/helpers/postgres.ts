/**
 * A throwaway PostgreSQL server for tests: Debian's binaries (scripts/bootstrap.d/45-postgres.sh
 * installs them) run from /usr/lib/postgresql/<version>/bin, a fresh cluster made by `initdb` in
 * a temporary folder, listening on 127.0.0.1 at a free port, trust authentication for the
 * `fos1` superuser. PostgreSQL refuses to run as root, so as root the server runs as the
 * unprivileged `postgres` system user (created by the Debian package).
 *
 * The server can be stopped and started again on the same port and data (to test what
 * happens while the database is down).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { eventually } from './eventually';

/** Folder holding initdb and postgres (the newest installed version), or undefined. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')) && existsSync(join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

/** The user the server runs as: ourselves, or (as root) the `postgres` system user. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

/** Null when a test server can be started here, else why not. */
export function postgresMissingReason(): string | null {
  if (!postgresBinDir()) return 'PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (scripts/bootstrap.sh installs Debian\'s postgresql)';
  if (process.getuid?.() === 0) {
    try {
      serverUser();
    } catch {
      return 'running as root and there is no `postgres` system user to run the server as (the Debian package creates it)';
    }
  }
  return null;
}

/** A running test server. */
export interface TestPostgres {
  port: number;
  /** Connection string for `database` (default `postgres`). */
  url(database?: string): string;
  /** Creates an empty database and returns its connection string. */
  createDatabase(name: string): Promise<string>;
  /** Runs one SQL statement as the superuser (to tamper, as an attacker with database access would). */
  sql(database: string, text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Fast shutdown; resolves when the server has exited. */
  stop(): Promise<void>;
  /** Starts it again (same port, same data); resolves when it accepts connections. */
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

/** Starts a fresh server. Throws with the reason when it cannot (see {@link postgresMissingReason}). */
export async function startPostgres(): Promise<TestPostgres> {
  const why = postgresMissingReason();
  if (why) throw new Error(why);
  const bin = postgresBinDir()!;
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'fos1-pg-'));
  if (user) chownSync(dir, user.uid, user.gid);
  const data = join(dir, 'data');
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', HOME: dir };
  execFileSync(join(bin, 'initdb'), ['-D', data, '-U', 'fos1', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { env, uid: user?.uid, gid: user?.gid, stdio: 'pipe' });
  const port = await freePort();
  let server: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const url = (database = 'postgres') => `postgresql://fos1@127.0.0.1:${port}/${database}`;

  const start = async (): Promise<void> => {
    // fsync stays on: the tests are about durability. Unix sockets go to our folder, not /run.
    const child = spawn(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1'], { env, uid: user?.uid, gid: user?.gid, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    server = child;
    // If the test process ends without destroy() (a crash, a kill), the server goes with it.
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    exited = new Promise((resolve) =>
      child.once('exit', () => {
        process.removeListener('exit', killOnExit);
        resolve();
      }),
    );
    let gone = false;
    void exited.then(() => (gone = true));
    await eventually(
      async () => {
        if (gone) throw new Error(`postgres exited while starting: ${stderr}`);
        const c = new Client({ connectionString: url(), connectionTimeoutMillis: 1000 });
        try {
          await c.connect();
          await c.end();
          return true;
        } catch {
          await c.end().catch(() => undefined);
          return false;
        }
      },
      (ok) => ok,
      `PostgreSQL to accept connections on port ${port}`,
      30_000,
      100,
    );
  };

  const stop = async (): Promise<void> => {
    if (!server || server.exitCode !== null || server.signalCode !== null) return;
    server.kill('SIGINT'); // fast shutdown: ends sessions, checkpoints, exits
    await exited;
    server = undefined;
  };

  const sql = async (database: string, text: string, params: unknown[] = []): Promise<Record<string, unknown>[]> => {
    const c = new Client({ connectionString: url(database) });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as Record<string, unknown>[];
    } finally {
      await c.end();
    }
  };

  await start();
  return {
    port,
    url,
    async createDatabase(name) {
      if (!/^[a-z][a-z0-9_]{0,62}$/.test(name)) throw new Error(`database name ${name}: lowercase letters, digits and _`);
      await sql('postgres', `CREATE DATABASE ${name}`);
      return url(name);
    },
    sql,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
