// The seeded fuzz suite of bad input: safetensors headers and bytes, image files, tensor arguments
// and CLI flags. Every case must end in a result or an error that says what is wrong — never a
// crash (each category runs in a child process, so a signal is seen), a hang (time limits) or a
// JavaScript internals message. Seeds are fixed: a failure names the case to replay.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

const root = path.join(__dirname, '..');
const child = path.join(__dirname, 'fixtures', 'fuzz-child.js');
const cli = path.join(root, 'dist', 'cli.js');
// What a message must not be: JavaScript's own words about pirl's internals.
const INTERNALS = /Cannot read propert|is not a function|is not iterable|undefined is not|Maximum call stack|NaN bytes/;

interface Outcome {
  case: number;
  outcome?: string;
  message?: string;
}

function runCategory(category: string, seed: number, count: number): Record<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-fuzz-'));
  try {
    const r = spawnSync(process.execPath, [child, category, String(seed), String(count), dir], { encoding: 'utf8', timeout: 240_000, maxBuffer: 64 << 20 });
    const lines = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Outcome);
    const done = lines.filter((l) => l.outcome !== undefined);
    const last = lines[lines.length - 1];
    // A crash or hang names the case it happened in.
    expect({ category, seed, crashedOrHungIn: r.status === 0 ? null : last?.case, signal: r.signal, stderr: r.stderr.slice(0, 500) })
      .toEqual({ category, seed, crashedOrHungIn: null, signal: null, stderr: '' });
    expect(done).toHaveLength(count);
    const counts: Record<string, number> = {};
    for (const d of done) {
      counts[d.outcome!] = (counts[d.outcome!] ?? 0) + 1;
      expect({ case: d.case, outcome: d.outcome }).toEqual({ case: d.case, outcome: expect.stringMatching(/^(ok|SafetensorsError|TypeError|RangeError|Error)$/) });
      if (d.outcome !== 'ok') {
        expect(d.message).not.toMatch(INTERNALS);
        expect(d.message!.length).toBeGreaterThan(10);
      }
    }
    console.log(`fuzz ${category} (seed ${seed}): ${count} cases, ${JSON.stringify(counts)}`);
    return counts;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('fuzz', () => {
  test('safetensors: 400 mutated headers, metadata and byte streams', () => {
    const counts = runCategory('safetensors', 1, 400);
    expect(counts.ok).toBeGreaterThan(0); // some mutations are harmless, and load
    expect(counts.SafetensorsError).toBeGreaterThan(100);
  }, 300_000);

  test('images: 60 damaged or random files among good ones', () => {
    runCategory('images', 2, 60);
  }, 300_000);

  test('tensors and ops: 300 odd arrays, shapes and options', () => {
    const counts = runCategory('tensors', 3, 300);
    expect(Object.keys(counts).length).toBeGreaterThan(1);
  }, 300_000);

  test('CLI flags: 24 odd values of train\'s flags exit 0, 1 or 2 with a message, in time', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-fuzz-cli-'));
    try {
      for (const cls of ['a', 'b']) {
        fs.mkdirSync(path.join(dir, 'data', cls), { recursive: true });
        for (let i = 0; i < 4; i++) {
          await sharp(Buffer.alloc(16 * 16 * 3, cls === 'a' ? 40 + i : 200 - i), { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(path.join(dir, 'data', cls, `${i}.png`));
        }
      }
      const flags = ['epochs', 'batch', 'lr', 'width', 'negatives', 'tau', 'lambda', 'threads', 'device', 'precision', 'size', 'seed', 'warmup', 'checkpoint-every', 'nproc', 'epoch-length'];
      const values = ['-1', '0', '1e309', 'NaN', 'abc', '', '1.5', '99999999999', 'cuda:7', '0x10', '2'];
      let seed = 4;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const counts: Record<string, number> = {};
      for (let i = 0; i < 24; i++) {
        const flag = flags[Math.floor(random() * flags.length)], value = values[Math.floor(random() * values.length)];
        const args = ['train', path.join(dir, 'data'), '--out', path.join(dir, `run${i}`), '--width', '0.125', '--batch', '4', '--negatives', '8', '--epochs', '1', '--epoch-length', '1', '--size', '16', `--${flag}=${value}`];
        const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
        expect({ flag, value, signal: r.signal, status: [0, 1, 2].includes(r.status!) }).toEqual({ flag, value, signal: null, status: true });
        if (r.status !== 0) {
          expect(r.stderr).not.toMatch(INTERNALS);
          expect(r.stderr).not.toMatch(/^\s+at /m); // a message, not a stack trace
        }
        counts[`exit ${r.status}`] = (counts[`exit ${r.status}`] ?? 0) + 1;
      }
      console.log(`fuzz CLI flags (seed 4): 24 cases, ${JSON.stringify(counts)}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
