// Small fixtures shared by the jest suites.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

const made: string[] = [];
/** A fresh temporary folder, removed after the tests of the file that made it (they left gigabytes of checkpoints). */
export function tmpDir(prefix = 'pirl-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** w×h pixels of a deterministic gradient with `channels` channels. */
export function gradient(w: number, h: number, channels = 3): Buffer {
  const px = Buffer.alloc(w * h * channels);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < channels; c++) px[i * channels + c] = (i * (c + 3)) % 256;
  return px;
}

/** A sharp pipeline over that gradient, to encode as any image format. */
export const raw = (w: number, h: number, channels: 1 | 3 | 4 = 3) => sharp(gradient(w, h, channels), { raw: { width: w, height: h, channels } });

/**
 * A libtorch folder (the layout of pytorch.org's zip and of pip's torch) holding only what
 * scripts/libtorch.js reads: its CMake config with `version`, empty libraries (CUDA's when `cuda` is
 * given) and, unless `buildVersion` is false, the zip's build-version file. Returns its prefix.
 */
export function fakeLibtorch(version: string, cuda: string | null, options: { prefix?: string; buildVersion?: boolean } = {}): string {
  const prefix = options.prefix ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-libtorch-'));
  fs.mkdirSync(path.join(prefix, 'share/cmake/Torch'), { recursive: true });
  fs.mkdirSync(path.join(prefix, 'lib'), { recursive: true });
  // The line upstream's TorchConfig.cmake computes its prefix with: three levels above its folder.
  fs.writeFileSync(path.join(prefix, 'share/cmake/Torch/TorchConfig.cmake'),
    'get_filename_component(TORCH_INSTALL_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../../" ABSOLUTE)\n');
  fs.writeFileSync(path.join(prefix, 'share/cmake/Torch/TorchConfigVersion.cmake'), `set(PACKAGE_VERSION "${version}")\n`);
  if (options.buildVersion !== false) {
    fs.writeFileSync(path.join(prefix, 'build-version'), `${version}${cuda ? `+cu${cuda.replace('.', '')}` : '+cpu'}\n`);
  }
  for (const lib of ['libtorch_cpu.so', ...(cuda ? ['libtorch_cuda.so'] : [])]) fs.writeFileSync(path.join(prefix, 'lib', lib), '');
  return prefix;
}

/** b rows of d random values, each row scaled to unit length. */
export function unitRows(b: number, d: number): Float32Array {
  const out = new Float32Array(b * d).map(() => Math.random() - 0.5);
  for (let i = 0; i < b; i++) {
    const row = out.subarray(i * d, (i + 1) * d);
    const n = Math.hypot(...row);
    row.forEach((v, j) => (row[j] = v / n));
  }
  return out;
}

/** A fenced block of markdown: `open` and `close` are its fences' 0-based lines; `lines` lie between them, without
 * the indentation of a block in a list item (indented as its item is). */
export interface FencedBlock {
  lang: string;
  open: number;
  close: number;
  lines: string[];
}

export function fencedBlocks(markdown: string, file = 'README.md'): FencedBlock[] {
  const lines = markdown.split('\n');
  const blocks: FencedBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^( *)```(\S*)$/.exec(lines[i]);
    if (!fence) continue;
    const [, indent, lang] = fence;
    const close = lines.indexOf(`${indent}\`\`\``, i + 1);
    if (close < 0) throw new Error(`${file}:${i + 1}: its \`\`\`${lang} block has no closing fence at its indentation`);
    blocks.push({ lang, open: i, close, lines: lines.slice(i + 1, close).map((l) => l.slice(indent.length)) });
    i = close;
  }
  return blocks;
}
