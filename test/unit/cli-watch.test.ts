/**
 * `fos1 status --watch` through runCli against a stand-in API (a plain HTTP server that
 * answers a scripted sequence of statuses): plain lines when stdout is not a TTY, frames
 * redrawn in place (cursor up + clear) on a TTY, and the exit code of the final phase.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runCli, type CliIo } from '../../cli/main';

const status = (phase: string, done: number, outcome: string) => ({
  changeId: 'w1',
  phase,
  message: `now ${phase}`,
  progress: { nodesDone: done, nodesTotal: 1 },
  nodes: { 'router-1': { outcome, diff: ['+ block 192.0.2.1/32'] } },
  audit: [],
});

describe('status --watch', () => {
  let server: Server;
  let base: string;
  let answers: object[] = [];
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      const body = answers.length > 1 ? answers.shift() : answers[0];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => server.close());

  function io(isTTY: boolean): { io: CliIo; written: () => string } {
    let out = '';
    return {
      io: {
        stdout: { isTTY, columns: 200, write: (s: string) => (out += s) },
        stderr: { write: (s: string) => (out += s) },
        readStdin: async () => '',
        env: { FOS1_API_URL: base, FOS1_API_TOKEN: 'tok' },
        sleep: async () => undefined,
      },
      written: () => out,
    };
  }

  test('not a TTY: one plain line per event, exit 0 once applied', async () => {
    answers = [status('rolling-out', 0, 'pending'), status('rolling-out', 0, 'pending'), status('applied', 1, 'applied')];
    const { io: cliIo, written } = io(false);
    expect(await runCli(['status', 'w1', '--watch'], cliIo)).toBe(0);
    expect(written().split('\n')).toEqual(['change w1: rolling-out 0/1 nodes — now rolling-out', 'node router-1: pending', 'change w1: applied 1/1 nodes — now applied', 'node router-1: applied', '']);
    expect(seen.at(-1)).toBe('GET /v1/changes/w1 Bearer tok');
  });

  test('a TTY: each frame replaces the last in place; a rolled-back change exits 1', async () => {
    answers = [status('rolling-out', 0, 'pending'), status('rolled-back', 1, 'rolled-back')];
    const { io: cliIo, written } = io(true);
    expect(await runCli(['status', 'w1', '--watch'], cliIo)).toBe(1);
    const out = written();
    // The first frame has 5 lines (header, message, "nodes:", the node, its diff line): the
    // redraw moves up 5 lines and clears to the end before the second frame.
    const [first, second, ...rest] = out.split('\x1b[5F\x1b[0J');
    expect(rest).toEqual([]);
    expect(first?.trimEnd().split('\n')).toHaveLength(5);
    expect(first).toContain('rolling-out');
    expect(second).toContain('rolled-back');
    expect(second).not.toContain('\x1b[5F');
  });
});
