/**
 * The rollout view of `fos1 status [--watch]` (cli/rollout-view.ts) and the argument of
 * `fos1 extend-bake` (cli/rollout-commands.ts): waves with each node's phase and the gate
 * verdicts, redrawn as a frame or followed as plain lines, wave by wave.
 */
import { paletteFor, renderStatus, statusEvents, type StatusView } from '../../cli/render';
import { parseDurationSeconds } from '../../cli/rollout-commands';
import { CliError, ExitCode } from '../../cli/errors';

const plain = paletteFor({ isTTY: false }, {});

type Node = { outcome: string; wave: string; phase: string };
const wave = (index: number, name: string, nodes: string[], state: string, extra: object = {}) => ({ index, name, nodes, state, bakeSeconds: 30, gates: [], concurrency: 1, gateVerdicts: {}, ...extra });
function rollout(phase: string, waves: ReturnType<typeof wave>[], nodes: Record<string, Node>, extra: object = {}): StatusView {
  return { changeId: 'r1', phase, message: phase, progress: { nodesDone: Object.values(nodes).filter((n) => n.outcome !== 'pending').length, nodesTotal: 3 }, waves, nodes: Object.fromEntries(Object.entries(nodes).map(([k, v]) => [k, { ...v, diff: [] }])), ...extra };
}
const pending = (w: string): Node => ({ outcome: 'pending', wave: w, phase: 'pending' });
const holding = (w: string): Node => ({ outcome: 'applied', wave: w, phase: 'holding' });
const done = (w: string): Node => ({ outcome: 'applied', wave: w, phase: 'done' });
const reach = (phase: string, successes: number) => ({ reach: { gate: 'reach', kind: 'reachability', phase, tally: { successes, failures: 0, inconclusives: 0 } } });

/** Three waves of one node each, moving one after the other. */
const sequence: StatusView[] = [
  rollout('rolling-out', [wave(0, 'canary', ['router-1'], 'applying'), wave(1, 'second', ['router-2'], 'pending'), wave(2, 'rest', ['router-3'], 'pending')], { 'router-1': { outcome: 'pending', wave: 'canary', phase: 'applying' }, 'router-2': pending('second'), 'router-3': pending('rest') }, { currentWave: 'canary' }),
  rollout('baking', [wave(0, 'canary', ['router-1'], 'baking', { bakeEndsAt: '2030-01-01T00:00:30.000Z', gateVerdicts: reach('running', 1) }), wave(1, 'second', ['router-2'], 'pending'), wave(2, 'rest', ['router-3'], 'pending')], { 'router-1': holding('canary'), 'router-2': pending('second'), 'router-3': pending('rest') }, { currentWave: 'canary' }),
  rollout('rolling-out', [wave(0, 'canary', ['router-1'], 'ready', { gateVerdicts: reach('success', 2) }), wave(1, 'second', ['router-2'], 'applying'), wave(2, 'rest', ['router-3'], 'pending')], { 'router-1': holding('canary'), 'router-2': { outcome: 'pending', wave: 'second', phase: 'applying' }, 'router-3': pending('rest') }, { currentWave: 'second' }),
  rollout('applied', [wave(0, 'canary', ['router-1'], 'committed', { gateVerdicts: reach('success', 2) }), wave(1, 'second', ['router-2'], 'committed'), wave(2, 'rest', ['router-3'], 'committed')], { 'router-1': done('canary'), 'router-2': done('second'), 'router-3': done('rest') }),
];

describe('status --watch of a staged rollout', () => {
  test('plain lines follow it wave by wave: wave states, node phases, gate verdicts', () => {
    const lines: string[] = [];
    let previous: StatusView | undefined;
    for (const s of sequence) {
      lines.push(...statusEvents(previous, s));
      previous = s;
    }
    expect(lines).toEqual([
      'change r1: rolling-out 0/3 nodes — rolling-out',
      'wave 1/3 canary: applying',
      'wave 1/3 canary node router-1: applying, pending',
      'wave 2/3 second: pending',
      'wave 3/3 rest: pending',
      'change r1: baking 1/3 nodes — baking',
      'wave 1/3 canary: baking (bake ends 2030-01-01T00:00:30.000Z)',
      'wave 1/3 canary node router-1: holding, applied',
      'wave 1/3 canary gate reach [reachability] running (1 ok, 0 failed, 0 inconclusive)',
      'change r1: rolling-out 1/3 nodes — rolling-out',
      'wave 1/3 canary: ready',
      'wave 1/3 canary gate reach [reachability] success (2 ok, 0 failed, 0 inconclusive)',
      'wave 2/3 second: applying',
      'wave 2/3 second node router-2: applying, pending',
      'change r1: applied 3/3 nodes — applied',
      'wave 1/3 canary: committed',
      'wave 1/3 canary node router-1: done, applied',
      'wave 2/3 second: committed',
      'wave 2/3 second node router-2: done, applied',
      'wave 3/3 rest: committed',
      'wave 3/3 rest node router-3: done, applied',
    ]);
    // An unchanged status prints nothing.
    expect(statusEvents(sequence[1], sequence[1] as StatusView)).toEqual([]);
  });

  test('the frame shows every wave, each node with its phase under its wave, the gates, and marks the current wave', () => {
    expect(renderStatus(sequence[1] as StatusView, plain)).toEqual([
      'change r1: baking (1/3 nodes)',
      '  baking',
      'waves:',
      '▶ wave 1/3 canary  baking  bake ends 2030-01-01T00:00:30.000Z',
      '      router-1  holding  applied',
      '      gate reach [reachability] running (1 ok, 0 failed, 0 inconclusive)',
      '  wave 2/3 second  pending  bake 30s',
      '      router-2  pending',
      '  wave 3/3 rest  pending  bake 30s',
      '      router-3  pending',
    ]);
  });

  test('a rollback shows the gates measured again afterwards; colours only on a TTY', () => {
    const rolledBack = rollout('rolled-back', [wave(0, 'canary', ['router-1'], 'restored', { gateVerdicts: reach('failure', 0) })], { 'router-1': { outcome: 'restored', wave: 'canary', phase: 'done' } }, { postRollbackGates: reach('success', 2) });
    const frame = renderStatus(rolledBack, plain);
    expect(frame).toEqual(expect.arrayContaining(['after the rollback:', '  gate reach [reachability] success (2 ok, 0 failed, 0 inconclusive)']));
    expect(frame.join('\n')).not.toContain('\x1b[');
    expect(renderStatus(rolledBack, paletteFor({ isTTY: true }, {})).join('\n')).toContain('\x1b[31mrestored\x1b[39m');
    expect(statusEvents(undefined, rolledBack)).toContain('after the rollback gate reach [reachability] success (2 ok, 0 failed, 0 inconclusive)');
  });
});

describe('status of a node whose restore is retrying (issue 16)', () => {
  const retrying = () => rollout('rolling-out', [wave(0, 'all', ['router-1'], 'applying')], { 'router-1': { outcome: 'pending', wave: 'all', phase: 'applying' } }) as StatusView & { nodes: Record<string, object> };
  const withRestore = (s: StatusView & { nodes: Record<string, object> }, restore: object | undefined) => ({ ...s, nodes: { 'router-1': { ...s.nodes['router-1'], ...(restore ? { restore } : {}) } } }) as StatusView;
  const since = '2030-01-01T00:00:00.000Z';

  test('the frame shows the attempt count, the next try and the last error under the node', () => {
    const frame = renderStatus(withRestore(retrying(), { attempt: 2, lastError: 'restore blocklist: node unreachable', since, nextTryAt: '2030-01-01T00:00:35.000Z' }), plain);
    expect(frame).toContain('        restore retrying since 2030-01-01T00:00:00.000Z: 2 retries failed, next try 2030-01-01T00:00:35.000Z; last error: restore blocklist: node unreachable');
    // The first wait (the rollback itself did not verify) and a round that is running.
    expect(renderStatus(withRestore(retrying(), { attempt: 0, lastError: 'e', since, nextTryAt: '2030-01-01T00:00:05.000Z' }), plain).join('\n')).toContain('the rollback did not verify, next try 2030-01-01T00:00:05.000Z');
    expect(renderStatus(withRestore(retrying(), { attempt: 1, lastError: 'e', since }), plain).join('\n')).toContain('1 retry failed, trying now');
  });

  test('--watch prints a line each time a round fails and the next try moves, and nothing while it stands', () => {
    const a = withRestore(retrying(), { attempt: 0, lastError: 'unreachable', since, nextTryAt: '2030-01-01T00:00:05.000Z' });
    const b = withRestore(retrying(), { attempt: 1, lastError: 'unreachable', since });
    const c = withRestore(retrying(), { attempt: 1, lastError: 'unreachable', since, nextTryAt: '2030-01-01T00:00:15.000Z' });
    expect(statusEvents(undefined, a)).toContain('wave 1/1 all node router-1: restore retrying since 2030-01-01T00:00:00.000Z: the rollback did not verify, next try 2030-01-01T00:00:05.000Z; last error: unreachable');
    expect(statusEvents(a, a)).toEqual([]);
    expect(statusEvents(a, b)).toEqual(['wave 1/1 all node router-1: restore retrying since 2030-01-01T00:00:00.000Z: 1 retry failed, trying now; last error: unreachable']);
    expect(statusEvents(b, c)).toEqual(['wave 1/1 all node router-1: restore retrying since 2030-01-01T00:00:00.000Z: 1 retry failed, next try 2030-01-01T00:00:15.000Z; last error: unreachable']);
    // Without waves (a change of the legacy shape) the same line.
    const legacy = { changeId: 'r1', phase: 'rolling-out', message: 'm', nodes: { 'router-1': { outcome: 'pending', diff: [], restore: { attempt: 3, lastError: 'x', since, nextTryAt: '2030-01-01T00:01:00.000Z' } } } } as StatusView;
    expect(renderStatus(legacy, plain)).toContain('    restore retrying since 2030-01-01T00:00:00.000Z: 3 retries failed, next try 2030-01-01T00:01:00.000Z; last error: x');
    expect(statusEvents(undefined, legacy)).toContain('node router-1: restore retrying since 2030-01-01T00:00:00.000Z: 3 retries failed, next try 2030-01-01T00:01:00.000Z; last error: x');
  });
});

describe('extend-bake DURATION', () => {
  test.each([
    ['90', 90],
    ['90s', 90],
    ['10m', 600],
    ['1h30m', 5400],
    ['24h', 86_400],
  ])('%s is %d seconds', (text, seconds) => expect(parseDurationSeconds(text)).toBe(seconds));

  test.each(['', '0', '10x', '1h 30m', '-5m', '25h', 'm'])('"%s" is a usage error naming DURATION', (text) => {
    let caught: unknown;
    try {
      parseDurationSeconds(text);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CliError);
    expect((caught as CliError).code).toBe(ExitCode.usage);
    expect((caught as CliError).message).toMatch(/^DURATION "/);
  });
});
