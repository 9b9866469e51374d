/** The logger factory's choice: pretty lines for people on a terminal, JSON for machines. */
import { prettyLogs } from '../../log/logger';

describe('log format', () => {
  test('auto: pretty only on a TTY outside production', () => {
    expect(prettyLogs('auto', { isTTY: true }, {})).toBe(true);
    expect(prettyLogs('auto', { isTTY: false }, {})).toBe(false);
    expect(prettyLogs('auto', {}, {})).toBe(false);
    expect(prettyLogs('auto', { isTTY: true }, { NODE_ENV: 'production' })).toBe(false);
  });
  test('an explicit format wins', () => {
    expect(prettyLogs('json', { isTTY: true }, {})).toBe(false);
    expect(prettyLogs('pretty', { isTTY: false }, {})).toBe(true);
  });
});
