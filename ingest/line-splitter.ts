/**
 * Splits a byte stream into lines without trusting chunk boundaries: a chunk may end in
 * the middle of a line or of a UTF-8 character. Lines longer than `maxLineBytes` are
 * dropped (reported through `onOverflow`) instead of growing the buffer without bound.
 */
import { StringDecoder } from 'node:string_decoder';

/** Incremental line splitter. */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private overflowing = false;

  constructor(
    private readonly maxLineBytes = 1 << 20,
    private readonly onOverflow: (length: number) => void = () => undefined,
  ) {}

  /** Feeds a chunk; returns the complete lines it finished. */
  push(chunk: Buffer): string[] {
    const text = this.partial + this.decoder.write(chunk);
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    if (this.overflowing && lines.length > 0) {
      // The rest of an overlong line ends here; drop it.
      lines.shift();
      this.overflowing = false;
    }
    if (this.partial.length > this.maxLineBytes) {
      this.onOverflow(this.partial.length);
      this.partial = '';
      this.overflowing = true;
    }
    return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  }

  /** Discards a partial line (after a truncation the bytes before it are gone). */
  reset(): void {
    this.partial = '';
    this.overflowing = false;
  }

  /** The unterminated rest, at end of stream. */
  end(): string[] {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    return rest === '' || this.overflowing ? [] : [rest];
  }
}
