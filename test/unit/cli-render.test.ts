/**
 * What the CLI prints, without a terminal: plain event lines for `status --watch` when
 * stdout is not a TTY, coloured diffs only on a TTY without NO_COLOR, waves rendered
 * generically.
 */
import { paletteFor, renderPlan, renderStatus, statusEvents, type StatusView } from '../../cli/render';

const ESC = '\x1b[';

const step = (phase: string, done: number, outcomes: Record<string, string>, message = `${phase}`): StatusView => ({
  changeId: 'c1',
  phase,
  message,
  progress: { nodesDone: done, nodesTotal: 2 },
  nodes: Object.fromEntries(Object.entries(outcomes).map(([n, o]) => [n, { outcome: o, diff: ['+ route 10.0.0.0/24 via 10.200.0.1 table 254 metric 0'] }])),
});

describe('status --watch on a non-TTY', () => {
  test('prints one plain line per event, nothing for an unchanged status', () => {
    const sequence = [step('rolling-out', 0, { a: 'pending', b: 'pending' }), step('rolling-out', 0, { a: 'pending', b: 'pending' }), step('rolling-out', 1, { a: 'applied', b: 'pending' }), step('applied', 2, { a: 'applied', b: 'applied' })];
    const lines: string[] = [];
    let previous: StatusView | undefined;
    for (const s of sequence) {
      lines.push(...statusEvents(previous, s));
      previous = s;
    }
    expect(lines).toEqual([
      'change c1: rolling-out 0/2 nodes — rolling-out',
      'node a: pending',
      'node b: pending',
      'change c1: rolling-out 1/2 nodes — rolling-out',
      'node a: applied',
      'change c1: applied 2/2 nodes — applied',
      'node b: applied',
    ]);
    expect(lines.every((l) => !l.includes(ESC) && !l.includes('\n'))).toBe(true);
  });

  test('waves, when the status has them, are shown generically and their changes are events', () => {
    const first = { ...step('rolling-out', 0, { a: 'pending' }), waves: [{ name: 'canary', phase: 'rolling-out', nodes: ['a'] }] };
    const second = { ...first, waves: [{ name: 'canary', phase: 'applied', nodes: ['a'] }] };
    expect(statusEvents(first, second)).toEqual(['canary applied nodes=a']);
    expect(renderStatus(second, paletteFor({ isTTY: false }, {}))).toEqual(expect.arrayContaining(['waves:', '  canary applied nodes=a']));
  });
});

describe('colour', () => {
  const plan = step('planned', 0, { a: 'planned' });
  plan.nodes = { a: { outcome: 'planned', diff: ['+ route 10.1.0.0/24', '- route 10.2.0.0/24', '~ link eth0 mtu 1500 → 9000'] } };

  test('a TTY gets + green, - red, ~ yellow', () => {
    const lines = renderPlan(plan, paletteFor({ isTTY: true }, {}));
    expect(lines).toEqual([expect.stringContaining('node a'), `  ${ESC}32m+ route 10.1.0.0/24${ESC}39m`, `  ${ESC}31m- route 10.2.0.0/24${ESC}39m`, `  ${ESC}33m~ link eth0 mtu 1500 → 9000${ESC}39m`]);
  });

  test('no colour when not a TTY or with NO_COLOR', () => {
    for (const palette of [paletteFor({ isTTY: false }, {}), paletteFor({ isTTY: true }, { NO_COLOR: '1' })]) {
      expect(renderPlan(plan, palette)).toEqual(['node a', '  + route 10.1.0.0/24', '  - route 10.2.0.0/24', '  ~ link eth0 mtu 1500 → 9000']);
    }
  });
});
