// The metrics of a `pirl train` run: one JSON line per step and per epoch (metrics.jsonl) and the
// steps as CSV (metrics.csv) for spreadsheets; a resumed run first drops what came after its checkpoint.
import { promises as fs } from 'fs';
import * as path from 'path';

import { writeFileAtomically } from '../safetensors';
import type { BatchLogs, EpochLogs } from '../train/trainer';

const CSV_COLUMNS = ['time', 'epoch', 'step', 'loss', 'lossImage', 'lossJigsaw', 'lr', 'gradNorm', 'imagesPerSecond'] as const;

export type Line = ({ type: 'batch' } & BatchLogs) | ({ type: 'epoch'; knn?: number } & EpochLogs);

export class MetricsLog {
  readonly jsonl: string;
  readonly csv: string;

  constructor(dir: string) {
    this.jsonl = path.join(dir, 'metrics.jsonl');
    this.csv = path.join(dir, 'metrics.csv');
  }

  async batch(logs: BatchLogs): Promise<void> {
    const time = new Date().toISOString();
    await fs.appendFile(this.jsonl, `${JSON.stringify({ type: 'batch', time, ...logs })}\n`);
    await this.appendCsv({ time, ...logs });
  }

  async epoch(logs: EpochLogs & { knn?: number }): Promise<void> {
    await fs.appendFile(this.jsonl, `${JSON.stringify({ type: 'epoch', time: new Date().toISOString(), ...logs })}\n`);
  }

  /**
   * Keeps what a run that continues from (epoch, step) had logged up to there (a killed run logged past
   * its checkpoint); returns those lines, which the resumed run's curves continue.
   */
  async truncate(position: { epoch: number; step: number }): Promise<Line[]> {
    const keep = (l: Line) => (l.type === 'batch' ? l.step <= position.step : l.epoch < position.epoch);
    const { lines } = await readLines(this.jsonl);
    const kept: Array<{ text: string; line: Line }> = [];
    lines.forEach((l, i) => {
      const parsed = parseLine(this.jsonl, l, i === lines.length - 1);
      if (parsed !== null && keep(parsed)) kept.push({ text: l.text, line: parsed });
    });
    await replace(this.jsonl, kept.map((l) => `${l.text}\n`).join(''));
    const csv = await readLines(this.csv);
    // A cut last row can still read as numbers: its missing newline is what tells.
    const [header, ...rows] = (csv.cut ? csv.lines.slice(0, -1) : csv.lines).map((l) => l.text);
    const stepColumn = CSV_COLUMNS.indexOf('step');
    if (header) await replace(this.csv, [header, ...rows.filter((r) => Number(r.split(',')[stepColumn]) <= position.step)].map((l) => `${l}\n`).join(''));
    return kept.map((l) => l.line);
  }

  /** Adds `knn` to epoch `epoch`'s line: a resumed run scoring the epoch that a stop left unscored. */
  async scoreEpoch(epoch: number, knn: number): Promise<void> {
    const { lines } = await readLines(this.jsonl);
    const texts = lines.map((l, i) => {
      const line = parseLine(this.jsonl, l, i === lines.length - 1);
      return line?.type === 'epoch' && line.epoch === epoch ? JSON.stringify({ ...line, knn }) : l.text;
    });
    await replace(this.jsonl, texts.map((t) => `${t}\n`).join(''));
  }

  /** Removes the files of an earlier run (--force). */
  async clear(): Promise<void> {
    await Promise.all([this.jsonl, this.csv].map((f) => fs.rm(f, { force: true })));
  }

  private async appendCsv(row: Record<string, unknown>): Promise<void> {
    const header = (await exists(this.csv)) ? '' : `${CSV_COLUMNS.join(',')}\n`;
    await fs.appendFile(this.csv, `${header}${CSV_COLUMNS.map((c) => row[c]).join(',')}\n`);
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
}

interface TextLine {
  /** From 1, as an editor counts. */
  number: number;
  text: string;
}

/** The non-blank lines of `file` (none where it is missing), and whether its last one lacks its newline (cut). */
async function readLines(file: string): Promise<{ lines: TextLine[]; cut: boolean }> {
  if (!(await exists(file))) return { lines: [], cut: false };
  const text = await fs.readFile(file, 'utf8');
  const lines = text.split('\n').map((t, i) => ({ number: i + 1, text: t })).filter((l) => l.text.trim() !== '');
  return { lines, cut: text !== '' && !text.endsWith('\n') };
}

// A run killed mid-append (kill -9) leaves its last line cut: that one is dropped (null); any other must parse.
function parseLine(file: string, line: TextLine, last: boolean): Line | null {
  try {
    return JSON.parse(line.text) as Line;
  } catch (err) {
    if (last) return null;
    throw new Error(`${file} line ${line.number} is not JSON (${(err as Error).message}): remove the line to resume the run, or start it again with --force`);
  }
}

async function replace(file: string, text: string): Promise<void> {
  await writeFileAtomically(file, text);
}
