import { execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

import { PirlModel, Tensor, embedImages, loadImageFeatures, readSafetensors, saveImageFeatures, writeSafetensors } from '../lib';
import { curvesSvg, writeCurves } from '../lib/cli/plot';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const run = (args: string[]) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('pirl train / eval / embed / export', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-'));
  const data = path.join(dir, 'data');
  const out = path.join(dir, 'run');
  const small = ['--width', '0.125', '--batch', '8', '--negatives', '16', '--epoch-length', '2', '--size', '24'];

  beforeAll(async () => {
    for (const [c, cls] of ['light', 'dark'].entries()) {
      fs.mkdirSync(path.join(data, cls), { recursive: true });
      for (let i = 0; i < 10; i++) {
        const px = Buffer.alloc(24 * 24 * 3, c === 0 ? 200 - i : 40 + i);
        await sharp(px, { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(data, cls, `${i}.png`));
      }
    }
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('train writes the model, a checkpoint, JSON-lines and CSV metrics and the curves, then resumes', async () => {
    const first = spawnSync(process.execPath, [cli, 'train', data, '--out', out, '--epochs', '2', '--knn-every', '1', '--bank-init', 'features', ...small], { encoding: 'utf8' });
    expect(first.status).toBe(0);
    expect(first.stderr).toContain('memory bank from features: 20/20 images'); // the work before the first step, shown
    expect(first.stderr).toContain('epoch 1/2 step 1/4: under way'); // said before the first step's time
    // The monitor's k=200 on 8 images a class votes mostly across classes: said, as pirl eval says it of --k.
    expect(first.stderr).toContain("pirl: note: --knn-every votes with k=200 (the protocol's), more than the 8 images of the largest class that votes: " +
      "each vote counts other classes' images too, so its scores run below a smaller k's (pirl eval --k 8 scores a checkpoint so)\n");
    const summary = first.stdout;
    expect(summary).toMatch(/trained 4 step\(s\) in .*, to step 4 of 4; last loss \d+\.\d{4}; kNN top-1 \d+\.\d\d%/);
    const { metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(metadata['pirl-checkpoint']).config.bankInit).toBe('features');
    for (const f of ['model.safetensors', 'checkpoint.safetensors', 'metrics.jsonl', 'curves.png']) expect(fs.existsSync(path.join(out, f))).toBe(true);
    const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'batch')).toHaveLength(4);
    const epochs = lines.filter((l) => l.type === 'epoch');
    expect(epochs).toHaveLength(2);
    // Solid light and dark images: any trunk's features tell the two apart.
    expect(epochs[1].knn).toBeGreaterThan(0.5);
    expect(epochs[1].knn).toBeLessThanOrEqual(1);
    expect((await sharp(path.join(out, 'curves.png')).metadata()).width).toBe(800);
    const csv = fs.readFileSync(path.join(out, 'metrics.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('time,epoch,step,loss,lossImage,lossJigsaw,lr,gradNorm,imagesPerSecond');
    expect(csv.slice(1).map((r) => Number(r.split(',')[2]))).toEqual([1, 2, 3, 4]);
    // A run killed after its checkpoint logged steps the checkpoint does not hold, and left a temporary file.
    fs.appendFileSync(path.join(out, 'metrics.jsonl'), `${JSON.stringify({ type: 'batch', step: 5, epoch: 2, loss: 1 })}\n`);
    fs.appendFileSync(path.join(out, 'metrics.csv'), 'x,2,5,1,1,1,1,1,1\n');
    const stale = ['.checkpoint.safetensors.2147483646.tmp', '.model.safetensors.2147483646.task9s9-1.tmp', '.metrics.jsonl.2147483646.0-2.tmp'].map((f) => path.join(out, f));
    for (const f of stale) fs.writeFileSync(f, 'half a file');
    // A stop in the last epoch's last step (or its kNN pass) left it unscored, the checkpoint at its end: the resume scores it.
    const jsonl = path.join(out, 'metrics.jsonl');
    fs.writeFileSync(jsonl, fs.readFileSync(jsonl, 'utf8').split('\n').map((t) => (t.includes('"type":"epoch"') && JSON.parse(t).epoch === 1 ? JSON.stringify({ ...JSON.parse(t), knn: undefined }) : t)).join('\n'));
    // --resume continues from the checkpoint: this run had finished, so it adds no step, and drops what came after it.
    // The command that started the run, with --resume, continues it (its flags restate the run's settings).
    fs.rmSync(path.join(out, 'curves.png'));
    const complete = run(['train', data, '--out', out, '--epochs', '2', '--knn-every', '1', '--bank-init', 'features', ...small, '--resume']);
    expect(complete).toContain(`the run in ${out} was already complete (2 epochs): nothing to train`);
    // Its model, the metrics it scored and the curves: not the checkpoint, which took no step.
    expect(complete).toContain(`wrote ${path.join(out, 'model.safetensors')}, ${jsonl}, ${path.join(out, 'curves.png')}\n`);
    expect(fs.existsSync(path.join(out, 'curves.png'))).toBe(true); // drawn from the metrics the run logged
    const after = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(after.filter((l) => l.type === 'batch').map((l) => l.step)).toEqual([1, 2, 3, 4]);
    expect(after.filter((l) => l.type === 'epoch').map((l) => l.knn)).toEqual(epochs.map((l) => l.knn)); // on the same weights, the same score
    expect(fs.readFileSync(path.join(out, 'metrics.csv'), 'utf8').trim().split('\n')).toEqual(csv);
    expect(stale.filter((f) => fs.existsSync(f))).toEqual([]);
    // --epochs with --resume gives a finished run more epochs (its lr schedule that of the longer run, said), not fewer than it has done.
    // (--deterministic: the GPU's switch, taken on the CPU too, whose kernels are deterministic anyway.)
    const extended = spawnSync(process.execPath, [cli, 'train', data, '--out', out, '--epochs', '3', ...small, '--resume', '--deterministic'], { encoding: 'utf8' });
    expect(extended.status).toBe(0);
    expect(extended.stderr).toContain("pirl: the run's length changes from 2 to 3 epochs: from here on its lr follows the schedule of a 3-epoch run");
    // The run scored kNN every epoch (--knn-every 1), which this resume leaves out: said, not silently unscored.
    expect(extended.stderr).toContain("pirl: warning: the run scored kNN at its epochs' ends before (--knn-every 1); without --knn-every this resume scores none");
    expect(extended.stdout).toMatch(/trained 2 step\(s\) in .*, to step 6 of 6/);
    const logged = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(logged.filter((l) => l.type === 'batch').map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    const shortened = spawnSync(process.execPath, [cli, 'train', data, '--out', out, '--epochs', '2', ...small, '--resume'], { encoding: 'utf8' });
    expect(shortened.status).toBe(2);
    expect(shortened.stderr).toContain("pirl: --epochs must be at least 3, the epochs the run has begun (it has done 3), got '2'");
    const notANumber = spawnSync(process.execPath, [cli, 'train', data, '--out', out, '--epochs', 'many', ...small, '--resume'], { encoding: 'utf8' });
    expect([notANumber.status, notANumber.stderr]).toEqual([2, expect.stringContaining("pirl: --epochs must be an integer in [1, 1000000], got 'many'")]);
    // The run stored its images at 24 px: a resume at another --size is refused; without --size it takes the run's own.
    const unsized = small.filter((f, i) => f !== '--size' && small[i - 1] !== '--size');
    const resized = spawnSync(process.execPath, [cli, 'train', data, '--out', out, ...unsized, '--size', '32', '--resume'], { encoding: 'utf8' });
    expect([resized.status, resized.stderr]).toEqual([2, expect.stringContaining('pirl: --resume continues the run its checkpoint describes; --size cannot change it (the run stored its images at 24 px: drop --size)')]);
    const ownSize = spawnSync(process.execPath, [cli, 'train', data, '--out', out, '--epochs', '4', ...unsized, '--resume'], { encoding: 'utf8' });
    expect([ownSize.status, ownSize.stdout]).toEqual([0, expect.stringMatching(/trained 2 step\(s\) in .*, to step 8 of 8/)]);
    // A new run does not silently overwrite one: --force replaces it.
    const again = spawnSync(process.execPath, [cli, 'train', data, '--out', out, ...small], { encoding: 'utf8' });
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/already holds a run \(checkpoint\.safetensors, model\.safetensors, metrics\.jsonl, metrics\.csv\): --resume continues it, --force starts a new one/);
    run(['train', data, '--out', out, '--force', '--epochs', '1', ...small]);
    expect(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').filter((l) => JSON.parse(l).type === 'batch')).toHaveLength(2);
    // --force replaces the whole run before training: one stopped before its first checkpoint leaves nothing of the old run to resume.
    const replacedRun = path.join(dir, 'replaced');
    fs.cpSync(out, replacedRun, { recursive: true });
    const replaced = spawnSync(process.execPath, ['-e', `
      const fs = require('fs');
      const child = require('child_process').spawn(process.execPath, ${JSON.stringify([cli, 'train', data, '--out', replacedRun, '--force', '--epochs', '50', ...small])}, { stdio: 'ignore' });
      const gone = () => ${JSON.stringify(['checkpoint.safetensors', 'model.safetensors', 'curves.png'].map((f) => path.join(replacedRun, f)))}.every((f) => !fs.existsSync(f));
      const poll = setInterval(() => { if (gone()) { child.kill('SIGKILL'); clearInterval(poll); } }, 5);
      child.on('exit', () => clearInterval(poll));`], { encoding: 'utf8', timeout: 60_000 });
    expect(replaced.status).toBe(0);
    expect(['checkpoint.safetensors', 'model.safetensors', 'curves.png'].filter((f) => fs.existsSync(path.join(replacedRun, f)))).toEqual([]);
  });

  test('--auto-resume: one command starts a run, then continues it (a launcher restarting a job)', () => {
    const auto = path.join(dir, 'auto');
    const config = path.join(dir, 'auto.json');
    fs.writeFileSync(config, JSON.stringify({ loss: { tau: 0.1 } }));
    const command = ['train', data, '--out', auto, '--auto-resume', '--config', config, '--epochs', '2', ...small];
    fs.mkdirSync(auto);
    fs.writeFileSync(path.join(auto, 'metrics.jsonl'), ''); // a start killed before its first checkpoint
    expect(run([...command, '--epoch-length', '1'])).toMatch(/^trained 2 step\(s\) in .*, to step 2 of 2/m);
    expect(run([...command, '--epoch-length', '1'])).toMatch(/^trained 0 step\(s\) in .*, to step 2 of 2/m);
    fs.writeFileSync(config, JSON.stringify({ loss: { tau: 0.2 } })); // a file that now says otherwise cannot change the run
    const changed = spawnSync(process.execPath, [cli, ...command, '--epoch-length', '1'], { encoding: 'utf8' });
    expect(changed.status).toBe(2);
    expect(changed.stderr).toContain('--auto-resume continues the run its checkpoint describes; --config (its loss.tau) cannot change it');
    const both = spawnSync(process.execPath, [cli, ...command, '--force'], { encoding: 'utf8' });
    expect(both.status).toBe(2);
    expect(both.stderr).toContain('--auto-resume decides between --resume and a new run itself: drop --force');
    // A model without a checkpoint (a finished run's, or one put there) is no start to redo: only --force replaces it.
    const modelOnly = path.join(dir, 'model-only');
    fs.mkdirSync(modelOnly);
    fs.copyFileSync(path.join(auto, 'model.safetensors'), path.join(modelOnly, 'model.safetensors'));
    const kept = spawnSync(process.execPath, [cli, 'train', data, '--out', modelOnly, '--auto-resume', ...small], { encoding: 'utf8' });
    expect([kept.status, kept.stderr.split('\n')[0]]).toEqual([2, `pirl: ${modelOnly} already holds a run (model.safetensors): it has no checkpoint to resume from; a command with --force in place of --auto-resume starts a new one in its place`]);
    expect(fs.readFileSync(path.join(modelOnly, 'model.safetensors'))).toEqual(fs.readFileSync(path.join(auto, 'model.safetensors')));
  });

  test('a resume reads the folder as the run did: --recursive and --layout left out are the run\'s; said where given otherwise', () => {
    const nested = path.join(dir, 'nested');
    fs.cpSync(data, nested, { recursive: true });
    fs.mkdirSync(path.join(nested, 'light', '2019'));
    fs.copyFileSync(path.join(data, 'light', '0.png'), path.join(nested, 'light', '2019', 'old.png'));
    const runDir = path.join(dir, 'nested-run');
    expect(run(['train', nested, '--out', runDir, '--recursive', '--epochs', '2', ...small, '--epoch-length', '1'])).toMatch(/^trained 2 step\(s\) in /m);
    // A resume typed by hand, without --recursive: it read 20 images of the 21 and was refused as other data.
    expect(run(['train', nested, '--out', runDir, '--resume', ...small, '--epoch-length', '1'])).toMatch(/^trained 0 step\(s\) in .*, to step 2 of 2/m);
    const flat = spawnSync(process.execPath, [cli, 'train', nested, '--out', runDir, '--resume', '--layout', 'flat', ...small, '--epoch-length', '1'], { encoding: 'utf8' });
    expect([flat.status, flat.stderr]).toEqual([1, expect.stringContaining("its labels differ, though it has as many samples (each bank row would belong to another image): resume over the run's data, " +
      `or start a new run from its weights (options.init: PirlModel.load(${path.join(runDir, 'checkpoint.safetensors')}); pirl train --init ${path.join(runDir, 'checkpoint.safetensors')}, in another --out). ` +
      "The run read its folder with layout 'classes' (the data set given: 'flat'): open it as the run did (ImageFolder.open's options.layout and options.recursive; pirl train --layout, --recursive)")]);
  });

  test("--init starts a new run from a run's weights (its folder grown since, which --resume refuses), of their arch, stem and width, or from a trunk's", async () => {
    const grown = path.join(dir, 'grown');
    fs.cpSync(data, grown, { recursive: true });
    fs.copyFileSync(path.join(data, 'light', '0.png'), path.join(grown, 'light', 'new.png'));
    const checkpoint = path.join(out, 'checkpoint.safetensors');
    const resumed = spawnSync(process.execPath, [cli, 'train', grown, '--out', out, ...small, '--resume'], { encoding: 'utf8' });
    expect([resumed.status, resumed.stderr]).toEqual([1, expect.stringContaining(`or start a new run from its weights (options.init: PirlModel.load(${checkpoint}); pirl train --init ${checkpoint}, in another --out)`)]);
    const from = path.join(dir, 'from-init');
    const rest = ['--batch', '8', '--negatives', '16', '--epoch-length', '2', '--size', '24', '--epochs', '1']; // no --width: the weights'
    const started = spawnSync(process.execPath, [cli, 'train', grown, '--out', from, '--init', checkpoint, ...rest], { encoding: 'utf8' });
    expect([started.status, started.stdout, started.stderr]).toEqual([0, expect.stringMatching(/^trained 2 step\(s\) in /m), expect.stringContaining(`pirl: the run starts from the weights of ${checkpoint}\n`)]);
    const { metadata } = await readSafetensors(path.join(from, 'checkpoint.safetensors'));
    const initial = (await PirlModel.load(checkpoint)).options;
    expect(JSON.parse(metadata['pirl-checkpoint']).config.model).toEqual({ ...initial, seed: expect.any(Number) });
    // Restarted by a launcher (--auto-resume), the run resumes: the model not restated is its weights', not the recipe's
    // (whose imagenet stem the small preset's patches do not fit).
    const paper = ['train', grown, '--out', path.join(dir, 'from-init-paper'), '--init', checkpoint, '--recipe', 'paper', '--preset', 'small', ...rest, '--auto-resume'];
    expect(run(paper)).toMatch(/^trained 2 step\(s\) in /m);
    expect(run(paper)).toMatch(/^trained 0 step\(s\) in .*, to step 2 of 2/m);
    // A trunk (pirl export's, its arch, stem and width said; torchvision's, which says none: the flags'): the run's trunk
    // starts as it (--lr 0 keeps it), its heads new.
    const trunk = path.join(dir, 'trunk.safetensors'), bare = path.join(dir, 'bare-trunk.safetensors');
    await (await PirlModel.load(checkpoint)).exportTrunk(trunk);
    const { tensors } = await readSafetensors(trunk);
    await writeSafetensors(bare, tensors);
    const fromTrunk = path.join(dir, 'from-trunk');
    expect(run(['train', grown, '--out', fromTrunk, '--init', trunk, ...rest, '--lr', '0'])).toMatch(/^trained 2 step\(s\) in /m);
    const trained = await PirlModel.load(path.join(fromTrunk, 'model.safetensors'));
    expect([(await trained.stateDict('trunk')).get('layer4.1.conv2.weight')!.data()]).toEqual([tensors.get('layer4.1.conv2.weight')!.data()]);
    expect(trained.options).toEqual({ ...initial, seed: expect.any(Number) });
    const unsaid = spawnSync(process.execPath, [cli, 'train', grown, '--out', path.join(dir, 'from-bare'), '--init', bare, ...rest], { encoding: 'utf8' });
    expect([unsaid.status, unsaid.stderr]).toEqual([1, expect.stringMatching(/^pirl: --init: .*bare-trunk\.safetensors: .*\(this model: resnet18, stem small, width 1\): --arch, --stem and --width say which model its weights fit\n/)]);
    expect(run(['train', grown, '--out', path.join(dir, 'from-bare'), '--init', bare, ...rest, '--width', '0.125'])).toMatch(/^trained 2 step\(s\) in /m);
    // A flag that differs from what a trunk of pirl export's says: refused as against a model's weights.
    const wider = spawnSync(process.execPath, [cli, 'train', grown, '--out', path.join(dir, 'from-trunk-2'), '--init', trunk, ...rest, '--width', '0.25'], { encoding: 'utf8' });
    expect([wider.status, wider.stderr.split('\n')[0]]).toEqual([2, `pirl: --width must be 0.125, the width of --init ${trunk} (the run starts from its weights), got '0.25'`]);
    const other = spawnSync(process.execPath, [cli, 'train', grown, '--out', path.join(dir, 'from-init-2'), '--init', checkpoint, ...rest, '--width', '0.25'], { encoding: 'utf8' });
    expect([other.status, other.stderr.split('\n')[0]]).toEqual([2, `pirl: --width must be 0.125, the width of --init ${checkpoint} (the run starts from its weights), got '0.25'`]);
    const both = spawnSync(process.execPath, [cli, 'train', grown, '--out', from, '--init', checkpoint, '--resume'], { encoding: 'utf8' });
    expect([both.status, both.stderr.split('\n')[0]]).toEqual([2, "pirl: --init starts a new run from a model's weights and --resume continues the run in --out: give one of them"]);
    const none = spawnSync(process.execPath, [cli, 'train', grown, '--out', path.join(dir, 'from-init-3'), '--init', path.join(dir, 'nothing.safetensors'), ...rest], { encoding: 'utf8' });
    expect([none.status, none.stderr.split('\n')[0]]).toEqual([1, expect.stringMatching(/^pirl: --init: .*nothing\.safetensors.*no such file/i)]);
  });

  test('--cache keeps the decoded folder: built once with progress, then read', () => {
    const cache = path.join(dir, 'caches', 'images.bin');
    const command = ['train', data, '--out', path.join(dir, 'cached'), '--force', '--cache', cache, '--epochs', '1', ...small];
    const first = spawnSync(process.execPath, [cli, ...command], { encoding: 'utf8' });
    expect(first.status).toBe(0);
    expect(first.stderr).toContain(`decode cache ${cache}: 20/20 images`);
    const second = spawnSync(process.execPath, [cli, ...command], { encoding: 'utf8' });
    expect(second.status).toBe(0);
    expect(second.stderr).not.toContain('decode cache'); // it matched: nothing decoded
    const folder = spawnSync(process.execPath, [cli, ...command.slice(0, 5), '--cache', dir], { encoding: 'utf8' });
    expect(folder.status).toBe(2);
    expect(folder.stderr).toContain(`--cache must be a file, not a folder, got '${dir}'`);
    const mnist = spawnSync(process.execPath, [cli, 'train', 'fashion-mnist', '--cache', cache], { encoding: 'utf8' });
    expect(mnist.status).toBe(2);
    expect(mnist.stderr).toContain("--cache keeps a folder's decoded images");
  });

  test('eval, embed and export use the saved model', async () => {
    const model = path.join(out, 'model.safetensors');
    // Without --test, a held-out fifth is scored against the rest (never the data against itself), and it says so.
    const held = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--size', '16'], { encoding: 'utf8' });
    expect(held.status).toBe(0);
    expect(held.stderr).toMatch(/no --test data: a held-out fifth of .* \(every 5th image, 4\) is scored against the other 16/);
    const evaluation = JSON.parse(held.stdout.trim());
    expect(evaluation.knnTop1).toBeGreaterThan(0.5);
    expect(evaluation.knnTop1).toBeLessThanOrEqual(1);
    expect([evaluation.train, evaluation.test]).toEqual([16, 4]);
    expect(held.stderr).toContain("pirl: --k 200 is more than the 16 images that voted (--data's four fifths): each test image was voted on by all 16");
    // Through a link to it, too (compared by real paths).
    const linked = path.join(dir, 'data-link');
    fs.symlinkSync(data, linked);
    const itself = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--test', linked, '--size', '16'], { encoding: 'utf8' });
    expect(JSON.parse(itself.stdout.trim()).test).toBe(20);
    expect(itself.stderr).toContain('pirl: warning: --test is --data: every test image votes for itself');
    expect(itself.stderr).toContain('pirl: --k 200 is more than the 20 images that voted (--data): each test image was voted on by all 20');
    // All of them voting is said as that alone; more than any class holds (8 of each of the 16), as a note.
    const classWide = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--size', '16', '--k', '16'], { encoding: 'utf8' }).stderr;
    expect(classWide).not.toContain('is more than the 16 images that voted');
    expect(classWide).toContain("pirl: note: --k 16 is more than the 8 images of the largest class that voted: each vote counts other classes' images too; a --k of at most 8 suits data this small\n");
    expect(spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--size', '16', '--k', '8'], { encoding: 'utf8' }).stderr).not.toContain('--k 8');
    // Without --size, at the size the model was trained on (the small preset's 32-px views), which its file records.
    expect(JSON.parse(run(['eval', model, '--data', data]).trim()).size).toBe(32);
    // Test classes are matched by name: one the model's data lacks is refused, naming --test.
    const other = path.join(dir, 'other');
    fs.cpSync(path.join(data, 'dark'), path.join(other, 'coat'), { recursive: true });
    const unknown = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--test', other, '--size', '16'], { encoding: 'utf8' });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain(`--test ${other} must be a data set of --data ${data}'s classes (dark, light), got ["coat"]`);
    const nowhere = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--test', path.join(dir, 'nowhere'), '--size', '16'], { encoding: 'utf8' });
    expect([nowhere.status, nowhere.stderr]).toEqual([1, `pirl: --test ${path.join(dir, 'nowhere')}: no such folder\n`]);
    // An unreadable image is left out of the passes, and counted apart: train and test are the images scored.
    const broken = path.join(dir, 'broken');
    fs.cpSync(data, broken, { recursive: true });
    fs.writeFileSync(path.join(broken, 'dark', 'zz.png'), 'not an image');
    const brokenRun = spawnSync(process.execPath, [cli, 'eval', model, '--data', broken, '--size', '16', '--linear-probe'], { encoding: 'utf8' });
    const withBroken = JSON.parse(brokenRun.stdout.trim());
    // The split is said before the passes find the unreadable image: the counts scored are said again after, as the JSON's.
    expect(brokenRun.stderr).toContain(`pirl: 1 unreadable image(s) left out: ${withBroken.test} test image(s) scored against ${withBroken.train}\n`);
    // --k is weighed against the images that voted, the unreadable one left out.
    expect(brokenRun.stderr).toContain(`pirl: --k 200 is more than the ${withBroken.train} images that voted (--data's four fifths): each test image was voted on by all ${withBroken.train}\n`);
    expect(withBroken.linearProbeTop1).toBeGreaterThan(0.5);
    expect(withBroken.linearProbeTop1).toBeLessThanOrEqual(1);
    expect([withBroken.train + withBroken.test, withBroken.unreadable]).toEqual([20, 1]); // of 21
    const features = path.join(dir, 'features.safetensors');
    run(['embed', model, data, '--out', features, '--size', '16']);
    const { tensors, metadata } = await readSafetensors(features);
    expect(tensors.get('features')!.shape[0]).toBe(20);
    expect(JSON.parse(metadata.files)).toContain(path.join('dark', '0.png'));
    // A labeled folder's rows carry their classes: each row's label names its file's folder.
    const classes = JSON.parse(metadata.classes) as string[];
    expect(classes).toEqual(['dark', 'light']);
    expect([...tensors.get('labels')!.data()].map((l) => classes[Number(l)])).toEqual(JSON.parse(metadata.files).map((f: string) => f.split(path.sep)[0]));
    // --cache: the folder decoded once at embed's side, read back by the next pass (eval's too): the same features.
    const embedCache = path.join(dir, 'embed.cache');
    const cachedFeatures = path.join(dir, 'cached.safetensors');
    for (let pass = 0; pass < 2; pass++) {
      run(['embed', model, data, '--out', cachedFeatures, '--size', '16', '--cache', embedCache]);
      expect([...(await readSafetensors(cachedFeatures)).tensors.get('features')!.data()]).toEqual([...tensors.get('features')!.data()]);
    }
    expect(JSON.parse(run(['eval', model, '--data', data, '--size', '16', '--cache', embedCache]).trim())).toEqual(evaluation);
    // The broken folder through a cache: the unreadable image out of the data set, still counted by eval and embed.
    const brokenCache = path.join(dir, 'broken.cache');
    const viaCache = JSON.parse(run(['eval', model, '--data', broken, '--size', '16', '--cache', brokenCache]).trim());
    expect([viaCache.train + viaCache.test, viaCache.unreadable]).toEqual([20, 1]);
    expect(run(['embed', model, broken, '--out', path.join(dir, 'broken.safetensors'), '--size', '16', '--cache', brokenCache])).toContain('features of 20 images (at 16 px; 1 unreadable left out)');
    const otherSide = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--size', '8', '--cache', embedCache], { encoding: 'utf8' });
    expect(otherSide.status).toBe(1);
    expect(otherSide.stderr).toContain(`${embedCache} caches images at 16 px; this folder is read at 8 px: give another cache file`);
    // search: each query embedded as the file's images were; an image of the catalogue finds itself first.
    const query = path.join(data, 'dark', '3.png');
    const unreadable = path.join(dir, 'unreadable.png');
    fs.writeFileSync(unreadable, 'not an image');
    const queries = [query, path.join(data, 'light'), unreadable];
    const searched = spawnSync(process.execPath, [cli, 'search', model, features, ...queries, '--k', '3'], { encoding: 'utf8' });
    expect(searched.stderr).toMatch(/query images 12\/12 images, [\d.]+ img\/s, in \d+m\d+s\n/); // progress, as embed shows it
    const found = searched.stdout.trim().split('\n').map((l) => JSON.parse(l));
    // One line per query image, in the order given: the file, the folder's 10 images, the unreadable file.
    expect(found.map((l) => path.dirname(l.query))).toEqual([path.dirname(query), ...Array(10).fill(path.join(data, 'light')), dir]);
    expect(found[0].query).toBe(query);
    expect(found[0].neighbours).toHaveLength(3);
    expect(found[0].neighbours[0].file).toBe(query);
    expect(found[0].neighbours[0].similarity).toBeCloseTo(1, 5);
    for (const line of found.slice(1, 11)) expect(line.neighbours[0].file).toBe(line.query);
    expect(found[11]).toEqual({ query: unreadable, error: 'not an image: text starting "not an image"' });
    // Queries are answered a feature batch at a time (8 images at 256 px, model.embedBatchSize): 21 lines over three
    // batches, each in its place (that they are printed batch by batch is not timed here).
    const large = path.join(dir, 'features-256.safetensors');
    run(['embed', model, data, '--out', large, '--size', '256']);
    const batched = run(['search', model, large, path.join(data, 'light'), query, path.join(data, 'dark'), '--k', '1']).trim().split('\n').map((l) => JSON.parse(l));
    expect(batched.map((l) => path.relative(data, l.query))).toEqual([...Array.from({ length: 10 }, (_, i) => path.join('light', `${i}.png`)), path.join('dark', '3.png'),
      ...Array.from({ length: 10 }, (_, i) => path.join('dark', `${i}.png`))]);
    for (const line of batched) expect(line.neighbours[0].file).toBe(line.query);
    // More neighbours asked for than the file holds: all of them, said.
    const all = spawnSync(process.execPath, [cli, 'search', model, features, query, '--k', '500'], { encoding: 'utf8' });
    const rows = JSON.parse(all.stdout).neighbours.length;
    expect(all.stderr).toContain(`pirl: --k 500 is more than the ${rows} images of ${features}: each query lists all ${rows}`);
    // A query folder's lines come in its order, an unreadable image's in its place.
    const mixed = path.join(dir, 'mixed-query');
    fs.mkdirSync(mixed);
    fs.copyFileSync(path.join(data, 'dark', '1.png'), path.join(mixed, 'a.png'));
    fs.writeFileSync(path.join(mixed, 'b.png'), 'not an image');
    fs.copyFileSync(path.join(data, 'dark', '2.png'), path.join(mixed, 'c.png'));
    // A link to nothing is a line of its own too (it ended the search).
    fs.symlinkSync(path.join(dir, 'gone.png'), path.join(mixed, 'b2.png'));
    const inOrder = run(['search', model, features, mixed]).trim().split('\n').map((l) => JSON.parse(l));
    expect(inOrder.map((l) => [path.basename(l.query), l.error ?? true])).toEqual([['a.png', true], ['b.png', expect.any(String)], ['b2.png', 'no such file'], ['c.png', true]]);
    fs.rmSync(path.join(mixed, 'b2.png'));
    // --max-pixels: an image of more pixels (24² = 576 here) is left out undecoded, its line saying why.
    fs.writeFileSync(path.join(mixed, 'notes.txt'), 'no image');
    const limitedRun = spawnSync(process.execPath, [cli, 'search', model, features, mixed, '--max-pixels', '575'], { encoding: 'utf8' });
    const limited = limitedRun.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(limited[0].error).toBe('a PNG image too large to decode (24×24): more than the limit of 575 pixels (maxPixels, --max-pixels)');
    // A query folder is listed, not probed: none of its images decodes, and each has its error line; what its layout
    // leaves out is said; with no query answered, the exit status says so.
    expect(limited.map((l) => [path.basename(l.query), l.error !== undefined])).toEqual([['a.png', true], ['b.png', true], ['c.png', true]]);
    expect(limitedRun.stderr).toContain(`pirl: ${mixed}: 1 file(s) without an image extension are left out (notes.txt;`);
    expect([limitedRun.status, limitedRun.stderr]).toEqual([1, expect.stringContaining('pirl: no query image could be embedded (see their error lines)\n')]);
    expect(run(['search', model, features, query, '--max-pixels', '576'])).toContain('"neighbours"');
    const modelCopy0 = path.join(dir, 'other-model.safetensors');
    fs.copyFileSync(model, modelCopy0);
    run(['search', modelCopy0, features, query]); // a copy of the model: the same bytes
    // A file of the wrong kind, or none, exits 1 (as a missing model does); a mistake in the command line's form, 2.
    const searchRefused = (args: string[], message: string, status = 1) => {
      const r = spawnSync(process.execPath, [cli, 'search', ...args], { encoding: 'utf8' });
      expect({ args, status: r.status }).toEqual({ args, status });
      expect(r.stderr).toContain(message);
    };
    // A features file altered by hand is named with what is wrong in it.
    const altered = path.join(dir, 'altered.safetensors');
    const original = await readSafetensors(features);
    const asIntegers = Tensor.from(Int32Array.from(original.tensors.get('features')!.data() as Float32Array), original.tensors.get('features')!.shape);
    for (const [tensor, metadata, message] of [
      [asIntegers, original.metadata, `pirl: ${altered}: its 'features' must be float32 or float64 rows, got int32`],
      [original.tensors.get('features')!, { ...original.metadata, size: 'abc' }, `pirl: ${altered}: metadata "size" must be an integer in [1, 4096], got "abc"`],
      // A side the model's stem cannot take (a file of another model with a smaller stem) is the model's to refuse.
      [original.tensors.get('features')!, { ...original.metadata, size: '3' }, `pirl: ${altered}: its side, 3 px, is below the 5 px that ${model}'s stem 'small' takes: embed the images again with this model`],
      // A name that climbs out of the folder would be printed as a neighbour (a path a service might serve).
      [original.tensors.get('features')!, { ...original.metadata, files: JSON.stringify(JSON.parse(original.metadata.files).map((f: string, i: number) => (i === 1 ? '../../etc/passwd' : f))) },
        `pirl: ${altered}: metadata "files"[1] ("../../etc/passwd") names a file outside its folder ${data}: embed the images again`],
      // Its side sets the queries' (4096 px took seconds and gigabytes per image): far from the model's, said.
      [original.tensors.get('features')!, { ...original.metadata, size: '8' }, `pirl: warning: ${altered}'s side, 8 px (its queries are embedded at it), is far from the 32 px this model was trained at`],
    ] as const) {
      await writeSafetensors(altered, [...original.tensors].map(([name, t]) => [name, name === 'features' ? tensor : t] as [string, Tensor]), metadata);
      expect(spawnSync(process.execPath, [cli, 'search', model, altered, query], { encoding: 'utf8' }).stderr).toContain(message);
    }
    // A query folder without images stops the run before any line is printed.
    const emptyQuery = path.join(dir, 'empty-query');
    fs.mkdirSync(emptyQuery);
    const stopped = spawnSync(process.execPath, [cli, 'search', model, features, query, emptyQuery], { encoding: 'utf8' });
    expect([stopped.status, stopped.stdout]).toEqual([1, '']);
    expect(stopped.stderr).toContain(`pirl: query ${emptyQuery}: no images`);
    // A features file of an older pirl embed (no side, no weights digest): searched at the model's side, said.
    const older = path.join(dir, 'older.safetensors');
    const current = await readSafetensors(features);
    await writeSafetensors(older, current.tensors, { files: current.metadata.files, layer: current.metadata.layer });
    const fromOlder = spawnSync(process.execPath, [cli, 'search', model, older, query], { encoding: 'utf8' });
    expect(fromOlder.status).toBe(0);
    expect(fromOlder.stderr).toContain(`pirl: warning: ${older} does not record the side its images were embedded at (an older pirl embed): queries are embedded at 32 px`);
    // Nor its model (a list's pass saved so is another such file): taken unchecked but by width, said.
    expect(fromOlder.stderr).toContain(`pirl: warning: ${older} does not record the model that made it (a list's pass saved without its weights, or an older pirl's file): ` +
      `its rows are taken as ${model}'s, checked by their width alone (pirl embed records the model)`);
    // (It was embedded at 16 px, which it could not say: the warning's case.) Its files are as recorded, relative.
    expect(JSON.parse(fromOlder.stdout).neighbours.map((n: { file: string }) => path.isAbsolute(n.file))).toEqual(Array(5).fill(false));
    const otherModel = path.join(dir, 'other.safetensors');
    await (await PirlModel.create({ width: 0.125 })).save(otherModel);
    searchRefused([otherModel, features, query], `${features} was embedded by another model than ${otherModel}`);
    searchRefused([model, features, path.join(dir, 'nowhere.png')], `query ${path.join(dir, 'nowhere.png')}: no such file or folder`);
    searchRefused([model, features, '/dev/null'], 'query /dev/null: neither an image file nor a folder'); // a device, a FIFO: not read as images[0]
    // A features file whose folder moved since: its neighbours keep their old paths, said.
    const moved = path.join(dir, 'moved.safetensors');
    await writeSafetensors(moved, (await readSafetensors(features)).tensors, { ...(await readSafetensors(features)).metadata, dir: path.join(dir, 'gone') });
    const fromMoved = spawnSync(process.execPath, [cli, 'search', model, moved, query, '--k', '1'], { encoding: 'utf8' });
    expect(fromMoved.stderr).toContain(`pirl: warning: ${moved}'s images were embedded from ${path.join(dir, 'gone')}, which is no folder now: its neighbours are named where they were (embed the moved folder again)`);
    expect(JSON.parse(fromMoved.stdout).neighbours[0].file).toBe(path.join(dir, 'gone', 'dark', '3.png'));
    searchRefused([model, model, query], 'is not a features file of pirl embed');
    const featuresAsModel = spawnSync(process.execPath, [cli, 'eval', features], { encoding: 'utf8' });
    expect(featuresAsModel.stderr).toContain('it is a features file of `pirl embed` (image embeddings), not a model: give the model that made it');
    // The run's checkpoint holds the weights of its model file (both written at its end): one model, the same neighbours.
    const byCheckpoint = spawnSync(process.execPath, [cli, 'search', path.join(out, 'checkpoint.safetensors'), features, query], { encoding: 'utf8' });
    expect(byCheckpoint.status).toBe(0);
    expect(byCheckpoint.stdout).toBe(spawnSync(process.execPath, [cli, 'search', model, features, query], { encoding: 'utf8' }).stdout);
    searchRefused([model, features], `search needs <model.safetensors> <features.safetensors> and at least one query image or folder (got 2 argument(s): '${model}', '${features}')`, 2);
    run(['embed', model, 'fashion-mnist', '--out', features, '--size', '8']);
    const mnist = await readSafetensors(features);
    expect(mnist.tensors.get('features')!.shape[0]).toBe(60000);
    expect(JSON.parse(mnist.metadata.files)[59999]).toBe('fashion-mnist/train/59999');
    expect(metadata.size).toBe('16');
    const trunk = path.join(dir, 'trunk.safetensors');
    const exported = spawnSync(process.execPath, [cli, 'export', model, '--out', trunk], { encoding: 'utf8' });
    expect(exported.status).toBe(0);
    const written = await readSafetensors(trunk);
    expect(written.tensors.has('layer4.1.bn2.running_var')).toBe(true);
    expect(JSON.parse(written.metadata['pirl-trunk'])).toMatchObject({ arch: 'resnet18', stem: 'small', width: 0.125, imageSize: 32, mean: [0.485, 0.456, 0.406] });
    // What torchvision needs to take it is said (README "Transfer").
    expect(exported.stderr).toContain("pirl: note: width 0.125: torchvision's resnet18 has no such channel counts; its weights load only into a ResNet built with each stage's channels × 0.125, and the small stem (a 3×3 stride-1 conv1, no max-pool)\n");
    expect(exported.stderr).not.toContain('torchvision.models.resnet18() takes it'); // not at this width: bn1 would not fit
    const trunkAsModel = spawnSync(process.execPath, [cli, 'eval', trunk], { encoding: 'utf8' });
    expect(trunkAsModel.stderr).toContain('it is a trunk from pirl export (resnet18, small stem, width 0.125), not a pirl model: in the API, PirlModel.create({"arch":"resnet18","stem":"small","width":0.125}) then model.importTrunk(file) loads it');

    // Trained work is not overwritten by a slip of --out: the command's own input never, a model or checkpoint only with --force.
    const before = fs.readFileSync(model);
    const refused = (args: string[], message: string) => {
      const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toContain(message);
    };
    refused(['export', model, '--out', model, '--force'], `--out ${model} is the file this command reads (${model}): give another file`);
    refused(['embed', model, data, '--out', model], `--out ${model} is the file this command reads`);
    const sameFile = path.join(dir, 'same.safetensors'); // its decode cache, then its features: refused before either is made
    refused(['embed', model, data, '--out', sameFile, '--cache', sameFile], `--out ${sameFile} is the file this command reads (${sameFile}): give another file`);
    expect(fs.existsSync(sameFile)).toBe(false);
    refused(['embed', model, data, '--out', features, '--cache', model], `--cache must be a new file or a pirl decode cache, not a file that holds something else (pirl does not overwrite it), got '${model}'`);
    const checkpointCopy = path.join(dir, 'checkpoint-copy.safetensors');
    fs.copyFileSync(path.join(out, 'checkpoint.safetensors'), checkpointCopy);
    refused(['embed', model, data, '--out', checkpointCopy], `--out ${checkpointCopy} holds a training checkpoint: --force replaces it`);
    const modelCopy = path.join(dir, 'model-copy.safetensors');
    fs.copyFileSync(model, modelCopy);
    refused(['export', model, '--out', modelCopy], `--out ${modelCopy} holds a trained pirl model: --force replaces it`);
    run(['export', model, '--out', modelCopy, '--force']);
    run(['export', model, '--out', trunk]); // an earlier export or features file is replaced without a word
    expect(fs.readFileSync(model).equals(before)).toBe(true);
    // --size is checked against the model's stem, named as the flag; one far from the training side is said.
    refused(['embed', model, data, '--out', features, '--size', '4'], "--size must be at least 5 px for model.stem 'small', got '4'");
    const far = spawnSync(process.execPath, [cli, 'eval', model, '--data', data, '--size', '8'], { encoding: 'utf8' });
    expect(far.status).toBe(0);
    expect(far.stderr).toContain('pirl: warning: --size 8 is far from the 32 px this model was trained at');
  }, 300_000); // ~40 s of CLI processes on a quiet 2-core machine

  test('embed --update keeps the rows of unchanged images and embeds only new and changed ones, in the folder\'s order', async () => {
    const model = path.join(out, 'model.safetensors');
    const growing = path.join(dir, 'growing');
    fs.cpSync(data, growing, { recursive: true });
    const file = path.join(dir, 'growing.safetensors');
    const embed = (args: string[]) => spawnSync(process.execPath, [cli, 'embed', model, growing, '--size', '16', ...args], { encoding: 'utf8' });
    // A first --update (no file yet) embeds every image, said.
    const first = embed(['--out', file, '--update']);
    expect(first.stderr).toContain(`pirl: --update: ${file} is not there yet: every image is embedded\n`);
    expect([first.status, first.stdout]).toEqual([0, `wrote 20×64 features of 20 images (at 16 px; 0 kept from before, 20 embedded now) to ${file}\n`]);
    const before = await readSafetensors(file);
    const names = (m: Record<string, string>) => JSON.parse(m.files) as string[];
    const rowOf = (content: typeof before, name: string) => {
      const i = names(content.metadata).indexOf(name);
      return [...(content.tensors.get('features')!.data() as Float32Array).subarray(64 * i, 64 * i + 64)];
    };
    // Each row's file version is kept beside it: [bytes, modification time, change time] (ms).
    const stat = fs.statSync(path.join(growing, 'dark', '0.png'));
    const versions = before.tensors.get('file-versions')!;
    const at = names(before.metadata).indexOf(path.join('dark', '0.png'));
    expect([versions.dtype, versions.shape, [...(versions.data() as Float64Array).subarray(3 * at, 3 * at + 3)]]).toEqual(['float64', [20, 3], [stat.size, stat.mtimeMs, stat.ctimeMs]]);
    // One image added, one replaced by another, one removed, one only touched (its time changed: embedded again).
    await sharp(Buffer.alloc(24 * 24 * 3, 120), { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(growing, 'dark', 'new.png'));
    fs.copyFileSync(path.join(data, 'dark', '9.png'), path.join(growing, 'light', '3.png'));
    fs.rmSync(path.join(growing, 'dark', '5.png'));
    fs.utimesSync(path.join(growing, 'light', '7.png'), new Date(), new Date(Date.now() + 5000));
    // One rewritten in place with its modification time put back (a restore, touch -r): its change time tells.
    const restored = path.join(growing, 'light', '8.png');
    const { atime, mtime } = fs.statSync(restored);
    fs.writeFileSync(restored, fs.readFileSync(restored));
    fs.utimesSync(restored, atime, mtime);
    const update = embed(['--out', file, '--update']);
    expect([update.status, update.stdout]).toEqual([0, `wrote 20×64 features of 20 images (at 16 px; 16 kept from before, 4 embedded now) to ${file}\n`]);
    expect(update.stderr).toMatch(/features 4\/4 images/); // only those four were decoded and embedded
    const after = await readSafetensors(file);
    // The rows and their order are a full embed's of the folder as it is now: the same names, labels and features
    // (the embedded ones in another batch: equal to float32 rounding), the kept ones bit for bit the earlier file's.
    const full = path.join(dir, 'growing-full.safetensors');
    embed(['--out', full]);
    const fresh = await readSafetensors(full);
    expect(names(after.metadata)).toEqual(names(fresh.metadata));
    expect(names(after.metadata)).toContain(path.join('dark', 'new.png'));
    expect(names(after.metadata)).not.toContain(path.join('dark', '5.png'));
    expect([...after.tensors.get('labels')!.data()]).toEqual([...fresh.tensors.get('labels')!.data()]);
    const got = after.tensors.get('features')!.data() as Float32Array;
    const want = fresh.tensors.get('features')!.data() as Float32Array;
    expect(got.length).toBe(want.length);
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i])));
    for (const name of names(after.metadata).filter((n) => ![path.join('light', '3.png'), path.join('light', '7.png'), path.join('light', '8.png'), path.join('dark', 'new.png')].includes(n))) {
      expect(rowOf(after, name)).toEqual(rowOf(before, name));
    }
    expect(rowOf(after, path.join('light', '3.png'))).not.toEqual(rowOf(before, path.join('light', '3.png')));
    // Nothing changed: every row kept, nothing decoded; the folder given by another path (or moved) keeps them too.
    expect(embed(['--out', file, '--update']).stdout).toContain('(at 16 px; 20 kept from before, 0 embedded now)');
    const moved = path.join(dir, 'moved');
    fs.renameSync(growing, moved);
    const fromMoved = spawnSync(process.execPath, [cli, 'embed', model, path.relative(process.cwd(), moved) + path.sep, '--size', '16', '--out', file, '--update'], { encoding: 'utf8' });
    expect(fromMoved.stdout).toContain('(at 16 px; 20 kept from before, 0 embedded now)');
    expect((await readSafetensors(file)).metadata.dir).toBe(moved);
    fs.renameSync(moved, growing);
    // The library reads the file as the pass it keeps (a reuse for embedImages), and writes one that --update takes.
    const loadedModel = await PirlModel.load(model);
    const viaApi = await embedImages(loadedModel, growing, { size: 16, reuse: await loadImageFeatures(file) });
    expect(viaApi.reused).toBe(20);
    await saveImageFeatures(file, viaApi);
    expect(embed(['--out', file, '--update']).stdout).toContain('(at 16 px; 20 kept from before, 0 embedded now)');
    // With --cache too: a change rebuilds the cache, decoding the changed images alone (said), and embeds them alone.
    const growingCache = path.join(dir, 'growing.cache');
    expect(embed(['--out', file, '--update', '--cache', growingCache]).stdout).toContain('(at 16 px; 20 kept from before, 0 embedded now)');
    await new Promise((r) => setTimeout(r, 20));
    await sharp(Buffer.alloc(24 * 24 * 3, 30), { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(growing, 'dark', '0.png'));
    const cachedUpdate = embed(['--out', file, '--update', '--cache', growingCache]);
    expect(cachedUpdate.stderr).toContain(`pirl: the decode cache ${growingCache} was built before files of ${growing} were added, removed or changed (name, size, modification time): rebuilding it, 1 of 20 images decoded again (the unchanged ones' pixels kept)`);
    expect(cachedUpdate.stdout).toContain('(at 16 px; 19 kept from before, 1 embedded now)');
    // Made at another layer, side or by another model: all embedded again, said; the file then holds the new rows.
    const otherLayer = embed(['--out', file, '--update', '--layer', 'f']);
    expect(otherLayer.stderr).toContain(`pirl: --update: ${file} was embedded at layer res5, not f: every image is embedded again\n`);
    expect(otherLayer.stdout).toContain('0 kept from before, 20 embedded now');
    const otherModel = path.join(dir, 'growing-model.safetensors');
    await (await PirlModel.create((await PirlModel.load(model)).options)).save(otherModel); // the same network, other weights
    const byOther = spawnSync(process.execPath, [cli, 'embed', otherModel, growing, '--size', '16', '--out', file, '--update'], { encoding: 'utf8' });
    expect(byOther.stderr).toContain(`pirl: --update: ${file} was embedded by another model: every image is embedded again\n`);
    // A file of a pirl that recorded no model is not taken for another model's.
    const { tensors: t, metadata: { 'model-weights-sha256': _, ...unrecorded } } = await readSafetensors(file);
    await writeSafetensors(file, t, unrecorded);
    expect(embed(['--out', file, '--update']).stderr).toContain(`pirl: --update: ${file} was embedded by an older pirl, which did not record its model: every image is embedded again\n`);
    // What --update cannot keep rows of is refused before any work, naming it.
    const fashion = spawnSync(process.execPath, [cli, 'embed', model, 'fashion-mnist', '--out', file, '--update'], { encoding: 'utf8' });
    expect([fashion.status, fashion.stderr]).toEqual([2, expect.stringContaining("pirl: --update keeps the rows of a folder's unchanged images: fashion-mnist is no folder\n")]);
    const notFeatures = path.join(dir, 'not-features.safetensors');
    await writeSafetensors(notFeatures, [['x', Tensor.from(new Float32Array(2))]]);
    const refused = embed(['--out', notFeatures, '--update']);
    expect([refused.status, refused.stderr]).toEqual([2, expect.stringContaining(`pirl: --update ${notFeatures}: ${notFeatures} is not a features file of pirl embed`)]);
  });

  test('the curves of a long run (300,000 steps) are drawn, not a stack overflow', async () => {
    const file = path.join(dir, 'long.png');
    const loss = Array.from({ length: 300000 }, (_, i): [number, number] => [i, 8 - Math.log1p(i) * 0.3]);
    await writeCurves(file, loss, [[1, 0.7], [2, 0.8]]);
    expect((await sharp(file).metadata()).width).toBe(800);
  });

  test('the curves of a constant kNN have two distinct ticks, and a single point is drawn', () => {
    const ticks = (svg: string) => [...svg.matchAll(/text-anchor="end">([^<]*)</g)].map((m) => m[1]);
    const constant = curvesSvg([[0, 5], [1, 4]], [[1, 1], [2, 1]]);
    expect(ticks(constant)).toEqual(['5.000', '4.000', '1', '1.050', '0.9500', '2']); // each panel: y's top and bottom, x's last
    expect(constant.match(/<circle [^>]*fill="#d62728"/g)).toHaveLength(2);
    const single = curvesSvg([[0, 5], [1, NaN]], [[3, 0.5]]); // a NaN loss is left out, not every coordinate NaN
    expect(single.match(/<circle /g)).toHaveLength(2); // the one step and the one epoch: a one-point polyline draws nothing
    expect(single).toContain('text-anchor="middle">3<'); // its epoch, under it
    expect(single).not.toContain('NaN');
  });

  test('--out where no folder can be made (/proc, a file) exits 2 at once, naming --out and why', () => {
    fs.writeFileSync(path.join(dir, 'a-file'), '');
    for (const [where, why] of [['/proc/pirl-x', /--out \/proc\/pirl-x: cannot create \/proc\/pirl-x: ENOENT/], [path.join(dir, 'a-file', 'x'), /--out .*a-file\/x: ENOTDIR: not a directory/]] as const) {
      const r = spawnSync(process.execPath, [cli, 'train', data, '--out', where, ...small], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(why);
    }
  });

  test('one run at a time in an --out (its run.lock, taken over from a dead holder); an --out inside the data folder is refused', () => {
    const locked = path.join(dir, 'locked');
    const lock = path.join(locked, 'run.lock');
    fs.mkdirSync(locked);
    const train = (...more: string[]) => spawnSync(process.execPath, [cli, 'train', data, '--out', locked, '--epochs', '1', ...small, ...more], { encoding: 'utf8' });
    const inUse = `pirl: ${locked} is in use by another run (${os.hostname()} pid ${process.pid}): wait for it to end, or give another --out`;
    fs.writeFileSync(lock, `${os.hostname()} ${process.pid} token`); // a live process of this host holds it
    const held = train();
    expect({ status: held.status, stderr: held.stderr.split('\n')[0] }).toEqual({ status: 2, stderr: inUse });
    expect(fs.readFileSync(lock, 'utf8')).toBe(`${os.hostname()} ${process.pid} token`);
    fs.writeFileSync(lock, `${os.hostname()} 4194305 token`); // above Linux's largest pid: its holder is gone
    expect(train().status).toBe(0);
    expect({ model: fs.existsSync(path.join(locked, 'model.safetensors')), lock: fs.existsSync(lock) }).toEqual({ model: true, lock: false });
    fs.writeFileSync(lock, `${os.hostname()} ${process.pid} token`);
    const resumed = train('--resume');
    expect({ status: resumed.status, stderr: resumed.stderr.split('\n')[0] }).toEqual({ status: 2, stderr: inUse });
    // Said before what the folder holds (a run: --resume or --force, which would meet the lock in turn).
    const plain = train();
    expect({ status: plain.status, stderr: plain.stderr.split('\n')[0] }).toEqual({ status: 2, stderr: inUse });
    fs.rmSync(lock);
    // Curves that cannot be written are said once and the run goes on (at an epoch's end a throw cost its checkpoint).
    fs.rmSync(path.join(locked, 'curves.png'));
    fs.mkdirSync(path.join(locked, 'curves.png', 'in-the-way'), { recursive: true });
    const undrawn = train('--resume', '--epochs', '2');
    expect(undrawn.status).toBe(0);
    expect(undrawn.stderr.split('\n').filter((l) => l.includes('curves.png'))).toEqual([
      `pirl: warning: cannot write ${path.join(locked, 'curves.png')}: it is a folder, not a regular file: give the path of a file to write (the training curves, not drawn: training is not affected)`]);
    expect(undrawn.stdout).toMatch(/to step 4 of 4/);
    expect(undrawn.stdout).not.toMatch(/wrote .*curves\.png/);
    fs.rmSync(path.join(locked, 'curves.png'), { recursive: true });
    // A flag's own mistake is said before what --out holds; a file given as --out is said as one, --resume or not.
    const flagFirst = train('--epoch-length', '0');
    expect(flagFirst.stderr.split('\n')[0]).toBe("pirl: --epoch-length must be an integer in [1, 9007199254740991], got '0'");
    for (const more of [[], ['--resume']]) {
      const file = spawnSync(process.execPath, [cli, 'train', data, '--out', path.join(locked, 'model.safetensors'), ...small, ...more], { encoding: 'utf8' });
      expect([file.status, file.stderr.split('\n')[0]]).toEqual([2, `pirl: --out ${path.join(locked, 'model.safetensors')}: it is a file, not a folder (a run's folder)`]);
    }
    // Inside the data folder, a run's files (curves.png) and a preview would be read as its images next time.
    const inside = spawnSync(process.execPath, [cli, 'train', '.', '--epochs', '1', ...small], { encoding: 'utf8', cwd: path.join(data, 'light') });
    expect(inside.status).toBe(2);
    expect(inside.stderr).toContain('pirl: --out pirl-run (the default) is inside the data folder .: what pirl writes there would be read as its images next time; give --out outside it');
    const sample = path.join(data, 'dark', 'sample.png');
    const preview = spawnSync(process.execPath, [cli, 'preview', data, '--out', sample], { encoding: 'utf8' });
    expect(preview.status).toBe(2);
    expect(preview.stderr).toContain(`pirl: --out ${sample} is inside the data folder ${data}: what pirl writes there`);
    expect([fs.existsSync(path.join(data, 'light', 'pirl-run')), fs.existsSync(sample)]).toEqual([false, false]);
  });

  test('a resume that restates some flags (--stem imagenet, not the sampler its --config gave) goes on: the sampler not restated is the run\'s', () => {
    const out17 = path.join(dir, 'stem-imagenet');
    const cfg = path.join(dir, 'stem17.json');
    fs.writeFileSync(cfg, JSON.stringify({ sampler: { imageSize: 17, jigsawSize: 54, patchSize: 17 } }));
    const train = (...more: string[]) => spawnSync(process.execPath, [cli, 'train', data, '--out', out17, '--stem', 'imagenet', ...small, ...more], { encoding: 'utf8' });
    expect(train('--config', cfg, '--epochs', '1').status).toBe(0);
    const resumed = train('--epochs', '2', '--resume'); // the default sampler (9-px patches) is too small for the stem: not the run's
    expect({ status: resumed.status, stderr: resumed.stderr }).toEqual({ status: 0, stderr: expect.not.stringMatching(/at least 17 px/) });
    expect(train('--epochs', '2', '--resume', '--preset', 'paper').stderr).toMatch(/--resume continues the run its checkpoint describes; --preset cannot change it/);
  });

  test("a run checkpointed before the paper preset's photometric step became VISSL's resumes with its own, from the same command", async () => {
    const run5 = path.join(dir, 'format5');
    const cfg = path.join(dir, 'paper-small.json');
    fs.writeFileSync(cfg, JSON.stringify({ sampler: { preset: 'paper', imageSize: 16, jigsawSize: 18, patchSize: 6 } }));
    const train = (...more: string[]) => spawnSync(process.execPath, [cli, 'train', data, '--out', run5, '--config', cfg, ...small, ...more], { encoding: 'utf8' });
    expect(train('--epochs', '1').status).toBe(0);
    // As pirl wrote it before format 6: no photometricOps (it applied one op, drawn).
    const file = path.join(run5, 'checkpoint.safetensors');
    const { tensors, metadata } = await readSafetensors(file);
    const meta = JSON.parse(metadata['pirl-checkpoint']);
    expect(meta.config.sampler.photometricOps).toBe('all');
    delete meta.config.sampler.photometricOps;
    await writeSafetensors(file, tensors, { ...metadata, 'pirl-checkpoint': JSON.stringify({ ...meta, format: 5 }) });
    const resumed = train('--epochs', '2', '--resume');
    expect({ status: resumed.status, refused: resumed.stderr.includes('cannot change it') }).toEqual({ status: 0, refused: false });
    const after = JSON.parse((await readSafetensors(file)).metadata['pirl-checkpoint']);
    expect([after.format, after.config.sampler.photometricOps, after.position.step]).toEqual([7, 'one', 4]);
  });

  test('a folder mostly unreadable: the summary counts the steps skipped (batches of unreadable images only) and the images left out', () => {
    const bad = path.join(dir, 'mostly-bad');
    fs.mkdirSync(bad);
    for (let i = 0; i < 3; i++) fs.copyFileSync(path.join(data, 'light', `${i}.png`), path.join(bad, `good${i}.png`));
    for (let i = 0; i < 9; i++) fs.writeFileSync(path.join(bad, `page${i}.png`), '<html>not found</html>');
    const runOut = path.join(dir, 'mostly-bad-run');
    // 4 batches of 3: the 3 readable images fill 3 of them at most.
    const r = spawnSync(process.execPath, [cli, 'train', bad, '--out', runOut, '--epochs', '1', '--width', '0.125', '--batch', '3', '--negatives', '8', '--size', '24'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const [, steps, skipped] = /trained (\d+) step\(s\) \((\d+) skipped: their batches held no readable image\)/.exec(r.stdout) ?? [];
    expect([Number(steps), Number(skipped)]).toEqual([4, expect.any(Number)]);
    const logged = fs.readFileSync(path.join(runOut, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"batch"')).length;
    expect(logged).toBe(4 - Number(skipped));
    expect(r.stderr).toContain(`pirl: warning: 9 of the 12 images of ${bad} were skipped (said above: unreadable, or over --max-pixels) and left out of their batches (--cache FILE leaves them out of the data set: every batch full)`);
    // With --cache they are known before training: the data set is the 3 readable images, one full batch, no step skipped.
    const cached = spawnSync(process.execPath, [cli, 'train', bad, '--out', `${runOut}-cached`, '--epochs', '1', '--width', '0.125', '--batch', '3', '--negatives', '2', '--size', '24',
      '--cache', path.join(dir, 'mostly-bad.cache')], { encoding: 'utf8' });
    expect(cached.status).toBe(0);
    expect(cached.stdout).toMatch(/trained 1 step\(s\) in /);
    expect(cached.stderr.match(/^pirl: skipping unreadable image .*page\d\.png: not an image: text starting "<html>not found<\/html>"$/gm)).toHaveLength(9);
    expect(cached.stderr).toContain(`pirl: warning: 9 of the 12 images of ${bad} were skipped (said above: unreadable, or over --max-pixels) and left out of the data set\n`);
    // The run read without a cache kept them as samples: resumed through one, the difference is named.
    const resumed = spawnSync(process.execPath, [cli, 'train', bad, '--out', runOut, '--epochs', '2', '--width', '0.125', '--batch', '3', '--negatives', '8', '--size', '24',
      '--resume', '--cache', path.join(dir, 'mostly-bad.cache')], { encoding: 'utf8' });
    expect([resumed.status, resumed.stderr]).toEqual([1, expect.stringContaining("the run trained on a data set of 12 samples (its memory bank's rows); the one given has 3: " +
      `resume over the run's data (the folder it trained on, as it was), or start a new run from its weights (options.init: PirlModel.load(${path.join(runOut, 'checkpoint.safetensors')}); ` +
      `pirl train --init ${path.join(runOut, 'checkpoint.safetensors')}, in another --out). The folder's cache left out its 9 unreadable image(s), which the run kept as samples ` +
      '(it read the folder without a cache, or through one with an earlier pirl): resume it without the cache (options.cache, --cache)')]);
    const big = spawnSync(process.execPath, [cli, 'train', bad, '--out', `${runOut}-big`, '--batch', '4', '--size', '24', '--cache', path.join(dir, 'mostly-bad.cache')], { encoding: 'utf8' });
    expect([big.status, big.stderr]).toEqual([2, expect.stringMatching(/--batch must be at most 3 \(the data set's 3 samples/)]);
    // Read back from the cache, they are said in one line, not one each.
    const page = (i: number) => `page${i}.png: not an image: text starting "<html>not found</html>"`;
    expect(big.stderr).toContain(`pirl: ${bad}: skipping 9 image(s) found unreadable or too large when its decode cache ${path.join(dir, 'mostly-bad.cache')} was built ` +
      `(${page(0)}; ${page(1)}; ${page(2)}; and 6 more)\n`);
    expect(big.stderr).not.toContain('skipping unreadable image');
  });

  test('a closed stdout and stderr (pirl train … | head) end no run', async () => {
    const piped = path.join(dir, 'piped');
    const child = spawn(process.execPath, [cli, 'train', data, '--out', piped, '--epochs', '2', ...small], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    child.stderr.destroy();
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    expect(fs.existsSync(path.join(piped, 'model.safetensors'))).toBe(true);
  });

  test('--resume of a run trained on other ranks names --nproc', async () => {
    const twoRanks = path.join(dir, 'two-ranks');
    fs.mkdirSync(twoRanks);
    const { tensors, metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    const meta = JSON.parse(metadata['pirl-checkpoint']);
    // As 2 ranks of 4 would have trained it: the same global batch of 8.
    await writeSafetensors(path.join(twoRanks, 'checkpoint.safetensors'), tensors, { ...metadata, 'pirl-checkpoint': JSON.stringify({ ...meta, worldSize: 2, config: { ...meta.config, batchSize: 4 } }) });
    const r = spawnSync(process.execPath, [cli, 'train', data, '--out', twoRanks, '--resume'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--resume: the run in .*two-ranks trained on 2 rank\(s\) and resumes exactly only on as many; this is 1: give --nproc 2 \(or start it under a launcher with WORLD_SIZE=2\), or --rescale-batch to go on with 1 × 8 \(not exact: each rank's BatchNorm batch changes\)/);
    // --rescale-batch: one rank of 8, the run's global batch (its first command's --batch 4 not read), trained on an epoch.
    const rescaled = spawnSync(process.execPath, [cli, 'train', data, '--out', twoRanks, '--resume', '--rescale-batch', '--batch', '4', '--epochs', String(meta.config.epochs + 1)], { encoding: 'utf8' });
    expect(rescaled.status).toBe(0);
    expect(rescaled.stderr).toContain('pirl: the run trained on 2 rank(s) × 4 goes on with 1 × 8 (--rescale-batch): the same global batch');
    expect(JSON.parse((await readSafetensors(path.join(twoRanks, 'checkpoint.safetensors'))).metadata['pirl-checkpoint'])).toMatchObject({ worldSize: 1, config: { batchSize: 8 } });
    // Restarted again as it was first started (a launcher's same command): a --config file's batchSize is not read either.
    const cfg = path.join(dir, 'batch4.json');
    fs.writeFileSync(cfg, '{"batchSize": 4}');
    const again = spawnSync(process.execPath, [cli, 'train', data, '--out', twoRanks, '--auto-resume', '--rescale-batch', '--config', cfg, '--epochs', String(meta.config.epochs + 1)], { encoding: 'utf8' });
    expect([again.status, again.stderr]).toEqual([0, expect.not.stringContaining('cannot change it')]);
    expect(again.stdout).toContain('was already complete');
    const fresh = spawnSync(process.execPath, [cli, 'train', data, '--out', path.join(dir, 'fresh'), '--rescale-batch'], { encoding: 'utf8' });
    expect(fresh.status).toBe(2);
    expect(fresh.stderr).toContain('pirl: --rescale-batch applies to a run resumed (--resume, --auto-resume): a new run takes --batch as it is');
  });

  test('bad arguments exit 2 with the usage; missing data exits 1', async () => {
    const bad = spawnSync(process.execPath, [cli, 'train', data, '--epochs', 'many'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--epochs must be an integer in \[1, 1000000\], got 'many'/);
    // The message ends the output, saying where the usage is (printed whole, it pushed the message off the screen).
    expect(bad.stderr.trim().split('\n').slice(-2)).toEqual([expect.stringMatching(/^pirl: --epochs must be/), '(pirl train --help: its options)']);
    const none = spawnSync(process.execPath, [cli], { encoding: 'utf8' });
    expect({ status: none.status, stdout: none.stdout, stderr: none.stderr.split('\n')[0] }).toEqual({ status: 2, stdout: '', stderr: 'Usage: pirl <command> [options]' });
    const gpu = spawnSync(process.execPath, [cli, 'train', data, '--device', 'cuda:7'], { encoding: 'utf8' });
    if (!gpu.stderr.includes('visible')) { // this libtorch has no CUDA
      expect(gpu.status).toBe(2);
      expect(gpu.stderr).toMatch(/--device must be 'cpu' \(the libtorch pirl runs on .* has no CUDA; for a GPU, .*install\.js\), got 'cuda:7'/);
    }
    const version = spawnSync(process.execPath, [cli, '--version'], { encoding: 'utf8' });
    expect(version.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version);
    const help = spawnSync(process.execPath, [cli, 'train', '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/train <data> \[options\][^]*--bank-init random\|features/);
    // One command's mistakes and --help show that command's usage, not every command's.
    expect(help.stdout).not.toMatch(/Commands:|preview <data>/);
    expect(spawnSync(process.execPath, [cli, 'help'], { encoding: 'utf8' }).stdout).toMatch(/Commands:[^]*train <data>[^]*preview <data>/);
    const init = spawnSync(process.execPath, [cli, 'train', data, '--bank-init', 'zeros'], { encoding: 'utf8' });
    expect(init.status).toBe(2);
    expect(init.stderr).toMatch(/--bank-init must be 'random' or 'features', got 'zeros'/);
    const usage = (args: string[], message: RegExp) => {
      const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toMatch(message);
    };
    usage(['train', data, '--lr', '-1'], /--lr must be a number in \[0, 1e\+30\], got '-1'/);
    usage(['train', data, '--lr-update', 'hourly'], /--lr-update must be 'step' or 'epoch', got 'hourly'/);
    usage(['train', data, '--lr-update', 'epoch', '--warmup', '0.5'], /--warmup must be whole epochs with lrUpdate 'epoch' \(--lr-update epoch\), got '0.5'/);
    usage(['train', data, '--threads', '10000'], /--threads must be an integer in \[1, 256\], got '10000'/);
    // An unset shell variable: refused (the run went to the current folder, the config was not read). A flag given
    // twice takes its last value, as in most tools (defaults, then an override).
    usage(['train', data, '--out', ''], /^pirl: --out needs a value, got '' \(an unset variable\?\)\n/);
    usage(['train', data, '--config='], /^pirl: --config needs a value, got '' \(an unset variable\?\)\n/);
    usage(['train', ''], /^pirl: argument 1 is empty \('': an unset variable\?\)\n/);
    // A --cache that is the run's folder or one of its files, refused before the cache is built (the run took it for a run).
    const cacheRun = path.join(dir, 'cache-run');
    usage(['train', data, '--out', cacheRun, '--cache', path.join(cacheRun, 'checkpoint.safetensors')], /^pirl: --cache .*checkpoint\.safetensors is the run's own checkpoint\.safetensors in --out: give --cache another name\n/);
    usage(['train', data, '--out', cacheRun, '--cache', cacheRun], /^pirl: --cache .*cache-run is --out: the run's folder cannot be its cache file; give --cache another path\n/);
    usage(['train', data, '--out', cacheRun, '--cache', path.join(cacheRun, 'run')], /^pirl: --cache .*run: its lock, .*run\.lock, would be the run's own run\.lock in --out: give --cache another name\n/);
    expect(fs.existsSync(cacheRun)).toBe(false);
    // Through a link to --out (real paths compared), and on --resume too.
    fs.mkdirSync(cacheRun);
    fs.symlinkSync(cacheRun, path.join(dir, 'cache-run-link'));
    usage(['train', data, '--out', cacheRun, '--resume', '--cache', path.join(dir, 'cache-run-link', 'model.safetensors')], /^pirl: --cache .*model\.safetensors is the run's own model\.safetensors in --out: give --cache another name\n/);
    fs.rmSync(cacheRun, { recursive: true });
    // A folder this process cannot write (sysfs refuses new files, to root too): the flag named, not a lock file's raw error.
    if (fs.existsSync('/sys/kernel')) {
      usage(['train', data, '--out', '/sys', '--epochs', '1'], /^pirl: --out \/sys: cannot write there \((EACCES|EPERM|EROFS)\): give an --out you can write\n/);
      usage(['train', data, '--out', path.join(dir, 'sys-cache'), '--cache', '/sys/c.bin', '--epochs', '1'],
        /^pirl: --cache must be a path in a folder this process can write \((EACCES|EPERM|EROFS) there\), got '\/sys\/c\.bin'\n/);
    }
    // parseArgs's refusals, said as pirl's: the flag meant, a missing value, a switch given one (its word taken as data).
    usage(['train', data, '--epoch', '3'], /^pirl: unknown flag --epoch \(did you mean --epochs\?\)\n/);
    usage(['train', data, '--wdith', '0.5'], /^pirl: unknown flag --wdith \(did you mean --width\?\)\n/);
    usage(['train', data, '--colour', 'red'], /^pirl: unknown flag --colour\n/);
    usage(['train', data, '--out'], /^pirl: --out needs a value\n/);
    usage(['train', data, '--force=yes'], /^pirl: --force is a switch: it takes no value\n/);
    usage(['train', data, '--force', 'yes'], new RegExp(`^pirl: train needs one <data> argument \\(got 2 argument\\(s\\): '${data}', 'yes'; --force is a switch \\(it takes no value\\), so 'yes' is one of them\\)\n`));
    // Other tools' names for a flag (argparse's --batch-size), and --cuda: the flag meant, not the nearest spelling (--cuda-graphs).
    usage(['train', data, '--batch-size', '8'], /^pirl: unknown flag --batch-size \(did you mean --batch\?\)\n/);
    usage(['train', data, '--cuda'], /^pirl: unknown flag --cuda \(did you mean --device cuda\?\)\n/);
    usage(['train', data, '-o', 'run'], /^pirl: unknown flag -o \(did you mean --out\? pirl's flags take two dashes; a file named so: \.\/-o, or -- before it\)\n/);
    // A flag of one letter with one dash (parseArgs took `-k` for --k, and a query file `-k.jpg` for --k=.jpg).
    usage(['search', data, data, '-k.jpg'], /^pirl: unknown flag -k\.jpg \(pirl's flags take two dashes; a file named so: \.\/-k\.jpg, or -- before it\)\n/);
    usage(['train', data, '--out', '-run'], /^pirl: --out -run: a value that starts with '-' is written --out=-run \(or --out misses its value\)\n/);
    usage(['search', data, data, '-k', '3'], /^pirl: unknown flag -k \(did you mean --k\? pirl's flags take two dashes; a file named so: \.\/-k, or -- before it\)\n/);
    // A folder of text named .jpg: each file's warning, then the failure that points to them (it came first).
    const texts = path.join(dir, 'texts');
    fs.mkdirSync(texts, { recursive: true });
    for (const name of ['a.jpg', 'b.jpg']) fs.writeFileSync(path.join(texts, name), 'not an image');
    const undecodable = spawnSync(process.execPath, [cli, 'train', texts, '--out', path.join(dir, 'texts-run'), ...small], { encoding: 'utf8' });
    expect(undecodable.status).toBe(1);
    expect(undecodable.stderr.indexOf('could be decoded (see the warnings)')).toBeGreaterThan(undecodable.stderr.lastIndexOf('b.jpg: not an image'));
    usage(['train', data, '--tau', 'Infinity'], /--tau must be a positive number, got 'Infinity'/);
    // --knn-every on unlabeled data is refused before the bank's pass over the data, and before --out is made.
    const flat = path.join(dir, 'flat');
    fs.cpSync(path.join(data, 'light'), flat, { recursive: true });
    fs.writeFileSync(path.join(flat, '00-not-an-image.png'), 'text');
    usage(['train', flat, '--out', path.join(dir, 'flat-run'), '--knn-every', '1', ...small], /--knn-every needs labeled data/);
    expect(fs.existsSync(path.join(dir, 'flat-run'))).toBe(false);
    // --layout flat says so before the folder is read (a --cache would be built first).
    usage(['train', data, '--out', path.join(dir, 'flat-run'), '--knn-every', '1', '--layout', 'flat', '--cache', path.join(dir, 'flat.cache'), ...small],
      /--knn-every needs labeled data: --layout flat reads the folder as unlabeled images; give --layout classes, or leave it out/);
    expect(fs.existsSync(path.join(dir, 'flat.cache'))).toBe(false);
    usage(['embed', path.join(out, 'model.safetensors'), flat, '--out', path.join(dir, 'f.npy')], /--out must name a \.safetensors file, got '.*f\.npy'/);
    // pirl's warnings read as its other messages; a model file that is not there is named.
    const preview = spawnSync(process.execPath, [cli, 'preview', flat, '--out', path.join(dir, 'p.png'), '--size', '24'], { encoding: 'utf8' });
    expect(preview.status).toBe(0);
    expect(preview.stderr).toMatch(/^pirl: skipping unreadable image .*00-not-an-image\.png/m);
    expect(preview.stderr).not.toContain('(node:');
    // Too few images to hold out a fifth: said, naming --test.
    const few = path.join(dir, 'few');
    for (const c of ['light', 'dark']) fs.cpSync(path.join(data, c, '0.png'), path.join(few, c, '0.png'));
    usage(['eval', path.join(out, 'model.safetensors'), '--data', few], /has 2 image\(s\): too few to hold out a fifth for kNN; give --test data/);
    // Unlabeled data is refused before a split of it is announced.
    const unlabeled = spawnSync(process.execPath, [cli, 'eval', path.join(out, 'model.safetensors'), '--data', flat], { encoding: 'utf8' });
    expect(unlabeled.status).toBe(2);
    expect(unlabeled.stderr).toContain(`pirl: --data ${flat} must be labeled data (class subfolders or fashion-mnist), got unlabeled data`);
    expect(unlabeled.stderr).not.toContain('held-out fifth');
    const unlabeledTest = spawnSync(process.execPath, [cli, 'eval', path.join(out, 'model.safetensors'), '--data', data, '--test', flat], { encoding: 'utf8' });
    expect(unlabeledTest.status).toBe(2);
    expect(unlabeledTest.stderr).toContain(`pirl: --test ${flat} must be labeled data (class subfolders or fashion-mnist), got unlabeled data`);
    expect(unlabeledTest.stderr).not.toContain('features'); // said before --data's pass
    const noModel = spawnSync(process.execPath, [cli, 'eval', path.join(dir, 'nowhere.safetensors')], { encoding: 'utf8' });
    expect(noModel.stderr).toContain(`pirl: ${path.join(dir, 'nowhere.safetensors')}: no such file`);
    // Flags the run will not use are said (a script may share them), and it trains.
    const idle = spawnSync(process.execPath, [cli, 'train', data, '--out', path.join(dir, 'idle'), ...small, '--epochs', '1', '--warmup', '2', '--z', 'frozen', '--sync-batch-norm', '--exclude-positive', '--knn-every', '2'], { encoding: 'utf8' });
    expect(idle.status).toBe(0);
    const { metadata: idleRun } = await readSafetensors(path.join(dir, 'idle', 'checkpoint.safetensors'));
    expect(JSON.parse(idleRun['pirl-checkpoint']).config.loss).toMatchObject({ excludePositive: true, sharedNegatives: false });
    expect(idle.stderr).toContain('pirl: warning: --sync-batch-norm does nothing in a single process');
    expect(idle.stderr).toContain("pirl: warning: --z sets NCE's normaliser: --mode infonce does not use it");
    expect(idle.stderr).toContain('pirl: warning: --knn-every 2 scores the epochs that are multiples of 2: a run of 1 epoch(s) has none (--knn-every 1 scores its last)');
    expect(idle.stderr).toContain("pirl: warning: the lr's warm-up of 2 epoch(s) (warmupEpochs) spans the whole run of 1");
    // A resume is told the same (it was not: the run lengthened to 2 epochs scored none).
    const idleAgain = spawnSync(process.execPath, [cli, 'train', data, '--out', path.join(dir, 'idle'), ...small, '--warmup', '2', '--z', 'frozen', '--exclude-positive', '--resume', '--epochs', '2', '--knn-every', '5'], { encoding: 'utf8' });
    expect(idleAgain.status).toBe(0);
    expect(idleAgain.stderr).toContain('pirl: warning: --knn-every 5 scores the epochs that are multiples of 5: a run of 2 epoch(s) has none (--knn-every 2 scores its last)');
    // A batch the data cannot fill (the default's 128 of 20 images) names --batch, before --out is made.
    const unmade = path.join(dir, 'never-made');
    usage(['train', data, '--out', unmade], /--batch must be at most 20 \(the data set's 20 samples: dropLast drops incomplete batches, so a larger batch leaves none\), got 128 \(the default\)/);
    expect(fs.existsSync(unmade)).toBe(false);
    usage(['train', data, '--out', out, '--resume', '--negatives', '32'], /--resume continues the run its checkpoint describes; --negatives \(the run's: \d+\) cannot change it/);
    usage(['train', data, '--out', out, '--resume', '--width', '0.5', '--preset', 'paper'], /--resume continues the run its checkpoint describes; --width \(the run's: 0\.125\), --preset \(the run's: small\) cannot change it/);
    usage(['train', data, '--shared-negatives', '--exclude-positive'], /--exclude-positive must be false with config\.loss\.sharedNegatives/);
    usage(['train', data, '--seed', '-1'], /--seed must be an integer in \[0, \d+\], got '-1'/);
    usage(['train', data, '--out', path.join(dir, 'no-run'), '--resume'], /--resume: .*no-run does not exist: there is no run there to continue \(without --resume a run starts\)/);
    fs.mkdirSync(path.join(dir, 'no-run'));
    usage(['train', data, '--out', path.join(dir, 'no-run'), '--resume'], /--resume: .*no-run holds no checkpoint to continue from .*; --force starts the run again/);
    const list = path.join(dir, 'list.json');
    fs.writeFileSync(list, '[1,2,3]');
    usage(['train', data, '--config', list], /--config .*list\.json must be an object, got \[1, 2, 3\]/);
    const fifo = path.join(dir, 'config.fifo');
    spawnSync('mkfifo', [fifo]);
    usage(['train', data, '--config', fifo], /--config .*config\.fifo: not a regular file \(a FIFO, a device or a folder\)/); // its open waited for a writer
    fs.writeFileSync(list, '{"loss": {"tua": 0.1}}');
    // The file, then the option's path in it.
    usage(['train', data, '--config', list], /--config .*list\.json: loss\.tua is not an option; loss takes lambda, tau/);
    fs.writeFileSync(list, '{"lr": 0.1}');
    usage(['train', data, '--config', list], /--config .*list\.json: lr is not an option; .*list\.json takes recipe, .* \(did you mean baseLr\?\)$/m);
    fs.writeFileSync(list, '{"wdith": 0.5}'); // a model option given at the top: the path meant
    usage(['train', data, '--config', list], /--config .*list\.json: wdith is not an option; .*list\.json takes recipe, .* \(did you mean model\.width\?\)$/m);
    usage(['train', data, '--config', path.join(dir, 'none.json')], /^pirl: --config .*none\.json: no such file$/m);
    usage(['eval', path.join(out, 'model.safetensors'), '--k', '0'], /--k must be an integer in \[1, 1000000\], got '0'/);
    usage(['eval', path.join(out, 'model.safetensors'), '--test', data], /^pirl: --test .* must be a data set of --data fashion-mnist's classes.* \(no --data was given: fashion-mnist's train set votes; --data names the set that votes\)$/m);
    usage(['embed', path.join(out, 'model.safetensors'), data, '--out', path.join(dir, 'e.safetensors'), '--layer', 'res4'], /--layer must be 'res5' or 'f', got 'res4'/);
    usage(['train', data, '--layout', 'tree'], /--layout must be one of 'auto', 'flat', 'classes', got 'tree'/);
    usage(['train', data, '--stem', 'imagenet', '--batch', '8', '--out', path.join(dir, 'stem')], /--stem imagenet: config.sampler.patchSize must be at least 17 px for model.stem 'imagenet' \(a larger preset, e.g. 'paper', or the 'small' stem\), got 9/);
    // Before the data is read (a large folder decodes for minutes first): said of a folder that is not there.
    usage(['train', path.join(dir, 'no-such-folder'), '--preset', 'small', '--stem', 'imagenet'], /^pirl: --stem imagenet with --preset small: config.sampler.patchSize must be at least 17/m);
    usage(['train', 'fashion-mnist', '--layout', 'flat'], /--layout says how a folder is read: fashion-mnist is not a folder/);
    usage(['eval', path.join(out, 'model.safetensors'), '--data', data, '--layout', 'flat'], /^pirl: --layout flat reads a folder as unlabeled images: eval scores labeled data \(a folder of class folders\); give --layout classes, or leave it out$/m);
    usage(['train', 'fashion-mnist', '--size', '64'], /--size is the side a folder's images are stored at: fashion-mnist is read as 28×28 arrays/);
    usage(['train', data, '--out', path.join(dir, 'graphs'), '--cuda-graphs'], /--cuda-graphs: not on the CPU \(CUDA graphs need device 'cuda'\)/);
    usage(['train', data, '--nproc', '2', '--cuda-graphs'], /--cuda-graphs: not in a data-parallel run \(--nproc\)/);
    usage(['train', data, '--cuda-graphs', '--no-cuda-graphs'], /--cuda-graphs and --no-cuda-graphs: give one of them/);
    usage(['train', data, '--max-pixels', '0'], /--max-pixels must be an integer in \[1, 9007199254740991\], got '0'/);
    usage(['eval', path.join(out, 'model.safetensors'), '--max-pixels', '100'], /--max-pixels limits the images decoded: fashion-mnist is read as 28×28 arrays/);
    // A mistake that every rank of --nproc finds alike is said once (it was, with the usage, once per rank).
    const ranks = spawnSync(process.execPath, [cli, 'train', data, '--nproc', '2', '--batch', '60000', '--out', path.join(dir, 'ranks')], { encoding: 'utf8' });
    expect({ status: ranks.status, said: ranks.stderr.match(/--batch must be at most/g)?.length, usage: ranks.stderr.match(/^\(pirl train --help: its options\)$/gm)?.length })
      .toEqual({ status: 2, said: 1, usage: 1 });
    // More ranks than cores is warned of before they start (each a process of its own libtorch, contending). Run where
    // that is a few processes only.
    const cores = os.availableParallelism();
    if (cores <= 8) {
      const crowded = spawnSync(process.execPath, [cli, 'train', data, '--nproc', String(cores + 1), '--batch', '60000', '--out', path.join(dir, 'ranks')], { encoding: 'utf8' });
      expect(crowded.stderr.split('\n').filter((l) => l.includes('--nproc'))).toEqual([
        `pirl: warning: --nproc ${cores + 1} on ${cores} cores: each rank gets less than a core and they contend (one rank per core at most trains fastest)`]);
    }
    const mixed = path.join(dir, 'mixed');
    fs.mkdirSync(path.join(mixed, 'thumbs'), { recursive: true });
    for (const f of ['0.png', path.join('thumbs', '0.png')]) fs.copyFileSync(path.join(data, 'light', '0.png'), path.join(mixed, f));
    usage(['preview', mixed, '--out', path.join(dir, 'p.png')], /mixed holds 1 image\(s\) of its own and 1 subfolder\(s\) of images \(thumbs\): say which is the data set with --layout 'flat' .* or 'classes'/);
    const ownOnly = spawnSync(process.execPath, [cli, 'preview', mixed, '--out', path.join(dir, 'p.png'), '--layout', 'flat', '--count', '1'], { encoding: 'utf8' });
    expect([ownOnly.status, ownOnly.stderr]).toEqual([0, expect.stringContaining('1 image(s) in its subfolders are left out (thumbs; layout \'flat\' read the folder\'s own images: recursive (--recursive) reads those below too)')]);
    const below = spawnSync(process.execPath, [cli, 'preview', mixed, '--out', path.join(dir, 'p.png'), '--layout', 'flat', '--recursive', '--count', '2'], { encoding: 'utf8' });
    expect([below.status, below.stderr]).toEqual([0, '']);
    usage(['train', 'fashion-mnist', '--recursive'], /--recursive says how a folder is read: fashion-mnist is not a folder/);
    // --out is checked before the work: the format a verb writes, a folder that cannot be made.
    usage(['preview', mixed, '--out', path.join(dir, 'p.jpg'), '--layout', 'flat'], /--out must name a \.png file, got '.*p\.jpg'\n\(pirl preview --help: its options\)\n$/);
    usage(['embed', path.join(out, 'model.safetensors'), data, '--out', '/proc/pirl-x/f.safetensors'], /--out \/proc\/pirl-x: cannot create \/proc\/pirl-x/);
    fs.mkdirSync(path.join(dir, 'folder.safetensors'));
    usage(['embed', path.join(out, 'model.safetensors'), data, '--out', path.join(dir, 'folder.safetensors')], /--out must name a file, got the folder '.*'/);
    usage(['export', path.join(out, 'model.safetensors'), '--out', path.join(data, 'light', '0.png', 't.safetensors')], /--out .*0\.png: .*is a file, not a folder|ENOTDIR/);
    expect(fs.existsSync(path.join(dir, 'p.png'))).toBe(true);
    // A checkpoint's model (a run killed before it wrote model.safetensors): the run's last checkpoint holds the model's weights.
    run(['export', path.join(out, 'checkpoint.safetensors'), '--out', path.join(dir, 't-checkpoint.safetensors')]);
    run(['export', path.join(out, 'model.safetensors'), '--out', path.join(dir, 't-model.safetensors')]);
    const [fromCheckpoint, fromModel] = await Promise.all(['t-checkpoint', 't-model'].map((f) => readSafetensors(path.join(dir, `${f}.safetensors`))));
    expect(fromCheckpoint.metadata).toEqual(fromModel.metadata); // imageSize too
    expect([...fromCheckpoint.tensors.keys()]).toEqual([...fromModel.tensors.keys()]);
    for (const [name, t] of fromModel.tensors) expect([name, [...fromCheckpoint.tensors.get(name)!.data()]]).toEqual([name, [...t.data()]]);
    const missing = spawnSync(process.execPath, [cli, 'train', path.join(dir, 'nope')], { encoding: 'utf8' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/no such folder/);
  }, 300_000); // ~40 s of CLI processes on a quiet 2-core machine
});

describe('Ctrl-C, and SIGTERM (a scheduler, torchrun)', () => {
  test('before the first step (the bank from features) a signal quits at once: there is nothing to save', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-int-'));
    const child = spawn(process.execPath, [cli, 'train', 'fashion-mnist', '--out', path.join(dir, 'run'), '--width', '0.125', '--bank-init', 'features'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => void (stderr += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    for (let waited = 0; !stderr.includes('memory bank from features') && waited < 60_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    const sent = Date.now();
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: null, signal: 'SIGINT' }); // as the signal's default: killed by it
    expect(Date.now() - sent).toBeLessThan(5_000);
    expect(fs.existsSync(path.join(dir, 'run', 'checkpoint.safetensors'))).toBe(false);
    // Said, and the run folder's lock freed (it was left for the next run to take over).
    expect(stderr).toContain('pirl: interrupted before training began (data, cache, memory bank): nothing to save');
    expect(fs.existsSync(path.join(dir, 'run', 'run.lock'))).toBe(false);
    // While a decode cache is built, what it has written is kept for the next run, said.
    const images = path.join(dir, 'images'), cache = path.join(dir, 'images.cache');
    fs.mkdirSync(images);
    for (let i = 0; i < 600; i++) await sharp(Buffer.alloc(24 * 24 * 3, i % 251), { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(images, `${i}.png`));
    const building = spawn(process.execPath, [cli, 'train', images, '--out', path.join(dir, 'run2'), '--cache', cache, '--size', '24'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let said = '';
    building.stderr.on('data', (d) => void (said += d));
    const ended = new Promise<{ code: number | null; signal: string | null }>((resolve) => building.on('close', (code, signal) => resolve({ code, signal })));
    for (let waited = 0; !said.includes(`decode cache ${cache}: 0/600`) && waited < 60_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
    building.kill('SIGINT');
    expect(await ended).toEqual({ code: null, signal: 'SIGINT' });
    expect(said).toContain(`nothing to save (the decode cache's build is kept in ${cache}.partial: the next run continues it)`);
    expect([fs.existsSync(`${cache}.partial`), fs.existsSync(`${cache}.lock`), fs.existsSync(cache)]).toEqual([true, false, false]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('pirl eval (any command but train) says it was interrupted, and is killed by the signal at once', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-int-'));
    const model = path.join(dir, 'model.safetensors');
    await (await PirlModel.create({ width: 0.125 })).save(model);
    const child = spawn(process.execPath, [cli, 'eval', model], { stdio: ['ignore', 'ignore', 'pipe'] }); // 70,000 images' features first
    let stderr = '';
    child.stderr.on('data', (d) => void (stderr += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    for (let waited = 0; !/features [1-9]\d*\//.test(stderr) && waited < 60_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    const sent = Date.now();
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: null, signal: 'SIGINT' });
    expect(Date.now() - sent).toBeLessThan(5_000);
    expect(stderr).toMatch(/\npirl: interrupted\n$/); // it exited 130 saying nothing
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('a rank waiting for the others says so, and a signal then quits at once (it waited for the rendezvous, up to its timeout)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-int-'));
    const port = String(20000 + (process.pid % 20000));
    const env = { ...process.env, RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port }; // rank 1 never comes
    const child = spawn(process.execPath, [cli, 'train', 'fashion-mnist', '--out', path.join(dir, 'run'), '--width', '0.125', '--bank-init', 'random'],
      { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    child.stderr.on('data', (d) => void (stderr += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    for (let waited = 0; !stderr.includes('is waiting for the other ranks') && waited < 60_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect(stderr).toContain(`pirl: warning: rank 0 of 2 is waiting for the other ranks at 127.0.0.1:${port} (up to 1800000 ms: PIRL_DIST_TIMEOUT_MS)`);
    const sent = Date.now();
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: null, signal: 'SIGINT' });
    expect(Date.now() - sent).toBeLessThan(5_000);
    expect(fs.existsSync(path.join(dir, 'run', 'run.lock'))).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('a signal during an epoch end\'s kNN pass ends the pass at its batch and writes the checkpoint at once', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-int-'));
    const out = path.join(dir, 'run');
    // One step an epoch, then a kNN pass over 70,000 images (~100 s here): it went on to its end before.
    const child = spawn(process.execPath, [cli, 'train', 'fashion-mnist', '--out', out, '--width', '0.125', '--batch', '8', '--negatives', '16',
      '--epoch-length', '1', '--knn-every', '1', '--bank-init', 'random'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => void (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    for (let waited = 0; !/kNN features [1-9]\d*\/70000/.test(stderr) && waited < 120_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    const sent = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(Date.now() - sent).toBeLessThan(15_000);
    const { metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(metadata['pirl-checkpoint']).position).toEqual({ epoch: 1, stepInEpoch: 0, step: 1 });
    const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'epoch').map((l) => l.knn)).toEqual([undefined]); // no score of a pass cut short
    fs.rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  // pirl train on fashion-mnist into a fresh folder, its output collected as it comes; batches() counts the steps it logged.
  const startTrain = (more: string[]) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-cli-int-'));
    const out = path.join(dir, 'run');
    const child = spawn(process.execPath, [cli, 'train', 'fashion-mnist', '--out', out, '--width', '0.125', '--negatives', '16', '--bank-init', 'random', ...more],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = { stdout: '', stderr: '' };
    child.stdout.on('data', (d) => void (output.stdout += d));
    child.stderr.on('data', (d) => void (output.stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code))); // 'close': its output read to the end
    const batches = () => (fs.existsSync(path.join(out, 'metrics.jsonl')) ? fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"batch"')).length : 0);
    const stepsLogged = async (n: number, every: number) => {
      for (let waited = 0; batches() < n && waited < 120_000; waited += every) await new Promise((r) => setTimeout(r, every));
    };
    return { dir, out, child, output, exited, batches, stepsLogged };
  };

  test.each([['SIGINT', 130, 'interrupted'], ['SIGTERM', 143, 'terminated \\(SIGTERM\\)'], ['SIGHUP', 129, 'its terminal closed \\(SIGHUP\\)']] as const)('%s stops training after the step in progress, writes the checkpoint there and exits %i', async (signal, exitCode, said) => {
    const { dir, out, child, output, exited, batches, stepsLogged } = startTrain(['--batch', '8', '--epoch-length', '1000', '--checkpoint-every', '100000']);
    await stepsLogged(2, 100);
    child.kill(signal);
    expect(await exited).toBe(exitCode);
    // The command to continue, said in full (this one with --resume), and it is accepted.
    expect(output.stdout).toContain(`interrupted: continue with pirl train fashion-mnist --out ${out} --width 0.125 --negatives 16 --bank-init random --batch 8 --epoch-length 1000 --checkpoint-every 100000 --resume`);
    expect(output.stderr).toMatch(new RegExp(`pirl: ${said}: stopping after this step and writing .*checkpoint\\.safetensors`));
    const { metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    const step = JSON.parse(metadata['pirl-checkpoint']).position.step;
    expect(step).toBeGreaterThanOrEqual(2);
    expect(step).toBeLessThan(1000);
    expect(batches()).toBe(step); // the checkpoint is at the last step reported
    fs.rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  test('a signal in the run\'s last step ends a finished run: exit 0, no resume to say', async () => {
    const { dir, out, child, output, exited, stepsLogged } = startTrain(['--batch', '256', '--epochs', '1', '--epoch-length', '2']);
    await stepsLogged(1, 10);
    child.kill('SIGINT'); // in step 2 of 2, or (a loaded machine) while its batch is still being made
    const code = await exited;
    expect(output.stderr).toMatch(/pirl: interrupted: stopping after this step and writing/);
    const { metadata } = await readSafetensors(path.join(out, 'checkpoint.safetensors'));
    if (JSON.parse(metadata['pirl-checkpoint']).position.step === 2) {
      expect(code).toBe(0); // it exited 130 and named a resume with nothing left
      expect(output.stdout).toMatch(/trained 2 step\(s\) in .*, to step 2 of 2/);
      expect(output.stdout).not.toContain('interrupted: continue with');
    } else {
      expect(code).toBe(130); // stopped before step 2 began: unfinished, resumable
      expect(output.stdout).toContain('interrupted: continue with');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 180_000);
});
