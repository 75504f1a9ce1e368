// pirl trunks against torchvision in Python, both ways, on the same input (Debian python3-torch).
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { PirlModel, Tensor, readSafetensors } from '../lib';

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(__dirname, 'python', 'torchvision_crosscheck.py');
const hasTorchvision = (() => {
  try {
    execFileSync(PYTHON, ['-c', 'import torch, torchvision'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
// CI installs python3-torchvision; a developer machine without it is told, not silently green.
const suite = hasTorchvision || process.env.CI ? describe : describe.skip;
if (!hasTorchvision) console.warn('crosscheck: python3-torch/python3-torchvision missing; install them to run these tests');

function python(args: string[]): Record<string, number> {
  return JSON.parse(execFileSync(PYTHON, [SCRIPT, ...args], { encoding: 'utf8' }).trim().split('\n').pop()!);
}

suite.each(['resnet18', 'resnet50'] as const)('%s and torchvision', (arch) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-xcheck-'));
  const input = new Float32Array(3 * 3 * 64 * 64).map((_, i) => Math.sin(i * 0.37) * 1.5);
  const inputFile = path.join(dir, 'input.f32');
  fs.writeFileSync(inputFile, input);
  const images = Tensor.from(input, [3, 3, 64, 64]);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each(['imagenet', 'small'] as const)("exportTrunk (%s stem) loads into torchvision (strict; the small stem as README 'Transfer' says) and gives the same pooled features", async (stem) => {
    const model = await PirlModel.create({ arch, stem });
    // A training-mode pass moves the BatchNorm statistics away from their initial values.
    await model.train().forward(images, Tensor.from(new Float32Array(3 * 9 * 3 * 64 * 64).fill(0.3), [3, 9, 3, 64, 64]));
    const ours = await model.eval().embed(images);
    const trunkFile = path.join(dir, 'trunk.safetensors');
    await model.exportTrunk(trunkFile);
    const featuresFile = path.join(dir, 'ours.f32');
    fs.writeFileSync(featuresFile, ours.data() as Float32Array);
    const r = python(['check-export', arch, trunkFile, inputFile, featuresFile]);
    expect(r.scale).toBeGreaterThan(0.1); // features of a meaningful scale, as below
    expect(r.maxAbsDiff).toBeLessThanOrEqual(1e-4);
  });

  test('torchvision weights → importTrunk give the same pooled features', async () => {
    const weights = path.join(dir, 'torchvision.safetensors');
    const featuresFile = path.join(dir, 'theirs.f32');
    python(['make-torchvision', arch, '3', weights, inputFile, featuresFile]);
    const model = await PirlModel.create({ arch, stem: 'imagenet' });
    await model.importTrunk(weights);
    const ours = (await model.eval().embed(images)).data() as Float32Array;
    const theirs = new Float32Array(fs.readFileSync(featuresFile).buffer.slice(0));
    expect(ours.length).toBe(theirs.length);
    let maxDiff = 0;
    ours.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - theirs[i]))));
    expect(Math.max(...Array.from(theirs, Math.abs))).toBeGreaterThan(0.1); // features of a meaningful scale
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    // the BatchNorm buffers came across too
    const { tensors } = await readSafetensors(weights);
    const mean = (await model.stateDict('trunk')).get('bn1.running_mean')!.data();
    expect([...mean]).toEqual([...tensors.get('bn1.running_mean')!.data()]);
  });
});
