// Progress on stderr: one line that rewrites itself on a terminal, plain periodic lines elsewhere (logs, CI).

export const formatDuration = (s: number): string =>
  s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;

export class Progress {
  private lastPlain = 0;
  constructor(private readonly tty = Boolean(process.stderr.isTTY)) {}
  update(text: string, done: boolean): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text}${done ? '\n' : ''}`);
    } else if (done || Date.now() - this.lastPlain > 10_000) {
      process.stderr.write(`${text}\n`);
      this.lastPlain = Date.now();
    }
  }
}
