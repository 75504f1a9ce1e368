import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { Tensor, isOutOfMemory } from '../lib';
import { torchvisionNotes } from '../lib/cli/export';
import { COMMANDS, failureMessage } from '../lib/cli/main';
import { MetricsLog } from '../lib/cli/metrics';
import { Progress, formatDuration } from '../lib/cli/progress';
import { fencedBlocks, tmpDir } from './helpers';

describe('formatDuration', () => {
  test('rounds once, then splits into units: never 60 seconds or 60 minutes', () => {
    expect(formatDuration(0)).toBe('0m0s');
    expect(formatDuration(59.6)).toBe('1m0s');
    expect(formatDuration(119.5)).toBe('2m0s');
    expect(formatDuration(3599.6)).toBe('1h0m');
    expect(formatDuration(3599.4)).toBe('59m59s');
    expect(formatDuration(3661)).toBe('1h1m');
    expect(formatDuration(7199.7)).toBe('2h0m');
  });

  test('a duration there is none of (an ETA before any step took time) prints --', () => {
    for (const s of [Infinity, -Infinity, NaN, -5]) expect(formatDuration(s)).toBe('--');
  });
});

describe('Progress.images', () => {
  test("a pass's rate and time run from its report of 0 done where it gives one (it began after its reporter was made), else from the reporter; its end is said once", () => {
    let now = 1_000_000;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    const written: string[] = [];
    const write = jest.spyOn(process.stderr, 'write').mockImplementation((text) => written.push(String(text)) > 0);
    try {
      const progress = new Progress(true);
      const late = progress.images('memory bank:');
      now += 100_000; // the model built and the ranks joined first
      late(0, 20);
      now += 2_000;
      late(20, 20);
      late(20, 20); // the end said again (a pass's last report, then its caller's): once
      const prompt = progress.images('features');
      now += 4_000;
      prompt(20, 20);
      expect(written).toEqual(['\r\x1b[Kmemory bank: 0/20 images', '\r\x1b[Kmemory bank: 20/20 images, 10 img/s, in 0m2s\n', '\r\x1b[Kfeatures 20/20 images, 5.0 img/s, in 0m4s\n']);
    } finally {
      clock.mockRestore();
      write.mockRestore();
    }
  });
});

describe('MetricsLog.truncate', () => {
  const batch = (step: number) => JSON.stringify({ type: 'batch', time: '2026-01-01T00:00:00.000Z', epoch: 0, step, loss: 1 });
  const header = 'time,epoch,step,loss,lossImage,lossJigsaw,lr,gradNorm,imagesPerSecond';
  const row = (step: number) => `2026-01-01T00:00:00.000Z,0,${step},1,1,1,0.1,1,100`;

  test('a last line cut by a killed append is dropped; the rest is kept up to the position', async () => {
    const dir = tmpDir('pirl-metrics-');
    const log = new MetricsLog(dir);
    fs.writeFileSync(log.jsonl, `${batch(1)}\n${batch(2)}\n${batch(3)}\n{"type":"batch","time":"2026`);
    // The CSV's cut row reads as numbers (step 2, then a cut loss): its missing newline is what tells.
    fs.writeFileSync(log.csv, `${header}\n${row(1)}\n${row(2)}\n2026-01-01T00:00:00.000Z,0,2,0.`);
    await log.truncate({ epoch: 0, step: 2 });
    expect(fs.readFileSync(log.jsonl, 'utf8')).toBe(`${batch(1)}\n${batch(2)}\n`);
    expect(fs.readFileSync(log.csv, 'utf8')).toBe(`${header}\n${row(1)}\n${row(2)}\n`);
  });

  test('an unparsable line before the last is an error naming the file and the line', async () => {
    const dir = tmpDir('pirl-metrics-');
    const log = new MetricsLog(dir);
    const text = `${batch(1)}\n\n{"type":"ba\n${batch(2)}\n`;
    fs.writeFileSync(log.jsonl, text);
    await expect(log.truncate({ epoch: 0, step: 2 })).rejects.toThrow(`${path.join(dir, 'metrics.jsonl')} line 3 is not JSON (`);
    expect(fs.readFileSync(log.jsonl, 'utf8')).toBe(text); // left as it was
  });
});

describe('memory that ran out', () => {
  // 100 TB: refused at once by the host's allocator (as CUDA's caching allocator refuses what a GPU lacks).
  const outOfMemory = (): Error => {
    try {
      Tensor.zeros([1e7, 1e7], { dtype: 'uint8' });
    } catch (err) {
      return err as Error;
    }
    throw new Error('a 100 TB tensor was made');
  };

  test('is an Error with code PIRL_OUT_OF_MEMORY and the allocator\'s own words (not its enforce line)', () => {
    const err = outOfMemory();
    expect(isOutOfMemory(err)).toBe(true);
    expect({ name: err.name, code: (err as { code?: string }).code }).toEqual({ name: 'Error', code: 'PIRL_OUT_OF_MEMORY' });
    expect(err.message).toMatch(/^DefaultCPUAllocator: can't allocate memory: you tried to allocate 100000000000000 bytes/);
    expect(isOutOfMemory(new Error('CUDA out of memory'))).toBe(false); // the code, not the words
  });

  test('the CLI names the flags that size the command\'s work; other errors are said as they are', () => {
    const err = outOfMemory();
    expect(failureMessage('train', err)).toBe(`pirl: ${err.message}\n(out of memory: a smaller --batch (the lr follows batch/256), --precision bf16, or the batch spread over more GPUs (--nproc N, one per GPU))`);
    expect(failureMessage('embed', err)).toMatch(/\n\(out of memory: a smaller --size, or --device cpu\)$/);
    expect(failureMessage('export', err)).toBe(`pirl: ${err.message}`);
    expect(failureMessage('train', new Error('no images'))).toBe('pirl: no images');
  });
});

describe("each verb's flags, as declared (COMMANDS), its usage and the README say them", () => {
  const flagsIn = (text: string): string[] => [...text.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]);
  const declared = (verb: string): Set<string> => new Set([...COMMANDS[verb].flags.values, ...COMMANDS[verb].flags.switches]);

  test("a verb's usage names every flag it takes, and none it does not", () => {
    for (const [verb, command] of Object.entries(COMMANDS)) {
      expect({ verb, flags: [...new Set(flagsIn(command.usage))].sort() }).toEqual({ verb, flags: [...declared(verb)].sort() });
    }
  });

  // The `--flags` after `pirl <verb>` in the README's sh lines and code spans that the verb does not take, as "LINE: verb --flag".
  function readmeMistakes(text: string): { mistakes: string[]; checked: number } {
    const pieces: Array<{ line: number; text: string }> = [];
    const lines = text.split('\n');
    for (const block of fencedBlocks(text)) {
      if (block.lang === 'sh') block.lines.forEach((l, j) => pieces.push({ line: block.open + 2 + j, text: l.replace(/#.*/, '') }));
      lines.fill('', block.open, block.close + 1);
    }
    const prose = lines.join('\n');
    for (const m of prose.matchAll(/`([^`]+)`/g)) pieces.push({ line: prose.slice(0, m.index).split('\n').length, text: m[1] });
    const mistakes: string[] = [];
    let checked = 0;
    for (const piece of pieces) {
      for (const m of piece.text.matchAll(/\bpirl (\w+)\b([^]*?)(?=\bpirl \w+\b|$)/g)) {
        if (!Object.hasOwn(COMMANDS, m[1])) continue;
        const known = declared(m[1]).add('help');
        for (const flag of flagsIn(m[2])) {
          checked++;
          if (!known.has(flag)) mistakes.push(`${piece.line}: ${m[1]} --${flag}`);
        }
      }
    }
    return { mistakes, checked };
  }

  test("the README's pirl command lines use only flags their verb takes", () => {
    const { mistakes, checked } = readmeMistakes(fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8'));
    expect(mistakes).toEqual([]);
    expect(checked).toBeGreaterThan(50);
    // A flag of another verb, or one that is gone, is caught at its line.
    const wrong = readmeMistakes('one\n`pirl eval model --epochs 3 --k 20`\n```sh\nnpx pirl train photos/ --batch-size 8  # --nonsense in a comment\n```\n');
    expect(wrong).toEqual({ mistakes: ['4: train --batch-size', '2: eval --epochs'], checked: 3 });
    // A block in a list item (indented) is a block: its backticks do not pair with the code spans after it.
    const listed = readmeMistakes('- item:\n  ```ts\n  const s = `${x}`; // `\n  ```\n- `pirl eval model --epochs 3`\n');
    expect(listed).toEqual({ mistakes: ['5: eval --epochs'], checked: 1 });
  });
});

describe('a signal quits a command (quit.ts), leaving no lock and no temporary file behind', () => {
  const dist = path.join(__dirname, '..', 'dist');
  // A process that holds a lock and is half-way through writing a file (a decode cache's build) when the signal comes.
  const holder = (dir: string, env: NodeJS.ProcessEnv, then: string) => {
    const script = `
      const fs = require('fs');
      const { takeLock } = require(${JSON.stringify(path.join(dist, 'lockFile.js'))});
      const { writeViaTemporary } = require(${JSON.stringify(path.join(dist, 'safetensors.js'))});
      require(${JSON.stringify(path.join(dist, 'cli', 'quit.js'))}).quitOnSignals();
      setInterval(() => undefined, 1000);
      takeLock(${JSON.stringify(path.join(dir, 'images.cache.lock'))}).then(() => writeViaTemporary(${JSON.stringify(path.join(dir, 'images.cache'))}, (tmp) => {
        fs.writeFileSync(tmp, 'half the images');
        console.log('writing');
        ${then}
        return new Promise(() => undefined);
      }));`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => void (stdout += d));
    child.stderr.on('data', (d) => void (stderr += d));
    const exited = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
    const writing = (async () => {
      for (let waited = 0; !stdout.includes('writing') && waited < 30_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
      expect(fs.readdirSync(dir).sort()).toEqual([expect.stringMatching(/^\.images\.cache\.\d+\.task\d+s\d+-\d+\.tmp$/), 'images.cache.lock']);
    })();
    return { child, exited, writing };
  };

  test.each([['SIGINT', 'interrupted'], ['SIGTERM', 'terminated (SIGTERM)'], ['SIGHUP', 'its terminal closed (SIGHUP)']] as const)('%s: said, lock and temporary removed, killed by the signal', async (signal, said) => {
    const dir = tmpDir('pirl-quit-');
    const { child, exited, writing } = holder(dir, {}, '');
    await writing;
    child.kill(signal);
    const end = await exited;
    expect({ code: end.code, signal: end.signal }).toEqual({ code: null, signal });
    expect(end.stderr).toBe(`\npirl: ${said}\n`);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  test('a rank other than 0 quits without a word (rank 0 says it); an exit of its own (process.exit) removes them too', async () => {
    const dir = tmpDir('pirl-quit-');
    const rank1 = holder(dir, { RANK: '1' }, '');
    await rank1.writing;
    rank1.child.kill('SIGINT');
    expect(await rank1.exited).toEqual({ code: null, signal: 'SIGINT', stderr: '' });
    expect(fs.readdirSync(dir)).toEqual([]);
    const exiting = holder(dir, {}, 'setTimeout(() => process.exit(3), 100);');
    await exiting.writing;
    expect(await exiting.exited).toEqual({ code: 3, signal: null, stderr: '' });
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

test("pirl export's notes: torchvision's recipe for a small stem at width 1 only (at another width bn1 does not fit it)", () => {
  expect(torchvisionNotes({ arch: 'resnet50', stem: 'imagenet', width: 1 })).toEqual([]);
  expect(torchvisionNotes({ arch: 'resnet18', stem: 'small', width: 1 })).toEqual([
    'the small stem: torchvision.models.resnet18() takes it after m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False) and m.maxpool = nn.Identity()']);
  expect(torchvisionNotes({ arch: 'resnet18', stem: 'small', width: 0.5 })).toEqual([
    "width 0.5: torchvision's resnet18 has no such channel counts; its weights load only into a ResNet built with each stage's channels × 0.5, and the small stem (a 3×3 stride-1 conv1, no max-pool)"]);
  expect(torchvisionNotes({ arch: 'resnet50', stem: 'imagenet', width: 2 })).toEqual([
    "width 2: torchvision's resnet50 has no such channel counts; its weights load only into a ResNet built with each stage's channels × 2"]);
});
