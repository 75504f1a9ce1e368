// Progress on stderr: one line that rewrites itself on a terminal, plain periodic lines elsewhere (logs, CI).

/** '4m5s', or '1h2m' from an hour on; '--' where there is none to tell (an ETA before any step's time). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds); // once, before the units: rounding each unit alone gave 0m60s
  return s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : `${Math.floor(s / 60)}m${s % 60}s`;
}

/** Images a second: below 10 with a decimal (a paper-preset step on one thread read "0 img/s"). */
export const rate = (perSecond: number): string => perSecond.toFixed(perSecond < 10 ? 1 : 0);

export class Progress {
  private lastPlain = 0;
  constructor(private readonly tty = Boolean(process.stderr.isTTY)) {}
  /**
   * A pass over images, as `label done/total images`, then their rate and the time left (at the end, taken): the
   * reporter of one pass, its clock started now, or again when the pass reports 0 done (it began later than the
   * reporter was made). `last` false: the line stays open for what follows it.
   */
  images(label: string, last = true): (done: number, total: number) => void {
    let started = Date.now(), ended = false;
    return (done, total) => {
      if (done === 0) [started, ended] = [Date.now(), false];
      // The end is said once (a pass's last report and its caller's own both reach it).
      if (done === total && ended) return;
      ended = done === total;
      const seconds = (Date.now() - started) / 1000;
      const time = done === total ? `in ${formatDuration(seconds)}` : `ETA ${formatDuration((seconds / done) * (total - done))}`;
      this.update(`${label} ${done}/${total} images${done > 0 && seconds > 0 ? `, ${rate(done / seconds)} img/s, ${time}` : ''}`, last && done === total);
    };
  }

  update(text: string, done: boolean): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text}${done ? '\n' : ''}`);
    } else if (done || Date.now() - this.lastPlain > 10_000) {
      process.stderr.write(`${text}\n`);
      this.lastPlain = Date.now();
    }
  }
}
