// Progress on stderr: one line that rewrites itself on a terminal, plain periodic lines elsewhere (logs, CI).

/** '4m5s', or '1h2m' from an hour on; '--' where there is none to tell (an ETA before any step's time). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds); // once, before the units: rounding each unit alone gave 0m60s
  return s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : `${Math.floor(s / 60)}m${s % 60}s`;
}

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
