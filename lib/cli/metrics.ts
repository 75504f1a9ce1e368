// The metrics of a `pirl train` run: one JSON line per step and per epoch (metrics.jsonl) and the
// steps as CSV (metrics.csv) for spreadsheets; a resumed run first drops what came after its checkpoint.
import { promises as fs } from 'fs';
import * as path from 'path';

import type { BatchLogs, EpochLogs } from '../train/trainer';

const CSV_COLUMNS = ['time', 'epoch', 'step', 'loss', 'lossImage', 'lossJigsaw', 'lr', 'gradNorm', 'imagesPerSecond'] as const;

type Line = ({ type: 'batch' } & BatchLogs) | ({ type: 'epoch'; knn?: number } & EpochLogs);

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

  /** Keeps what a run that continues from (epoch, step) had logged up to there: a killed run logged past its checkpoint. */
  async truncate(position: { epoch: number; step: number }): Promise<void> {
    const keep = (l: Line) => (l.type === 'batch' ? l.step <= position.step : l.epoch < position.epoch);
    const lines = (await readLines(this.jsonl)).filter((text) => keep(JSON.parse(text) as Line));
    await replace(this.jsonl, lines.map((l) => `${l}\n`).join(''));
    const [header, ...rows] = await readLines(this.csv);
    const stepColumn = CSV_COLUMNS.indexOf('step');
    if (header) await replace(this.csv, [header, ...rows.filter((r) => Number(r.split(',')[stepColumn]) <= position.step)].map((l) => `${l}\n`).join(''));
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

async function readLines(file: string): Promise<string[]> {
  if (!(await exists(file))) return [];
  return (await fs.readFile(file, 'utf8')).split('\n').filter((l) => l.trim() !== '');
}

async function replace(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text);
  await fs.rename(tmp, file);
}
